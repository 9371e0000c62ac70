"""Backends named by one DNS name (a Kubernetes headless Service resolves to every pod).

`GATEWAY_BACKENDS_DNS=http://vllm-headless:8000`: the host is resolved (getaddrinfo,
every A and AAAA record) and each address is one backend `http://ADDRESS:8000`, labelled
by its address. Every `backends_dns_refresh_s` it is resolved again: `diff` (pure) says
which addresses joined and which left. A failed resolution changes nothing (a DNS blip
must not empty the gateway).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("loraport.gateway")

Resolve = Callable[[str, int], Awaitable[list[str]]]
"""The addresses a host resolves to, in the resolver's order (a test may give its own)."""


@dataclass(frozen=True)
class Change:
    joined: tuple[str, ...]
    left: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.joined or self.left)


def diff(old: Collection[str], new: Collection[str]) -> Change:
    """Addresses that joined (in `new`'s order) and that left (in `old`'s order)."""
    return Change(
        joined=tuple(a for a in dict.fromkeys(new) if a not in old),
        left=tuple(a for a in dict.fromkeys(old) if a not in new),
    )


@dataclass(frozen=True)
class Name:
    """The parsed `backends_dns` URL."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Name:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"backends_dns must be an http(s) URL with a host, not {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def url_of(self, address: str) -> str:
        """The backend URL for one resolved address (IPv6 in brackets)."""
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        return f"{self.scheme}://{host}:{self.port}{self.path}"


async def getaddrinfo(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA), each once, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve(name: Name, resolver: Resolve) -> list[str] | None:
    """The addresses now, or None when the name did not resolve (then nothing changes)."""
    try:
        return await resolver(name.host, name.port)
    except OSError as e:  # socket.gaierror: no such name (yet), or DNS down
        log.warning("resolving backends %s failed: %s; keeping the current ones", name.host, e)
        return None


async def follow(
    name: Name,
    resolver: Resolve,
    current: Callable[[], Collection[str]],
    apply: Callable[[Change], None],
    interval_s: float,
) -> None:
    """Resolve `name` every `interval_s` forever and `apply` each change to `current`."""
    while True:
        await asyncio.sleep(interval_s)
        addresses = await resolve(name, resolver)
        if addresses is not None:
            change = diff(current(), addresses)
            if change:
                apply(change)
