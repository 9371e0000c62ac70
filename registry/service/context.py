"""What every route of the registry service shares: the one error envelope, the wire
response, and :class:`Service` (who is calling, reading a body or an upload within the
limits, scratch directories of hard links for a write that names uploaded files)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from registry import errors as e
from registry.digest import Digest
from registry.dirscan import ScanError, check_relpath
from registry.local import LocalRegistry
from registry.prepare import FileRef
from registry.service.inputs import (
    MIN_BYTES_PER_S,
    crawling,
    json_value,
)
from registry.service.metrics import ServiceMetrics
from registry.service.tokens import Scope, Token, authenticate, may
from registry.service.uploads import served_blobs
from registry.settings import RegistrySettings
from registry.wire import WireError, dumps, from_wire

log = logging.getLogger("loraport.registry.service")
#: What a client is told of a bug in the service (the traceback goes to the log).
UNEXPECTED = e.ServiceFailedError("the registry service failed unexpectedly; its log says why")

#: The longest a watch (long poll) may wait, and how often it looks.
MAX_WATCH_S = 30.0
WATCH_POLL_S = 0.05
UPLOAD_CHUNK = 4 * 2**20
#: The most files one write may name (each becomes a link in a scratch directory).
MAX_FILES = 10_000


class WireResponse(JSONResponse):
    """A result as :func:`registry.wire.dumps` writes it (non-finite numbers kept)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_response(exc: e.RegistryError, status: int | None = None) -> JSONResponse:
    """The one envelope every error goes out in (with its class's status unless told)."""
    body: dict[str, Any] = {
        "code": exc.code,
        "message": str(exc),
        "type": type(exc).__name__,
    }
    reason = getattr(exc, "reason", None)
    if reason is not None:
        body["reason"] = str(reason)
    headers = {"Retry-After": "1"} if exc.http_status == 503 else None
    return JSONResponse({"error": body}, status_code=status or exc.http_status, headers=headers)


class Service:
    """What the routes share: the registry, its settings, the callers it knows."""

    def __init__(
        self, reg: LocalRegistry, settings: RegistrySettings, tokens: tuple[Token, ...]
    ) -> None:
        self.reg = reg
        self.settings = settings
        self.tokens = tokens
        self.incoming = reg.root / "incoming"
        self.blobs = served_blobs(reg, settings)
        self.metrics = ServiceMetrics()

    def caller(self, request: Request, needed: Scope) -> str | None:
        """The token's name (who writes are recorded as); raise 401/403. None: an open
        service, where the client's own ``who`` stands."""
        if not self.tokens:
            return None
        token = authenticate(request.headers.get("authorization"), self.tokens)
        if token is None:
            raise e.UnauthorizedError(
                "this registry needs a token: set REGISTRY_TOKEN (ask its operator for one)"
            )
        if not may(token, needed):
            raise e.ForbiddenError(
                f"token {token.name!r} has {token.scope} scope; this needs {needed}"
            )
        return token.name

    async def body(self, request: Request) -> dict[str, Any]:
        """The JSON object of a request, read within the size and time limits."""
        limit = self.settings.serve_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise e.RequestTooLargeError(
                f"request body of {declared} bytes is over the limit of {limit} "
                "(REGISTRY_SERVE_MAX_BODY_BYTES)"
            )
        data = bytearray()
        # A JSON body is small: all of it must come within the read timeout, so a client
        # that trickles a byte now and then is dropped too, not only a silent one.
        async for chunk in self.stream(request, deadline=self.read_deadline()):
            data += chunk
            if len(data) > limit:
                raise e.RequestTooLargeError(
                    f"request body over the limit of {limit} bytes (REGISTRY_SERVE_MAX_BODY_BYTES)"
                )
        value = json_value(bytes(data))
        if not isinstance(value, dict):
            raise e.BadRequestError("the request body must be a JSON object")
        return value

    def read_deadline(self) -> float:
        """When a small request (a JSON body) must have arrived in full."""
        return time.monotonic() + self.settings.serve_read_timeout_s

    async def stream(self, request: Request, deadline: float | None = None) -> AsyncIterator[bytes]:
        """The request body, piece by piece; a client silent for the read timeout, one
        crawling (:func:`crawling`), or one not done by ``deadline`` is dropped, and one
        that hangs up leaves nothing behind."""
        pieces = request.stream().__aiter__()
        timeout = self.settings.serve_read_timeout_s
        began, received = time.monotonic(), 0
        try:
            while True:
                wait = timeout if deadline is None else min(timeout, deadline - time.monotonic())
                try:  # asyncio.timeout, not wait_for: no task per piece (pieces are ~64 KiB)
                    async with asyncio.timeout(max(wait, 0.0)):
                        chunk = await pieces.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise e.BadRequestError(
                        f"the request body did not arrive in time ({timeout:g} s, "
                        "REGISTRY_SERVE_READ_TIMEOUT_S); nothing was stored"
                    ) from None
                except ClientDisconnect:
                    raise e.BadRequestError(
                        "the client hung up before its request body was complete; nothing "
                        "was stored"
                    ) from None
                received += len(chunk)
                if crawling(received, time.monotonic() - began, timeout):
                    raise e.BadRequestError(
                        f"the request body arrives slower than {MIN_BYTES_PER_S} bytes/s; "
                        "nothing was stored"
                    )
                yield chunk
        finally:
            self.metrics.bytes_in.inc(received)

    @contextlib.contextmanager
    def scratch(self) -> Any:
        """A directory for one write's hard links, on the blobs' filesystem; always removed."""
        self.incoming.mkdir(exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="write-", dir=self.incoming))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def place(self, files: tuple[FileRef, ...], into: Path) -> dict[Path, str]:
        """Lay uploaded blobs out as ``into/<path>`` (:meth:`ServedBlobs.lay_out`); the
        files known to be their blobs, for :meth:`ServedBlobs.linked`."""
        links: dict[Path, str] = {}
        if not files:
            raise e.BadRequestError("a write needs at least one file")
        for ref in files:
            try:
                check_relpath(ref.path)
            except ScanError as exc:
                raise e.BadRequestError(f"file {ref.path!r}: {exc}") from None
            out = into.joinpath(*ref.path.split("/"))
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError:  # "a" and "a/b": a file where a directory must go
                raise e.BadRequestError(
                    f"file {ref.path!r} cannot sit beside the other files of this write"
                ) from None
            if self.blobs.lay_out(ref, out):
                links[out] = Digest(ref.digest).hex
        return links


def files_of(raw: Any) -> tuple[FileRef, ...]:
    if isinstance(raw, list) and len(raw) > MAX_FILES:
        raise e.BadRequestError(f"a write names at most {MAX_FILES} files, not {len(raw)}")
    try:
        files: tuple[FileRef, ...] = from_wire(tuple[FileRef, ...], raw, "files")
    except (WireError, ValueError) as exc:
        raise e.BadRequestError(str(exc)) from None
    if len({f.path for f in files}) != len(files):
        raise e.BadRequestError("a file is named twice")
    return files


def field(body: dict[str, Any], name: str, tp: Any, default: Any = ...) -> Any:
    if name not in body:
        if default is ...:
            raise e.BadRequestError(f"the request needs {name!r}")
        return default
    try:
        return from_wire(tp, body[name], name)
    except (WireError, ValueError) as exc:
        raise e.BadRequestError(str(exc)) from None
