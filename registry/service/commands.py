"""``registry serve`` and ``registry hash-token``: the service's verbs of the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from registry.service.tokens import TokenFileError, hash_token


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--registry",
    "location",
    metavar="DIR",
    default=None,
    help="Registry directory to serve (default: $REGISTRY_URL, else the per-user data dir).",
)
@click.option(
    "--store",
    metavar="postgresql://USER@HOST:PORT/DB",
    default=None,
    help="Serve the registry in this PostgreSQL database (made by `registry init --store`); "
    "many servers may share it.",
)
@click.option(
    "--blobs",
    metavar="s3://BUCKET/PREFIX",
    default=None,
    help="With --store: where its blobs are; must be what `registry init` recorded "
    "(default: that).",
)
@click.option(
    "--tokens",
    "tokens_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help='JSON list of {"name", "scope": "read"|"write", "sha256"} (see hash-token); '
    "without it, $REGISTRY_TOKEN is the one write token; with neither, loopback only.",
)
def serve_cmd(
    host: str,
    port: int,
    location: str | None,
    store: str | None,
    blobs: str | None,
    tokens_file: Path | None,
) -> None:
    """Serve a registry (a directory, or PostgreSQL + blobs) over HTTP: every verb, for
    remote CLIs and gateways.

    Clients set REGISTRY_URL=http://HOST:PORT (and REGISTRY_TOKEN) and use every
    `registry`, `gateway`, `deploy` and `quantize` verb as on the directory.

    Example: registry serve --registry ./reg --port 8700 --tokens tokens.json

    Example: registry serve --store postgresql://loraport@db/loraport --blobs s3://models/reg
    """
    from registry.service.run import ServeError, serve  # the server's stack, only here

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(location, host=host, port=port, tokens_file=tokens_file, store=store, blobs=blobs)
    except (ServeError, TokenFileError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command("hash-token")
@click.argument("secret")
def hash_token_cmd(secret: str) -> None:
    """Print the sha256 a tokens file stores for SECRET (the secret itself is never stored).

    Example: registry hash-token "$(openssl rand -hex 24)"
    """
    click.echo(hash_token(secret))
