"""Several ``registry serve`` processes behind one location, for a client that fails over.

``REGISTRY_URL=http://reg-a:8700,http://reg-b:8700`` (or ``--registry`` the same) names
servers of one registry (they share its records and blobs: one directory or one
PostgreSQL + bucket). :class:`Servers` keeps one pooled HTTP client per server and the
one now in use; a call goes to it, and to the next in turn when it cannot be reached.
Which failures move on is decided by :func:`may_move_on`: a connection that was never
made (nothing was sent) moves on for every call; one that broke after the request went
out moves on only for a read (``GET``), since a write may have been applied. A server
that answers, even with an error, is never passed over: its answer stands.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx

from registry.errors import UnsupportedLocationError


def split_urls(location: str) -> list[str]:
    """The servers a location names (comma-separated), without trailing slashes."""
    urls = [part.strip().rstrip("/") for part in location.split(",")]
    if not all(urls):
        raise UnsupportedLocationError(
            f"registry location {location!r} has an empty entry: give one URL, or several "
            "separated by commas (http://reg-a:8700,http://reg-b:8700)"
        )
    for url in urls:
        if not url.lower().startswith(("http://", "https://")):
            raise UnsupportedLocationError(
                f"{url!r} in {location!r} is not an http(s):// URL: every server of a "
                "comma-separated registry location must be one"
            )
    return urls


def may_move_on(method: str, exc: httpx.TransportError) -> bool:
    """Whether a call that failed so may be sent to the next server."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True  # nothing reached the server
    return method.upper() == "GET"


class Servers:
    """The servers of one registry location and the one in use. Thread-safe."""

    def __init__(self, location: str, **client_args: Any) -> None:
        self.urls = split_urls(location)
        self.clients = [httpx.Client(base_url=url, **client_args) for url in self.urls]
        self._current = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The server in use."""
        return self.urls[self._current]

    def attempts(self) -> Iterator[tuple[int, httpx.Client]]:
        """(index, client) in the order to try them: the one in use, then the rest."""
        start = self._current
        for step in range(len(self.clients)):
            index = (start + step) % len(self.clients)
            yield index, self.clients[index]

    def answered(self, index: int) -> None:
        """Server ``index`` answered: later calls go to it first."""
        with self._lock:
            self._current = index

    def close(self) -> None:
        for client in self.clients:
            client.close()
