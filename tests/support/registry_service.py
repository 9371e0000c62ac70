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
    directory: Path, log: Path, *, token: str | None = None, port: int | None = None
) -> Iterator[Process]:
    """`registry serve --registry DIR` on a free loopback port until the block ends;
    with ``token``, that one write token (``REGISTRY_TOKEN``) is required."""
    port = port if port is not None else free_port()
    cmd = [REGISTRY, "serve", "--registry", str(directory), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_URL", "REGISTRY_TOKEN")}
    if token is not None:
        env["REGISTRY_TOKEN"] = token
    with serving(cmd, port, log, "/ready", env, timeout_s=60) as proc:
        yield proc
