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
``registry gc`` collects after their grace period. Every error is one JSON envelope
``{"error": {"code", "message", "type"}}`` with the status of its class
(:mod:`registry.errors`); the client raises the same class again.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry import errors as e
from registry.digest import Digest, ManifestEntry
from registry.local import LocalRegistry
from registry.prepare import FileRef, PushRequest
from registry.records import PairInput, Resolved
from registry.refs import check_name
from registry.service.changes import ChangeFeed
from registry.service.context import (
    MAX_WATCH_S,
    UNEXPECTED,
    UPLOAD_CHUNK,
    WATCH_POLL_S,
    Service,
    WireResponse,
    error_response,
    field,
    files_of,
)
from registry.service.inputs import (
    MAX_TOKEN,
    seconds,
    whole,
)
from registry.service.measured import MeasuredApp
from registry.service.ops import MAX_PAGE, Op, decode_args, table
from registry.service.tokens import Token
from registry.settings import RegistrySettings
from registry.transfer import entries as manifest_entries
from registry.wire import to_wire


def create_app(
    reg: LocalRegistry, settings: RegistrySettings, tokens: tuple[Token, ...]
) -> MeasuredApp:
    """The service over ``reg`` (open, writable unless the registry is read-only)."""
    svc = Service(reg, settings, tokens)
    # One reader of the change token for every watcher (registry/service/changes.py).
    feed = ChangeFeed(partial(run_in_threadpool, reg.change_token), WATCH_POLL_S)
    blobs = svc.blobs
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
        return error_response(UNEXPECTED)

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
        token = await run_in_threadpool(reg.change_token)
        if since is not None and token == since and timeout > 0:
            waited = await feed.wait(since, timeout, request.is_disconnected)
            if waited is None:
                return Response(status_code=499)
            token = waited
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
            await run_in_threadpool(blobs.check_room, int(declared))
        writer = await run_in_threadpool(blobs.writer)
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
    async def download(request: Request, digest: str, via: str | None = None) -> Response:
        """A stored blob's bytes, or a redirect to where to fetch them (a presigned URL
        when they are in S3; ``?via=server`` streams them through here); the client
        checks them against the digest it asked for."""
        svc.caller(request, "read")
        if via not in (None, "server"):
            raise e.BadRequestError(f"via={via!r}: the only value is 'server'")
        hexdigest = Digest(digest).hex
        response, sent = await run_in_threadpool(blobs.download, hexdigest, via is not None)
        svc.metrics.bytes_out.inc(sent)
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
        gc = bool(field(body, "gc", bool, False))
        if gc:
            svc.caller(request, "write")
        ref = field(body, "ref", str | None, None)
        grace = field(body, "gc_grace_s", float, 3600.0)
        report = await run_in_threadpool(lambda: reg.verify(ref, gc=gc, gc_grace_s=grace))
        return result(report)

    @app.post("/v1/push_request")
    async def push(request: Request) -> JSONResponse:
        who = svc.caller(request, "write")
        body = await svc.body(request)
        req = field(body, "request", PushRequest)
        files = files_of(body.get("files"))
        dataset_file = field(body, "dataset_file", FileRef | None, None)
        who = who or field(body, "who", str | None, None)

        def work() -> Any:
            reg.store.check_writable()
            with svc.scratch() as scratch:
                links = svc.place(files, scratch / "adapter")
                data = None
                if dataset_file is not None:
                    links.update(svc.place((dataset_file,), scratch / "dataset"))
                    data = scratch / "dataset" / dataset_file.path
                with blobs.linked(links):
                    return reg.push_request(req, scratch / "adapter", data, who=who)

        return result(await run_in_threadpool(work))

    @app.post("/v1/add_base")
    async def add_base(request: Request) -> JSONResponse:
        who = svc.caller(request, "write")
        body = await svc.body(request)
        files = files_of(body.get("files"))
        name = field(body, "name", str)
        license_ = field(body, "license", str | None, None)
        who = who or field(body, "who", str | None, None)

        check_name(name)  # before it names a directory here

        def work() -> Any:
            reg.store.check_writable()
            with svc.scratch() as scratch, blobs.linked(svc.place(files, scratch / name)):
                return reg.add_base(scratch / name, name=name, license=license_, who=who)

        return result(await run_in_threadpool(work))

    @app.post("/v1/add_dataset")
    async def add_dataset(request: Request) -> JSONResponse:
        who = svc.caller(request, "write")
        body = await svc.body(request)
        file = field(body, "file", FileRef)
        name = field(body, "name", str)
        license_ = field(body, "license", str | None, None)
        who = who or field(body, "who", str | None, None)

        def work() -> Any:
            reg.store.check_writable()
            with svc.scratch() as scratch, blobs.linked(svc.place((file,), scratch)):
                path = scratch / file.path
                return reg.add_dataset(path, name=name, license=license_, who=who)

        return result(await run_in_threadpool(work))

    @app.post("/v1/add_variant")
    async def add_variant(request: Request) -> JSONResponse:
        who = svc.caller(request, "write")
        body = await svc.body(request)
        files = files_of(body.get("files"))
        name = field(body, "name", str)
        args = {
            "parent": field(body, "parent", str),
            "quantization": field(body, "quantization", dict[str, Any]),
            "fidelity": field(body, "fidelity", dict[str, Any]),
            "passed": field(body, "passed", bool),
            "forced": field(body, "forced", bool),
            "pairs": field(body, "pairs", tuple[PairInput, ...]),
        }
        who = who or field(body, "who", str | None, None)

        check_name(name)  # before it names a directory here

        def work() -> Any:
            reg.check_name_free(name)
            with svc.scratch() as scratch, blobs.linked(svc.place(files, scratch / name)):
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
