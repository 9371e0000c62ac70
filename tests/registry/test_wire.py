"""registry.wire: every record survives the trip to JSON and back, and a value that does
not fit its type is refused with where and why."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import pytest

from registry.digest import Digest
from registry.prepare import FileRef, PushRequest
from registry.records import (
    AdapterVersion,
    Analysis,
    CodeLineage,
    Lineage,
    PeftSummary,
    Quarantine,
    Rollout,
    VerifyReport,
)
from registry.wire import WireError, from_wire, to_wire

D = Digest.from_hex("ab" * 32)
ADAPTER = AdapterVersion(
    name="support",
    version=3,
    digest=D,
    base_model=Lineage("tiny", D),
    dataset=Lineage(None, None),
    peft=PeftSummary(8, 16.0, ("q_proj", "v_proj"), 0.0),
    schema={"type": "object", "properties": {"a": {"type": "integer"}}},
    aliases=("production",),
    meta={"k": [1, 2, {"x": None}]},
    created_by="me",
    created_at="2026-12-04T00:00:00.000Z",
    code=CodeLineage("c" * 40, None),
    quarantine=Quarantine("bad", "gw", "2026-12-04T00:00:01.000Z"),
)
ROLLOUT = Rollout(
    id=1, name="support", stable=1, canary=2, steps=(10.0, 100.0), plan={"a": 1}, step=0,
    weight=10.0, state="active", reason=None, started_by="me", started_at="t",
    step_started_at="t", ended_at=None, holder=None, lease_until=12.5,
    analyses=(Analysis(1, "t", "me", 0, 10.0, "advance", "ok", {"canary": {"p95_s": 0.1}}),),
)  # fmt: skip


@pytest.mark.parametrize(
    ("tp", "value"),
    [
        (AdapterVersion, ADAPTER),
        (Rollout, ROLLOUT),
        (VerifyReport, VerifyReport(3, ("x",), ("y",))),
        (PushRequest, PushRequest("n", None, "ds", False, "canary", None, {"a": 1}, None)),
        (tuple[FileRef, ...], (FileRef("a/b.json", 3, D),)),
        (list[AdapterVersion], [ADAPTER, ADAPTER]),
        (dict[str, int], {"production": 2}),
        (Rollout | None, None),
        (Sequence[float], (1.0, 2.5)),
    ],
)
def test_round_trip_through_json_text(tp: Any, value: Any) -> None:
    again = from_wire(tp, json.loads(json.dumps(to_wire(value))))
    assert again == value
    if isinstance(value, AdapterVersion):
        assert isinstance(again.digest, Digest) and isinstance(again.peft.target_modules, tuple)


@pytest.mark.parametrize(
    ("tp", "data", "why"),
    [
        (int, True, "expected an integer"),
        (int, 1.5, "expected an integer"),
        (float, "1", "expected a number"),
        (bool, 1, "expected true or false"),
        (Digest, "sha256:xyz", "invalid digest"),
        (Literal["a", "b"], "c", "is not one of"),
        (FileRef, {"path": "a", "size": 1}, "missing field 'digest'"),
        (FileRef, {"path": "a", "size": 1, "digest": D, "extra": 1}, "unknown fields"),
        (tuple[int, ...], {"a": 1}, "expected a list"),
        (dict[str, int], [1], "expected an object"),
        (str | None, 3, "fits none of"),
    ],
)
def test_values_that_do_not_fit_are_refused(tp: Any, data: Any, why: str) -> None:
    with pytest.raises((WireError, ValueError), match=why):
        from_wire(tp, data)
