"""``registry serve``: the registry over HTTP, every verb, the same rules.

:func:`create_app` builds the FastAPI app over an open :class:`LocalRegistry`. The
protocol's plain-valued methods are served from one table (:mod:`.ops`); files travel as
blobs: ``POST /v1/blobs`` streams an upload to a temp file while hashing it, and it
becomes a blob only if its bytes hash to the digest the client names (as an OCI registry
takes blobs before the manifest that names them). A write that names files
(``/v1/push_request``, ``/v1/add_base``, ...) is then done by the same code as on a
directory, on a scratch directory of hard links to those blobs: every byte is read and
validated again here, nothing the client claims is trusted. An upload cut off leaves
nothing (its temp file goes at once; one a killed server left, in ``blobs/uploads/``, when
the server starts again); a refused push leaves unreferenced blobs, invisible, which
``registry verify --gc`` collects after their grace period. Every error is one JSON envelope
``{"error": {"code", "message", "type"}}`` with the status of its class
(:mod:`registry.errors`); the client raises the same class again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Send
from starlette.types import Scope as AsgiScope

from registry import errors as e
from registry.digest import Digest, ManifestEntry
from registry.dirscan import ScanError, check_relpath
from registry.local import LocalRegistry
from registry.prepare import FileRef, PushRequest
from registry.records import PairInput, Resolved
from registry.refs import check_name
from registry.service.inputs import (
    MAX_TOKEN,
    MIN_BYTES_PER_S,
    crawling,
    json_value,
    seconds,
    whole,
)
from registry.service.metrics import ServiceMetrics
from registry.service.ops import MAX_PAGE, Op, decode_args, table
from registry.service.tokens import Scope, Token, authenticate, may
from registry.settings import RegistrySettings
from registry.transfer import entries as manifest_entries
from registry.wire import WireError, dumps, from_wire, to_wire

log = logging.getLogger("loraport.registry.service")
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

    def check_room(self, size: int) -> None:
        """Refuse at once an upload the registry's disk cannot hold (not after filling it)."""
        self.reg.blobs.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.reg.blobs.root).free
        if size > free:
            raise e.StorageFullError(
                f"an upload of {size} bytes does not fit in the {free} bytes free on the "
                "registry's storage; nothing was stored"
            )

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
        """Lay uploaded blobs out as ``into/<path>`` (hard links; copies where links fail);
        the links made, for :meth:`FileBlobStore.linked`."""
        links: dict[Path, str] = {}
        if not files:
            raise e.BadRequestError("a write needs at least one file")
        for ref in files:
            try:
                check_relpath(ref.path)
            except ScanError as exc:
                raise e.BadRequestError(f"file {ref.path!r}: {exc}") from None
            blob = self.reg.blobs.path(Digest(ref.digest).hex)
            try:
                size = blob.stat().st_size
            except FileNotFoundError:
                raise e.BadRequestError(
                    f"{ref.path} ({ref.digest}) was not uploaded: POST /v1/blobs first"
                ) from None
            if size != ref.size:
                raise e.BadRequestError(f"{ref.path} is {size} bytes, not {ref.size}")
            out = into.joinpath(*ref.path.split("/"))
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError:  # "a" and "a/b": a file where a directory must go
                raise e.BadRequestError(
                    f"file {ref.path!r} cannot sit beside the other files of this write"
                ) from None
            try:
                os.link(blob, out)
                links[out] = Digest(ref.digest).hex
            except OSError:
                shutil.copyfile(blob, out)
        return links


def _files(raw: Any) -> tuple[FileRef, ...]:
    if isinstance(raw, list) and len(raw) > MAX_FILES:
        raise e.BadRequestError(f"a write names at most {MAX_FILES} files, not {len(raw)}")
    try:
        files: tuple[FileRef, ...] = from_wire(tuple[FileRef, ...], raw, "files")
    except (WireError, ValueError) as exc:
        raise e.BadRequestError(str(exc)) from None
    if len({f.path for f in files}) != len(files):
        raise e.BadRequestError("a file is named twice")
    return files


def _field(body: dict[str, Any], name: str, tp: Any, default: Any = ...) -> Any:
    if name not in body:
        if default is ...:
            raise e.BadRequestError(f"the request needs {name!r}")
        return default
    try:
        return from_wire(tp, body[name], name)
    except (WireError, ValueError) as exc:
        raise e.BadRequestError(str(exc)) from None


