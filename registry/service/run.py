"""Starting ``registry serve``: open the registry, decide who may call, bind, run uvicorn."""

from __future__ import annotations

import fcntl
import logging
import shutil
import socket
from pathlib import Path
from typing import IO

import uvicorn

from registry.local import LocalRegistry
from registry.location import open_local, scheme
from registry.server_location import open_store
from registry.service.app import create_app
from registry.service.connections import MAX_HEAD_BYTES, guarded
from registry.service.tokens import Token, check_bind, load_tokens, single_token
from registry.service.uploads import served_blobs
from registry.settings import RegistrySettings

log = logging.getLogger("loraport.registry.service")


class ServeError(Exception):
    """``registry serve`` cannot start; the message says what to change."""


def callers(tokens_file: Path | None, settings: RegistrySettings) -> tuple[Token, ...]:
    """Who may call: the tokens file, else ``REGISTRY_TOKEN`` (write), else nobody (open)."""
    if tokens_file is not None:
        return load_tokens(tokens_file)
    if settings.token is not None:
        return single_token(settings.token.get_secret_value())
    return ()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ServeError naming the fix (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(256)
    except OSError as exc:
        raise ServeError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port, "
            "or stop whatever holds it"
        ) from None
    return sock


def announce(root: Path, leftovers: tuple[Path, ...]) -> IO[bytes] | None:
    """Mark this server present on ``root`` for as long as the returned file stays open
    (a shared ``flock`` on ``<root>/serve.lock``, which the kernel drops when the process
    dies, SIGKILL included); first, if no other server is present, remove ``leftovers``:
    the scratch directories and upload temp files of a server that was killed. Another
    live server's are never touched. None for a registry this process cannot write."""
    try:
        lock = open(root / "serve.lock", "ab")  # noqa: SIM115 (held for the server's life)
    except OSError:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # another server is serving this directory: its scratch is live
    else:
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
    fcntl.flock(lock, fcntl.LOCK_SH)
    return lock


def open_served(
    location: str | None, store: str | None, blobs: str | None, settings: RegistrySettings
) -> LocalRegistry:
    """The registry ``serve`` is asked for: a directory (``--registry``), or a database
    (``--store``, or a ``postgresql://`` ``--registry``) and its blobs."""
    if location is not None and store is not None:
        raise ServeError("give --registry DIR or --store URL, not both")
    if store is None and location is not None and scheme(location) == "postgresql":
        store = location
    if store is not None:
        return open_store(store, blobs, settings=settings, create=False)
    if blobs is not None:
        raise ServeError(
            "--blobs goes with --store (a registry directory records its own blobs at "
            "`registry init --blobs`)"
        )
    return open_local(location, settings=settings, create=False)


def serve(
    location: str | None,
    *,
    host: str,
    port: int,
    tokens_file: Path | None,
    settings: RegistrySettings | None = None,
    store: str | None = None,
    blobs: str | None = None,
) -> None:
    """Serve the registry at ``location`` (or in the database ``store``) until interrupted."""
    settings = settings if settings is not None else RegistrySettings()
    if location is not None and location.lower().startswith(("http://", "https://")):
        raise ServeError(f"serve a registry directory, not another service ({location})")
    tokens = callers(tokens_file, settings)
    check_bind(host, tokens)
    reg = open_served(location, store, blobs, settings)
    reg.root.mkdir(parents=True, exist_ok=True)
    presence = announce(reg.root, (reg.root / "incoming", *served_blobs(reg, settings).leftovers()))
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    if tokens:
        log.warning(
            "registry %s on http://%s:%d (%d token(s))", reg.location, host, actual, len(tokens)
        )
    else:
        log.warning(
            "registry %s on http://%s:%d with no tokens: open to anyone on this machine, "
            "so bound to loopback only (give --tokens FILE or REGISTRY_TOKEN to serve wider)",
            reg.location,
            host,
            actual,
        )
    print(f"registry serving {reg.location} on http://{host}:{actual}", flush=True)
    app = create_app(reg, settings, tokens)
    config = uvicorn.Config(
        app,
        http=guarded(settings.serve_read_timeout_s),
        log_level="warning",
        access_log=False,  # never a request line in the log: a query may carry anything
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        reg.close()
        if presence is not None:
            presence.close()
