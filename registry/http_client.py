"""The :class:`Registry` protocol over HTTP: a client of ``registry serve``.

``registry.open("http://host:8700")`` returns an :class:`HttpRegistry`; every caller
(CLIs, gateway, deploy, quantize) then works as on a directory. Plain-valued methods go
through the service's operation table (:mod:`registry.service.ops`); writes that carry
files upload each one as a blob (streamed, hashed on the way out, compared with the
digest the server computed on the way in), then send the write as values
(:mod:`registry.prepare`). Pulls download blobs and check each against its digest before
one rename makes the destination appear. The blobs' bytes move in
:mod:`registry.http_blobs`. Errors come back as the server's error class
(same exit code, same message); a server that does not answer is
:class:`~registry.errors.RegistryUnavailableError`, which callers may retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from registry import errors as e
from registry.catalog import check_dataset_file, scan_base
from registry.deps import default_who
from registry.digest import ManifestEntry
from registry.dirscan import ScannedFile
from registry.http_blobs import BlobTransfer
from registry.http_servers import Servers, may_move_on
from registry.prepare import FileRef, PushRequest, prepare_push
from registry.progress import byte_progress, want_progress
from registry.protocol import PathLike
from registry.records import (
    AdapterVersion,
    BaseModel,
    Dataset,
    Event,
    GcReport,
    Kind,
    PairInput,
    PairResult,
    PushResult,
    Resolved,
    Rollout,
    VariantInfo,
    VerifyReport,
)
from registry.refs import check_alias, check_name
from registry.rollouts import check_steps
from registry.service.ops import Op, query_value, table
from registry.settings import RegistrySettings
from registry.transfer import materialise
from registry.validation import inspect_adapter_dir
from registry.wire import WireError, dumps, from_wire, to_wire

#: The HTTP statuses a proxy or a restarting server answers: transient.
_TRANSIENT = frozenset({502, 503, 504})


class HttpRegistry:
    """A registry service, open. Thread-safe (one pooled HTTP client)."""

    def __init__(self, url: str, settings: RegistrySettings) -> None:
        self._location = url.rstrip("/")
        self._settings = settings
        headers = {"user-agent": "loraport-registry-client"}
        if settings.token is not None:
            headers["authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._servers = Servers(  # one or several servers of the registry (fail over)
            url,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        # Presigned URLs point at the object store: no registry token goes there.
        self._direct = httpx.Client(timeout=httpx.Timeout(settings.timeout_s))
        self._blobs = BlobTransfer(self._servers, self._direct, self._location, self._json,
                                   self._raise)  # fmt: skip
        self._ops = table()
        self._server_max_file_bytes: int | None = None

    # -- plumbing ---------------------------------------------------------------------
    @property
    def _url(self) -> str:
        """The server in use (for messages)."""
        return self._servers.url

    def _raise(self, response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
            cls = e.error_class(str(error["code"]))
            message = str(error["message"])
        except (ValueError, KeyError, TypeError):
            if response.status_code in _TRANSIENT:
                raise e.RegistryUnavailableError(
                    f"registry {self._url} answered {response.status_code}; try again shortly"
                ) from None
            raise e.NotARegistryError(
                f"{self._url} answered {response.status_code} without a registry error: "
                "is REGISTRY_URL the address of a `registry serve`?"
            ) from None
        if cls is e.InvalidAdapterError:
            raise e.InvalidAdapterError(e.AdapterProblem(error.get("reason")), message)
        raise cls(message)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, to the server in use or, when it cannot be reached, the next
        (:mod:`registry.http_servers`); RegistryUnavailableError when none answers."""
        failed: Exception | None = None
        for index, http in self._servers.attempts():
            try:
                response = http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if not self._may_move_on(method, exc, kwargs):
                    raise self._unreachable(self._servers.urls[index], exc) from None
                failed = exc
                continue
            self._servers.answered(index)
            if response.status_code >= 400:
                self._raise(response)
            return response
        assert failed is not None
        raise self._unreachable(self._location, failed) from None

    @staticmethod
    def _may_move_on(method: str, exc: httpx.TransportError, kwargs: dict[str, Any]) -> bool:
        """A streamed body (an upload) cannot be sent twice once it began; anything
        else follows :func:`may_move_on`."""
        streamed = not isinstance(kwargs.get("content", b""), bytes | str)
        nothing_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        return may_move_on(method, exc) and (nothing_sent or not streamed)

    def _unreachable(self, where: str, exc: Exception) -> e.RegistryUnavailableError:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return e.RegistryUnavailableError(
                f"registry {where} did not answer in time (REGISTRY_TIMEOUT_S="
                f"{self._settings.timeout_s:g}); try again, or raise the limit"
            )
        return e.RegistryUnavailableError(
            f"cannot reach registry {where} ({exc or type(exc).__name__}); is "
            "`registry serve` running there?"
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self._send(method, path, **kwargs).json()
        except ValueError:
            raise e.NotARegistryError(f"{self._url}{path} did not answer JSON") from None

    def _decode(self, tp: Any, value: Any) -> Any:
        try:
            return from_wire(tp, value, "result")
        except (WireError, ValueError) as exc:
            raise e.BadRequestError(
                f"registry {self._url} answered something this client cannot read ({exc}); "
                "are the server and client the same loraport version?"
            ) from None

    def _read(self, op_name: str, /, **args: Any) -> Any:
        op: Op = self._ops[op_name]
        params = {
            k: query_value(op.params[k], to_wire(v)) for k, v in args.items() if v is not None
        }
        if not op.pages:
            return self._decode(
                op.result, self._json("GET", f"/v1/{op_name}", params=params)["result"]
            )
        items: list[Any] = []
        token: str | None = None
        while True:
            page = dict(params, **({"page_token": token} if token else {}))
            body = self._json("GET", f"/v1/{op_name}", params=page)
            items.extend(body["result"])
            token = body.get("next_page_token")
            if not token:
                return self._decode(op.result, items)

    def _write(self, op_name: str, /, **args: Any) -> Any:
        op: Op = self._ops[op_name]
        if "who" in op.params:
            args["who"] = default_who(args.get("who"), self._settings)
        body = {k: to_wire(v) for k, v in args.items()}
        return self._post(f"/v1/{op_name}", op.result, body)

    def _post(self, path: str, tp: Any, body: dict[str, Any]) -> Any:
        # NaN and infinities travel (Python's JSON reads them back), so the registry's own
        # checks refuse them with the same error as on a directory, not httpx with its own.
        content = dumps(to_wire(body))
        headers = {"content-type": "application/json"}
        answer = self._json("POST", path, content=content, headers=headers)
        return self._decode(tp, answer["result"])

    def _upload_all(
        self, files: Sequence[ScannedFile], desc: str, progress: bool | None
    ) -> tuple[FileRef, ...]:
        total = sum(f.size for f in files)
        show = want_progress(progress, total, self._settings.progress_min_bytes)
        with byte_progress(total, desc, show) as on_bytes:
            return tuple(self._blobs.upload(f, f.relpath, on_bytes) for f in files)

    def _max_file_bytes(self) -> int:
        """The largest file worth sending: the server's limit (which it enforces), or this
        client's own if lower; asked once."""
        if self._server_max_file_bytes is None:
            info = self._json("GET", "/v1/info")["result"]
            self._server_max_file_bytes = int(info.get("max_file_bytes") or 0) or None
        return min(self._settings.max_file_bytes, self._server_max_file_bytes or 2**63)

    def _scan_base(self, path: PathLike, what: str) -> list[ScannedFile]:
        """A base or variant directory's canonical files, refused here as a directory
        refuses them (same class, same message naming the caller's path)."""
        return scan_base(Path(path), self._max_file_bytes(), what=what, norms=False).files

    def _dataset_file(self, path: Path) -> ScannedFile:
        return ScannedFile(path.name, path, check_dataset_file(path, self._max_file_bytes()))

    # -- the protocol -----------------------------------------------------------------
    @property
    def location(self) -> str:
        return self._location

    @property
    def read_only(self) -> bool:
        return bool(self._json("GET", "/v1/info")["result"]["read_only"])

    def __enter__(self) -> HttpRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._servers.close()
        self._direct.close()

    def resolve(self, ref: str) -> Resolved:
        return self._read("resolve", ref=ref)  # type: ignore[no-any-return]

    def adapter(self, ref: str) -> AdapterVersion:
        return self._read("adapter", ref=ref)  # type: ignore[no-any-return]

    def base(self, ref: str) -> BaseModel:
        return self._read("base", ref=ref)  # type: ignore[no-any-return]

    def dataset(self, ref: str) -> Dataset:
        return self._read("dataset", ref=ref)  # type: ignore[no-any-return]

    def list_adapters(self, name: str | None = None) -> list[AdapterVersion]:
        return self._read("list_adapters", name=name)  # type: ignore[no-any-return]

    def list_bases(self) -> list[BaseModel]:
        return self._read("list_bases")  # type: ignore[no-any-return]

    def list_datasets(self) -> list[Dataset]:
        return self._read("list_datasets")  # type: ignore[no-any-return]

    def aliases(self, name: str) -> dict[str, int]:
        return self._read("aliases", name=name)  # type: ignore[no-any-return]

    def events(self, name: str | None = None) -> list[Event]:
        return self._read("events", name=name)  # type: ignore[no-any-return]

    def clock(self) -> float:
        """The server's clock (what its timestamps and leases use), off by at most the
        round trip: never this host's."""
        return self._read("clock")  # type: ignore[no-any-return]

    def change_token(self) -> int:
        return self._read("change_token")  # type: ignore[no-any-return]

    def wait_for_change(self, since: int, *, timeout_s: float) -> int:
        body = self._json(
            "GET",
            "/v1/changes",
            params={"since": since, "timeout": max(0.0, timeout_s)},
            timeout=httpx.Timeout(self._settings.timeout_s + max(0.0, timeout_s)),
        )
        return int(body["result"])

    def pull(self, ref: str, dest: PathLike, *, progress: bool | None = False) -> Path:
        answer = self._json("GET", "/v1/manifest", params={"ref": ref})["result"]
        found = self._decode(tuple[ManifestEntry, ...], answer["entries"])
        total = sum(entry.size for entry in found)
        show = want_progress(progress, total, self._settings.progress_min_bytes)
        return materialise(found, self._blobs.download, ref, Path(dest), show=show)

    def verify(
        self, ref: str | None = None, *, gc: bool = False, gc_grace_s: float = 3600.0
    ) -> VerifyReport:
        return self._post(  # type: ignore[no-any-return]
            "/v1/verify", VerifyReport, {"ref": ref, "gc": gc, "gc_grace_s": gc_grace_s}
        )

    def gc(self, *, grace_s: float = 3600.0) -> GcReport:
        return self._write("gc", grace_s=grace_s)  # type: ignore[no-any-return]

    def push_adapter(
        self,
        path: PathLike,
        *,
        name: str | None = None,
        base: str | None = None,
        dataset: str | PathLike | None = None,
        allow_unknown_dataset: bool = False,
        alias: str | None = None,
        schema: dict[str, Any] | PathLike | None = None,
        meta: dict[str, Any] | None = None,
        code: PathLike | None = None,
        git_sha: str | None = None,
        who: str | None = None,
        progress: bool | None = False,
    ) -> PushResult:
        plan = prepare_push(
            path,
            name=name,
            base=base,
            dataset=dataset,
            allow_unknown_dataset=allow_unknown_dataset,
            alias=alias,
            schema=schema,
            meta=meta,
            code=code,
            git_sha=git_sha,
        )
        return self.push_request(
            plan.request, plan.source, plan.dataset_file, who=who, progress=progress
        )

    def push_request(
        self,
        request: PushRequest,
        source: Path,
        dataset_file: Path | None,
        *,
        who: str | None = None,
        progress: bool | None = False,
    ) -> PushResult:
        # Checked here first in the directory's order, by its own code (same refusal, same
        # message); the server checks every byte again.
        check_name(request.name)
        if request.alias is not None:
            check_alias(request.alias)
        self.check_name_free(request.name, "adapter")
        files = inspect_adapter_dir(source, self._max_file_bytes()).files
        data_file = self._dataset_file(dataset_file) if dataset_file is not None else None
        sent = self._upload_all(files, f"push {request.name}", progress)
        data = None
        if data_file is not None:
            data = self._blobs.upload(data_file, data_file.relpath, None)
        body = {
            "request": request,
            "files": sent,
            "dataset_file": data,
            "who": default_who(who, self._settings),
        }
        return self._post("/v1/push_request", PushResult, body)  # type: ignore[no-any-return]

    def add_base(
        self,
        path: PathLike,
        *,
        name: str,
        license: str | None = None,
        who: str | None = None,
        progress: bool | None = False,
    ) -> BaseModel:
        self.check_name_free(name, "base")
        files = self._scan_base(path, "base model")
        sent = self._upload_all(files, f"base {name}", progress)
        body = {
            "files": sent,
            "name": name,
            "license": license,
            "who": default_who(who, self._settings),
        }
        return self._post("/v1/add_base", BaseModel, body)  # type: ignore[no-any-return]

    def add_dataset(
        self, path: PathLike, *, name: str, license: str | None = None, who: str | None = None
    ) -> Dataset:
        self.check_name_free(name, "dataset")
        source = Path(path)
        sent = self._blobs.upload(self._dataset_file(source), source.name, None)
        body = {
            "file": sent,
            "name": name,
            "license": license,
            "who": default_who(who, self._settings),
        }
        return self._post("/v1/add_dataset", Dataset, body)  # type: ignore[no-any-return]

    def set_alias(self, name: str, alias: str, version: int, *, who: str | None = None) -> None:
        self._write("set_alias", name=name, alias=alias, version=version, who=who)

    def remove_alias(self, name: str, alias: str, *, who: str | None = None) -> None:
        self._write("remove_alias", name=name, alias=alias, who=who)

    def remove(self, ref: str, *, who: str | None = None) -> Resolved:
        return self._write("remove", ref=ref, who=who)  # type: ignore[no-any-return]

    def quarantine(self, ref: str, *, reason: str, who: str | None = None) -> AdapterVersion:
        return self._write("quarantine", ref=ref, reason=reason, who=who)  # type: ignore[no-any-return]

    def lift_quarantine(self, ref: str, *, who: str | None = None) -> AdapterVersion:
        return self._write("lift_quarantine", ref=ref, who=who)  # type: ignore[no-any-return]

    def quarantined(self) -> list[AdapterVersion]:
        return self._read("quarantined")  # type: ignore[no-any-return]

    def start_rollout(
        self,
        name: str,
        canary: int,
        *,
        steps: Sequence[float],
        plan: dict[str, Any] | None = None,
        who: str | None = None,
    ) -> Rollout:
        return self._write(  # type: ignore[no-any-return]
            "start_rollout", name=name, canary=canary, steps=check_steps(steps), plan=plan, who=who
        )

    def rollout(self, name: str) -> Rollout | None:
        return self._read("rollout", name=name)  # type: ignore[no-any-return]

    def rollouts(self, name: str) -> list[Rollout]:
        return self._read("rollouts", name=name)  # type: ignore[no-any-return]

    def claim_rollout(
        self, name: str, rollout_id: int, holder: str, *, ttl_s: float, who: str | None = None
    ) -> Rollout:
        return self._write(  # type: ignore[no-any-return]
            "claim_rollout", name=name, rollout_id=rollout_id, holder=holder, ttl_s=ttl_s, who=who
        )

    def release_rollout(self, name: str, rollout_id: int, holder: str) -> None:
        self._write("release_rollout", name=name, rollout_id=rollout_id, holder=holder)

    def advance_rollout(
        self,
        name: str,
        rollout_id: int,
        step: int,
        *,
        holder: str | None = None,
        reason: str = "",
        who: str | None = None,
    ) -> Rollout:
        return self._write(  # type: ignore[no-any-return]
            "advance_rollout",
            name=name,
            rollout_id=rollout_id,
            step=step,
            holder=holder,
            reason=reason,
            who=who,
        )

    def record_analysis(
        self,
        name: str,
        rollout_id: int,
        *,
        step: int,
        verdict: str,
        reason: str,
        figures: dict[str, Any],
        holder: str | None = None,
        who: str | None = None,
    ) -> None:
        self._write(
            "record_analysis",
            name=name,
            rollout_id=rollout_id,
            step=step,
            verdict=verdict,
            reason=reason,
            figures=figures,
            holder=holder,
            who=who,
        )

    def end_rollout(
        self,
        name: str,
        rollout_id: int | None,
        outcome: Literal["promoted", "rolled_back", "aborted"],
        *,
        reason: str,
        holder: str | None = None,
        who: str | None = None,
    ) -> Rollout:
        return self._write(  # type: ignore[no-any-return]
            "end_rollout",
            name=name,
            rollout_id=rollout_id,
            outcome=outcome,
            reason=reason,
            holder=holder,
            who=who,
        )

    def check_name_free(self, name: str, kind: Kind | None = None) -> None:
        self._write("check_name_free", name=name, kind=kind)

    def add_variant(
        self,
        path: PathLike,
        *,
        name: str,
        parent: str,
        quantization: dict[str, Any],
        fidelity: dict[str, Any],
        passed: bool,
        forced: bool,
        pairs: Sequence[PairInput],
        who: str | None = None,
        progress: bool | None = False,
    ) -> BaseModel:
        self.check_name_free(name)
        files = self._scan_base(path, "variant")
        sent = self._upload_all(files, f"variant {name}", progress)
        body = {
            "files": sent,
            "name": name,
            "parent": parent,
            "quantization": quantization,
            "fidelity": fidelity,
            "passed": passed,
            "forced": forced,
            "pairs": tuple(pairs),
            "who": default_who(who, self._settings),
        }
        return self._post("/v1/add_variant", BaseModel, body)  # type: ignore[no-any-return]

    def record_pairs(
        self, variant: str, pairs: Sequence[PairInput], *, who: str | None = None
    ) -> None:
        self._write("record_pairs", variant=variant, pairs=tuple(pairs), who=who)

    def log_variant_refused(
        self, name: str, detail: dict[str, Any], *, who: str | None = None
    ) -> None:
        self._write("log_variant_refused", name=name, detail=detail, who=who)

    def variant(self, name: str) -> VariantInfo | None:
        return self._read("variant", name=name)  # type: ignore[no-any-return]

    def variants_of(self, parent: str) -> list[VariantInfo]:
        return self._read("variants_of", parent=parent)  # type: ignore[no-any-return]

    def pair(self, adapter: AdapterVersion, variant: str) -> PairResult | None:
        return self._read("pair", adapter=adapter, variant=variant)  # type: ignore[no-any-return]

    def pairs_of(self, adapter: AdapterVersion) -> list[PairResult]:
        return self._read("pairs_of", adapter=adapter)  # type: ignore[no-any-return]

    def pairs_on(self, variant: str) -> list[PairResult]:
        return self._read("pairs_on", variant=variant)  # type: ignore[no-any-return]