def create_app(
    reg: LocalRegistry, settings: RegistrySettings, tokens: tuple[Token, ...]
) -> MeasuredApp:
    """The service over ``reg`` (open, writable unless the registry is read-only)."""
    svc = Service(reg, settings, tokens)
    app = FastAPI(title="loraport registry", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc
    ops = table()

    @app.exception_handler(e.RegistryError)
    async def _registry_error(request: Request, exc: e.RegistryError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own refusals (no such route: 404, wrong method: 405) in the one
        envelope, with their status."""
        said = f"{request.method} {request.url.path[:200]}: {exc.detail}"
        return error_response(e.BadRequestError(said), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(e.BadRequestError(f"{where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug: the client gets the envelope, the log the traceback (MeasuredApp)."""
        return error_response(_UNEXPECTED)

    def result(value: Any, token: int | None = None) -> JSONResponse:
        headers = {"ETag": f'"{token}"'} if token is not None else None
        return WireResponse({"result": to_wire(value)}, headers=headers)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        try:
            token = await run_in_threadpool(reg.change_token)
        except Exception as exc:  # the store does not answer: not ready, say why
            return JSONResponse({"status": "not ready", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready", "change_token": token})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(svc.metrics.render(), media_type=svc.metrics.content_type)

    @app.get("/v1/info")
    async def info(request: Request) -> JSONResponse:
        svc.caller(request, "read")
        return result(
            {
                "read_only": reg.read_only,
                "clock": reg.clock(),
                "max_file_bytes": settings.max_file_bytes,
            }
        )

    @app.get("/v1/changes")
    async def changes(request: Request) -> Any:
        """The change token; with ``since``, wait up to ``timeout`` s (at most
        :data:`MAX_WATCH_S`) for another one."""
        svc.caller(request, "read")
        query = request.query_params
        raw_since = query.get("since")
        since = (
            None
            if raw_since is None
            else whole(raw_since, "since", low=0, high=MAX_TOKEN, default=0)
        )
        timeout = seconds(query.get("timeout"), "timeout", high=MAX_WATCH_S)
        deadline = time.monotonic() + timeout
        while True:
            token = await run_in_threadpool(reg.change_token)
            if since is None or token != since or time.monotonic() >= deadline:
                break
            if await request.is_disconnected():
                return Response(status_code=499)
            await asyncio.sleep(WATCH_POLL_S)
        if request.headers.get("if-none-match") == f'"{token}"':
            return Response(status_code=304, headers={"ETag": f'"{token}"'})
        return result(token, token)

    @app.post("/v1/blobs")
    async def upload(request: Request, digest: str | None = None) -> JSONResponse:
        """Stream a file in; it is stored only if it hashes to ``digest`` (when given)."""
        svc.caller(request, "write")
        reg.store.check_writable()
        expected = Digest(digest).hex if digest is not None else None
        limit = settings.max_file_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise e.RequestTooLargeError(
                f"an upload of {declared} bytes is over the limit of {limit} "
                "(REGISTRY_MAX_FILE_BYTES)"
            )
        if declared is not None and declared.isdigit():
            await run_in_threadpool(svc.check_room, int(declared))
        writer = await run_in_threadpool(reg.blobs.writer, reg.blobs.uploads)
        # One piece is hashed and written on a worker thread while the next arrives.
        writing: asyncio.Future[None] | None = None
        try:
            buffer, received = bytearray(), 0
            async for chunk in svc.stream(request):
                buffer += chunk
                received += len(chunk)
                if received > limit:
                    raise e.RequestTooLargeError(f"an upload is over the limit of {limit} bytes")
                if len(buffer) >= UPLOAD_CHUNK:
                    if writing is not None:
                        await writing
                    full, buffer = buffer, bytearray()
                    writing = asyncio.ensure_future(run_in_threadpool(writer.write, full))
            if writing is not None:
                await writing
            if buffer:
                await run_in_threadpool(writer.write, buffer)
            if declared is not None and declared.isdigit() and writer.size != int(declared):
                raise e.BadRequestError(
                    f"the upload ended after {writer.size} of {declared} bytes; nothing was "
                    "stored (send it again)"
                )
            try:
                hexdigest = await run_in_threadpool(writer.commit, expected)
            except e.IntegrityError as exc:  # the client's bytes, not the registry, are bad
                raise e.BadRequestError(str(exc)) from None
        except BaseException:
            if writing is not None:  # its thread still holds the file: let it finish first
                await asyncio.wait([writing])
            writer.abort()
            raise
        return result({"digest": Digest.from_hex(hexdigest), "size": writer.size})

    @app.get("/v1/blobs/{digest}")
    async def download(request: Request, digest: str) -> Response:
        """A stored blob's bytes (the client checks them against the digest it asked for)."""
        svc.caller(request, "read")
        path = reg.blobs.path(Digest(digest).hex)
        if not path.is_file():
            raise e.RefNotFoundError(f"no blob {digest} in the registry")
        svc.metrics.bytes_out.inc(path.stat().st_size)
        response = FileResponse(path, media_type="application/octet-stream")
        response.chunk_size = UPLOAD_CHUNK  # 64 KiB pieces cost a thread hop each
        return response

    @app.get("/v1/manifest")
    async def manifest(request: Request, ref: str) -> JSONResponse:
        """What ``ref`` resolves to and the files that make it (for a pull)."""
        svc.caller(request, "read")

        def work() -> tuple[Resolved, tuple[ManifestEntry, ...]]:
            target = reg.resolve(ref)
            return target, manifest_entries(reg.deps, target)

        target, found = await run_in_threadpool(work)
        return result({"resolved": target, "entries": found})

    @app.post("/v1/verify")
    async def verify(request: Request) -> JSONResponse:
        svc.caller(request, "read")  # before a byte of the body is read
        body = await svc.body(request)
        gc = bool(_field(body, "gc", bool, False))
        if gc:
            svc.caller(request, "write")
        ref = _field(body, "ref", str | None, None)
        grace = _field(body, "gc_grace_s", float, 3600.0)
        report = await run_in_threadpool(lambda: reg.verify(ref, gc=gc, gc_grace_s=grace))
        return result(report)

    @app.post("/v1/push_request")
    async def push(request: Request) -> JSONResponse:
        who = svc.caller(request, "write")
        body = await svc.body(request)
        req = _field(body, "request", PushRequest)
        files = _files(body.get("files"))
        dataset_file = _field(body, "dataset_file", FileRef | None, None)
        who = who or _field(body, "who", str | None, None)

        def work() -> Any:
            reg.store.check_writable()
            with svc.scratch() as scratch:
                links = svc.place(files, scratch / "adapter")
                data = None
                if dataset_file is not None:
                    links.update(svc.place((dataset_file,), scratch / "dataset"))
                    data = scratch / "dataset" / dataset_file.path
                with reg.blobs.linked(links):
                    return reg.push_request(req, scratch / "adapter", data, who=who)

        return result(await run_in_threadpool(work))

    @app.post("/v1/add_base")
    async def add_base(request: Request) -> JSONResponse:
        who = svc.caller(request, "write")
        body = await svc.body(request)
        files = _files(body.get("files"))
        name = _field(body, "name", str)
        license_ = _field(body, "license", str | None, None)
        who = who or _field(body, "who", str | None, None)

        check_name(name)  # before it names a directory here

        def work() -> Any:
            reg.store.check_writable()
            with svc.scratch() as scratch, reg.blobs.linked(svc.place(files, scratch / name)):
                return reg.add_base(scratch / name, name=name, license=license_, who=who)

        return result(await run_in_threadpool(work))

    @app.post("/v1/add_dataset")
    async def add_dataset(request: Request) -> JSONResponse:
        who = svc.caller(request, "write")
        body = await svc.body(request)
        file = _field(body, "file", FileRef)
        name = _field(body, "name", str)
        license_ = _field(body, "license", str | None, None)
        who = who or _field(body, "who", str | None, None)

        def work() -> Any:
            reg.store.check_writable()
            with svc.scratch() as scratch, reg.blobs.linked(svc.place((file,), scratch)):
                path = scratch / file.path
                return reg.add_dataset(path, name=name, license=license_, who=who)

        return result(await run_in_threadpool(work))

    @app.post("/v1/add_variant")
    async def add_variant(request: Request) -> JSONResponse:
        who = svc.caller(request, "write")
        body = await svc.body(request)
        files = _files(body.get("files"))
        name = _field(body, "name", str)
        args = {
            "parent": _field(body, "parent", str),
            "quantization": _field(body, "quantization", dict[str, Any]),
            "fidelity": _field(body, "fidelity", dict[str, Any]),
            "passed": _field(body, "passed", bool),
            "forced": _field(body, "forced", bool),
            "pairs": _field(body, "pairs", tuple[PairInput, ...]),
        }
        who = who or _field(body, "who", str | None, None)

        check_name(name)  # before it names a directory here

        def work() -> Any:
            reg.check_name_free(name)
            with svc.scratch() as scratch, reg.blobs.linked(svc.place(files, scratch / name)):
                return reg.add_variant(scratch / name, name=name, who=who, **args)

        return result(await run_in_threadpool(work))

    async def call(op: Op, args: dict[str, Any]) -> JSONResponse:
        token = await run_in_threadpool(reg.change_token) if op.scope == "read" else None
        value = await run_in_threadpool(lambda: getattr(reg, op.name)(**args))
        return result(value, token)

    @app.get("/v1/{name}")
    async def read(request: Request, name: str) -> Response:
        op = ops.get(name)
        if op is None or op.scope != "read":
            raise e.BadRequestError(f"no read operation {name!r}")
        svc.caller(request, "read")
        query = dict(request.query_params)
        size = query.pop("page_size", None)
        page_size = whole(size, "page_size", low=1, high=MAX_PAGE, default=MAX_PAGE)
        start = whole(query.pop("page_token", None), "page_token", low=0, high=MAX_TOKEN, default=0)
        args = decode_args(op, query, from_query=True)
        current = await run_in_threadpool(reg.change_token)
        if request.headers.get("if-none-match") == f'"{current}"':
            return Response(status_code=304, headers={"ETag": f'"{current}"'})
        value = await run_in_threadpool(lambda: getattr(reg, op.name)(**args))
        if not op.pages:
            return result(value, current)
        page = value[start : start + page_size]
        following = start + page_size if start + page_size < len(value) else None
        return WireResponse(
            {
                "result": to_wire(page),
                "next_page_token": None if following is None else str(following),
            },
            headers={"ETag": f'"{current}"'},
        )

    @app.post("/v1/{name}")
    async def write(request: Request, name: str) -> JSONResponse:
        op = ops.get(name)
        if op is None or op.scope != "write":
            raise e.BadRequestError(f"no write operation {name!r}")
        who = svc.caller(request, "write")
        args = decode_args(op, await svc.body(request), from_query=False)
        if "who" in op.params and who is not None:
            args["who"] = who  # the token's name, never what the client says
        return await call(op, args)

    return MeasuredApp(app, svc.metrics, frozenset(ops) | _ROUTES)


_UNEXPECTED = e.ServiceFailedError("the registry service failed unexpectedly; its log says why")


class MeasuredApp:
    """Counts and times every request by operation and status (plain ASGI: Starlette's
    BaseHTTPMiddleware would put a queue between every upload chunk and the handler)."""

    def __init__(self, app: FastAPI, metrics: ServiceMetrics, known: frozenset[str]) -> None:
        self.app, self.metrics, self.known = app, metrics, known
        self.state = app.state

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        op = str(scope["path"]).removeprefix("/v1/").split("/")[0]
        op = op if op in self.known else "other"
        status = 499

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception as exc:
            # Starlette answered it with the envelope, then raised it again for the server
            # to log; uvicorn would then close the connection under the answer (the client
            # sees a reset). Log it here, once, without the raw path (a client's text).
            log.error("%s %s: unexpected error", scope["method"], op, exc_info=exc)
            if status == 499:
                status = 500
                await error_response(_UNEXPECTED)(scope, receive, send)
        finally:
            self.metrics.observe(op, str(status), time.perf_counter() - started)


#: Routes with their own handlers (for the metrics' ``op`` label).
_ROUTES = frozenset(
    {
        "info",
        "changes",
        "blobs",
        "manifest",
        "verify",
        "push_request",
        "add_base",
        "add_dataset",
        "add_variant",
    }
)
