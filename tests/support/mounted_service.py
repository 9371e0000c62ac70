"""One in-process uvicorn server for a whole test session, with a fresh registry service
app mounted per test at ``/m<N>``: the registry suite runs every protocol test against a
real ``registry serve`` app over real HTTP without paying a process start per test.

The mounts are a plain ASGI dispatcher: ``/m3/v1/resolve`` goes to app 3 as
``/v1/resolve``. :meth:`MountedServer.serve_balanced` mounts several apps (several
registry servers over one store) behind one key that hands each request to the next app
in turn, as a Kubernetes Service in front of several `registry serve` pods does. The
client sees an ordinary base URL with a path (``http://127.0.0.1:PORT/m3``), which
:class:`registry.http_client.HttpRegistry` supports.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.local import LocalRegistry
from registry.service.app import create_app
from registry.service.tokens import Token
from registry.settings import RegistrySettings
from server.supervisor import free_port


class Mounts:
    """ASGI: route ``/<key>/...`` to the app mounted at ``key``; 404 elsewhere."""

    def __init__(self) -> None:
        self.apps: dict[str, ASGIApp] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def mount(self, app: ASGIApp) -> str:
        with self._lock:
            key = f"m{next(self._ids)}"
            self.apps[key] = app
        return key

    def unmount(self, key: str) -> None:
        with self._lock:
            self.apps.pop(key, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        key, _, rest = str(scope["path"]).lstrip("/").partition("/")
        app = self.apps.get(key)
        if app is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"no such mount"})
            return
        path = "/" + rest
        await app(dict(scope, path=path, raw_path=path.encode()), receive, send)


class RoundRobin:
    """ASGI: each request (HTTP or lifespan alike) to the next of ``apps`` in turn."""

    def __init__(self, apps: list[ASGIApp]) -> None:
        self.apps = apps
        self._turn = itertools.count()
        self.served = [0] * len(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        index = next(self._turn) % len(self.apps)
        self.served[index] += 1
        await self.apps[index](scope, receive, send)


class MountedServer:
    """The session's server: :meth:`serve` one registry as a service for one test."""

    def __init__(self, mounts: Mounts, port: int) -> None:
        self.mounts, self.port = mounts, port

    @contextmanager
    def serve(
        self, local: LocalRegistry, settings: RegistrySettings, tokens: tuple[Token, ...] = ()
    ) -> Iterator[str]:
        """The base URL of a service over ``local`` until the block ends."""
        key = self.mounts.mount(create_app(local, settings, tokens))
        try:
            yield f"http://127.0.0.1:{self.port}/{key}"
        finally:
            self.mounts.unmount(key)

    @contextmanager
    def serve_balanced(
        self, servers: list[LocalRegistry], settings: RegistrySettings
    ) -> Iterator[tuple[str, RoundRobin]]:
        """One base URL whose requests go to a service over each of ``servers`` in turn
        (each its own app and its own open store, as separate processes would have)."""
        balancer = RoundRobin([create_app(local, settings, ()) for local in servers])
        key = self.mounts.mount(balancer)
        try:
            yield f"http://127.0.0.1:{self.port}/{key}", balancer
        finally:
            self.mounts.unmount(key)


@contextmanager
def mounted_server() -> Iterator[MountedServer]:
    """A uvicorn server in a thread on a free loopback port, until the block ends."""
    mounts = Mounts()
    port = free_port()
    config = uvicorn.Config(
        mounts, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="registry-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process registry service did not start")
        time.sleep(0.01)
    try:
        yield MountedServer(mounts, port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


__all__ = ["MountedServer", "Mounts", "RoundRobin", "mounted_server"]
