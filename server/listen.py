"""The gateway's listening socket, bound before anything else starts.

`gateway serve` binds its address first and hands the bound socket to uvicorn. A port
that is taken is then a refusal within a second that names the port and what to do
(exit :data:`EXIT_CANNOT_LISTEN`), not uvicorn's exit 3 (the registry's "not found"
code) after the application, and a local vLLM with it, has started; and no other
process can take the port between the check and the serve.
"""

from __future__ import annotations

import errno
import socket

#: Exit status of `gateway serve` when it cannot listen on --host/--port.
EXIT_CANNOT_LISTEN = 41


class CannotListenError(Exception):
    """The gateway's address cannot be bound: in use, privileged, or not this machine's."""

    exit_code = EXIT_CANNOT_LISTEN


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (as uvicorn would bind it), not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotListenError(_why(host, port, exc)) from None
    return sock


def _why(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: port {port} is already in use (another gateway or "
            f"server?); stop what holds it (`ss -ltnp 'sport = :{port}'` shows it) or pick "
            "another port with --port / GATEWAY_PORT"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: port {port} needs privileges this process lacks; "
            "pick a port above 1023 with --port / GATEWAY_PORT"
        )
    return (
        f"cannot listen on {where}: {exc.strerror or exc}; give --host an address of this "
        "machine (127.0.0.1, 0.0.0.0, ::) / GATEWAY_HOST"
    )
