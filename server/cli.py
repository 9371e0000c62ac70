"""`gateway`: run the OpenAI-compatible gateway in front of vLLM."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

import click

from server.auth import hash_key
from server.settings import GatewaySettings, unknown_variables


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """loraport gateway: many LoRA adapters behind one OpenAI-compatible API."""


@cli.command()
@click.option(
    "--registry",
    "registry_",
    metavar="LOCATION",
    help="Registry directory (default: $REGISTRY_URL, else the per-user one).",
)
@click.option("--host", default=None, help="Interface to listen on [127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [8000].")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    metavar="URL",
    help="A running vLLM OpenAI server; repeat for several. None: launch one locally.",
)
@click.option(
    "--backends-dns",
    default=None,
    metavar="URL",
    help="One URL whose host resolves to every backend (a headless Service); "
    "re-resolved every GATEWAY_BACKENDS_DNS_REFRESH_S. Exclusive with --backend.",
)
@click.option(
    "--base",
    default=None,
    metavar="REF",
    help="Base model to serve (default: the registry's only base model).",
)
@click.option(
    "--structured-backend",
    type=click.Choice(["xgrammar", "guidance", "outlines"]),
    default=None,
    help="vLLM grammar backend for the local server [guidance].",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    registry_: str | None,
    host: str | None,
    port: int | None,
    backends: tuple[str, ...],
    backends_dns: str | None,
    base: str | None,
    structured_backend: str | None,
    log_level: str,
) -> None:
    """Serve the registry's adapters through vLLM on an OpenAI-compatible API.

    With no --backend, launches and supervises a local vLLM server for the base model
    (restarted with back-off if it dies). Settings come from GATEWAY_* variables
    (e.g. GATEWAY_MAX_IN_FLIGHT=32, GATEWAY_LOCAL__DTYPE=float32); flags win.

    Example:

        gateway serve --registry ./reg --port 8000

        curl localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
          -d '{"model": "support-v1", "messages": [{"role": "user", "content": "Hi"}]}'
    """
    import uvicorn

    from server.app import create_app
    from server.http_protocol import OneWriteProtocol

    if registry_ is not None and not registry_.strip():
        # An empty $GATEWAY_REGISTRY / $REGISTRY_URL counts as unset; an empty flag is
        # almost always an unset shell variable, so it is refused (docs/registry.md).
        raise click.BadParameter(
            "is empty: give a registry directory, or leave the flag out for "
            "$REGISTRY_URL / the per-user default",
            param_hint="--registry",
        )
    overrides: dict[str, Any] = {
        "registry": registry_, "host": host, "port": port, "base": base,
        "backends": backends or None, "backends_dns": backends_dns,
        "structured_backend": structured_backend,
    }  # fmt: skip
    for problem in unknown_variables():
        click.echo(f"warning: {problem}", err=True)
    settings = _settings({k: v for k, v in overrides.items() if v is not None})
    base_config = _check_registry(settings)
    if base_config is None:
        click.echo(
            "warning: the registry does not answer; the gateway starts and waits for it "
            "(/ready answers 503 until it does)",
            err=True,
        )
    elif not settings.remote:
        _check_engine(base_config)
    sock = _bind(settings)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,  # server/access.py writes each request's line with its x-request-id
        timeout_graceful_shutdown=10,
        http=OneWriteProtocol,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except SystemExit as e:
        if e.code == _UVICORN_STARTUP_FAILURE:  # the registry's "not found" code: not ours
            click.echo("Error: the gateway failed to start; the log above says why", err=True)
            sys.exit(1)
        raise


@cli.command("hash-key")
@click.argument("secret")
def hash_key_cmd(secret: str) -> None:
    """Print the sha256 that settings store for an API key.

    Example:

        gateway hash-key sk-team-a-secret
        export GATEWAY_API_KEYS='[{"name": "a", "sha256": "<hex>", "adapters": ["extract"]}]'
    """
    click.echo(hash_key(secret))


def _settings(overrides: dict[str, Any]) -> GatewaySettings:
    """The settings, or a readable refusal naming each bad variable (no traceback)."""
    from pydantic import ValidationError

    try:
        return GatewaySettings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = "__".join(str(p) for p in err["loc"]).upper()
            name = "GATEWAY_" + loc if loc else "settings"
            lines.append(f"  {name}: {err['msg']} (got {err.get('input')!r})")
        raise click.ClickException(
            "invalid gateway settings (see docs/gateway.md):\n" + "\n".join(lines)
        ) from None


def _check_registry(settings: GatewaySettings) -> dict[str, Any] | None:
    """Fail fast, with the registry's message and exit code, before any server starts;
    None when the registry does not answer (the gateway then waits for it)."""
    from server.resolver import RegistryUnusable, check_registry

    try:
        return check_registry(settings.registry, settings.base)
    except RegistryUnusable as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)


#: uvicorn's exit status when the app's startup fails; `gateway serve` exits 1 instead.
_UVICORN_STARTUP_FAILURE = 3


def _bind(settings: GatewaySettings) -> socket.socket:
    """The gateway's socket, bound before vLLM or the app starts (server/listen.py)."""
    from server.listen import CannotListenError, bind

    try:
        return bind(settings.host, settings.port)
    except CannotListenError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)


def _check_engine(base_config: dict[str, Any]) -> None:
    """Refuse a base the local vLLM cannot run here (server/engine_support.py)."""
    from server import engine_support as es

    why = es.refusal(base_config, es.cpu_flags(), es.vllm_is_cpu_build())
    if why is not None:
        click.echo(f"Error: {why}", err=True)
        sys.exit(es.EXIT_ENGINE_UNSUPPORTED)


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))
