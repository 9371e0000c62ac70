"""A real `registry serve` process over a registry directory, for tests and bench/."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.supervisor import free_port
from tests.support.launch import Process, serving

REGISTRY = str(Path(sys.executable).with_name("registry"))


@contextmanager
def registry_service(
    directory: Path | str,
    log: Path,
    *,
    token: str | None = None,
    port: int | None = None,
    tokens_file: Path | None = None,
    env: dict[str, str] | None = None,
    host: str | None = None,
) -> Iterator[Process]:
    """`registry serve --registry DIR` (or a ``postgresql://`` URL) on a free loopback
    port until the block ends;
    with ``token``, that one write token (``REGISTRY_TOKEN``) is required; with
    ``tokens_file``, the tokens it lists; ``env`` adds ``REGISTRY_*`` settings; ``host``
    binds another address (the test still calls it on loopback)."""
    port = port if port is not None else free_port()
    cmd = [REGISTRY, "serve", "--registry", str(directory), "--port", str(port)]
    if host is not None:
        cmd += ["--host", host]
    if tokens_file is not None:
        cmd += ["--tokens", str(tokens_file)]
    full_env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_URL", "REGISTRY_TOKEN")}
    if token is not None:
        full_env["REGISTRY_TOKEN"] = token
    full_env.update(env or {})
    with serving(cmd, port, log, "/ready", full_env, timeout_s=60) as proc:
        yield proc
