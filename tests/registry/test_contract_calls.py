"""Edge calls end alike: each of these calls, made on a directory and then through a
service over the same directory, ends the same way (the same result, or the same error
class and message). Each is a refusal or an idempotent repeat, so the first run leaves
nothing the second would see differently. The order of the directory's checks holds too:
a taken name is refused before a bad directory is read."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.http_client import HttpRegistry
from registry.local import LocalRegistry
from registry.protocol import Registry
from registry.service import app
from registry.settings import RegistrySettings
from tests.registry.conftest import RECORDS
from tests.support.mounted_service import MountedServer
from tests.support.synthetic import write_base

SD = "support-data"


@pytest.fixture(params=RECORDS)
def records(request: pytest.FixtureRequest) -> str:
    """Every test here runs with its records in SQLite and in PostgreSQL."""
    return str(request.param)


def _outcome(call: Callable[[Registry], object], reg: Registry) -> tuple[str, str]:
    try:
        return "ok", repr(call(reg))
    except Exception as exc:
        return type(exc).__name__, str(exc)


def test_edge_calls_end_alike(
    local_reg: LocalRegistry,
    settings: RegistrySettings,
    service: MountedServer,
    make_adapter: Callable[..., Path],
    tmp_path: Path,
    base_dir: Path,
    dataset_file: Path,
) -> None:
    ok = make_adapter("support")
    local_reg.push_adapter(ok, dataset="support-data")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    ob = write_base(tmp_path / "ob", random=True)
    fresh = make_adapter("y", seed=9)
    notlora = make_adapter("x", seed=3)
    (notlora / "adapter_config.json").write_text("{}")
    missing = tmp_path / "s.json"
    no_variant: dict[str, Any] = {
        "quantization": {},
        "fidelity": {},
        "passed": True,
        "forced": False,
        "pairs": [],
    }

    def variant(r: Registry, path: Path, name: str, parent: str) -> object:
        return r.add_variant(path, name=name, parent=parent, **no_variant)

    calls: dict[str, Callable[[Registry], object]] = {
        "push bad name": lambda r: r.push_adapter(fresh, name="Bad Name", dataset=SD),
        "push bad name+bad dir": lambda r: r.push_adapter(
            empty, name="Bad Name", dataset="support-data"
        ),
        "push bad alias": lambda r: r.push_adapter(ok, alias="1x", dataset=SD),
        "push name is base": lambda r: r.push_adapter(ok, name="tiny-base", dataset=SD),
        "push name is base, bad dir": lambda r: r.push_adapter(
            empty, name="tiny-base", dataset="support-data"
        ),
        "push no base": lambda r: r.push_adapter(ok, base="nosuch", dataset=SD),
        "push dataset missing ref": lambda r: r.push_adapter(ok, dataset="nosuch"),
        "push dataset missing file": lambda r: r.push_adapter(ok, dataset="./nosuch.jsonl"),
        "push dataset dir": lambda r: r.push_adapter(ok, dataset=str(tmp_path)),
        "push no dataset": lambda r: r.push_adapter(fresh),
        "push bad schema": lambda r: r.push_adapter(fresh, dataset=SD, schema={"type": 5}),
        "push schema file missing": lambda r: r.push_adapter(
            fresh, dataset=SD, schema=str(missing)
        ),
        "push git sha bad": lambda r: r.push_adapter(fresh, dataset=SD, git_sha="zz"),
        "push not lora": lambda r: r.push_adapter(notlora, dataset=SD),
        "base add taken name bad dir": lambda r: r.add_base(empty, name="support"),
        "base add bad name": lambda r: r.add_base(base_dir, name="Bad Name"),
        "base add same again": lambda r: r.add_base(base_dir, name="tiny-base"),
        "base add other content same name": lambda r: r.add_base(ob, name="tiny-base"),
        "dataset taken": lambda r: r.add_dataset(dataset_file, name="support"),
        "dataset bad name": lambda r: r.add_dataset(dataset_file, name="Bad Name"),
        "dataset missing": lambda r: r.add_dataset(tmp_path / "nope.jsonl", name="nope"),
        "dataset same again": lambda r: r.add_dataset(dataset_file, name="support-data"),
        "variant taken": lambda r: r.add_variant(
            base_dir, name="support", parent="tiny-base", **no_variant
        ),
        "variant bad parent": lambda r: r.add_variant(
            base_dir, name="v1", parent="nosuch", **no_variant
        ),
        "variant empty dir": lambda r: r.add_variant(
            empty, name="v2", parent="tiny-base", **no_variant
        ),
        "pull missing": lambda r: r.pull("nosuch", tmp_path / "p1"),
        "pull exists": lambda r: r.pull("support", tmp_path),
        "remove bad": lambda r: r.remove("Bad Name"),
        "quarantine long reason": lambda r: r.quarantine("support@1", reason="x" * 5000),
        "claim nan ttl": lambda r: r.claim_rollout("support", 1, "me", ttl_s=float("nan")),
        "record pairs bad": lambda r: r.record_pairs("nosuch", []),
        "verify bad ref": lambda r: r.verify("Bad Name"),
        "events bad name": lambda r: r.events("Bad Name"),
        "list bad name": lambda r: r.list_adapters("Bad Name"),
        "aliases missing": lambda r: r.aliases("nosuch"),
        "pair bad": lambda r: r.variants_of("nosuch"),
        "rollout of missing": lambda r: r.rollout("nosuch"),
        "end rollout none": lambda r: r.end_rollout("support", None, "aborted", reason="x"),
        "advance none": lambda r: r.advance_rollout("support", 1, 1),
        "log refused": lambda r: r.log_variant_refused("Bad Name", {}),
        "start rollout steps str": lambda r: r.start_rollout("support", 1, steps="10"),
    }
    with service.serve(local_reg, settings) as url, HttpRegistry(url, settings) as client:
        for what, call in calls.items():
            on_directory = _outcome(call, local_reg)
            assert _outcome(call, client) == on_directory, what


def test_non_finite_numbers_in_a_record_come_back_as_they_went_in(
    reg: Registry, base_dir: Path, make_adapter: Callable[..., Path]
) -> None:
    """Free-form metadata and fidelity figures may hold NaN; through the service they
    were a 500 on the way back (after the write was done)."""
    meta = {"loss": math.nan, "best": math.inf}
    pushed = reg.push_adapter(make_adapter("support"), dataset=SD, meta=meta)
    assert math.isnan(pushed.adapter.meta["loss"]) and pushed.adapter.meta["best"] == math.inf
    assert math.isnan(reg.adapter("support@1").meta["loss"])
    reg.add_variant(
        base_dir,
        name="tiny-base-fp8",
        parent="tiny-base",
        quantization={"method": "fp8"},
        fidelity={"size_ratio": math.nan},
        passed=True,
        forced=False,
        pairs=[],
    )
    info = reg.variant("tiny-base-fp8")
    assert info is not None and math.isnan(info.fidelity["size_ratio"])


def test_lists_arrive_in_pages_and_the_client_reads_them_all(
    local_reg: LocalRegistry,
    settings: RegistrySettings,
    service: MountedServer,
    make_adapter: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for seed in range(5):
        local_reg.push_adapter(make_adapter("support", seed=seed), dataset=SD)
    monkeypatch.setattr(app, "MAX_PAGE", 2)
    with service.serve(local_reg, settings) as url, HttpRegistry(url, settings) as client:
        first = httpx.get(f"{url}/v1/list_adapters").json()
        assert len(first["result"]) == 2 and first["next_page_token"] == "2"
        assert client.list_adapters() == local_reg.list_adapters()
        assert client.events() == local_reg.events() and len(client.events()) > 5
