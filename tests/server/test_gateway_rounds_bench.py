"""bench/gateway_rounds.py's pure parts (which gateways, in which order, and the summary
of a run), bench/hop_tax's tax on a real gateway app, and both benches' `--help`, which
must work without starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.bench import BENCH, bench_module


@pytest.fixture(scope="module")
def rounds() -> ModuleType:
    return bench_module("gateway_rounds")


def test_each_gateway_gets_its_tree_or_its_tax(rounds: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    envs = rounds.gateway_envs([f"before={tmp_path}"], ["hot:burn=500", "slow:sleep=3000"])
    assert list(envs) == ["head", "before", "hot", "slow"]
    assert envs["head"] == {}
    assert envs["before"] == {"PYTHONPATH": str(tmp_path)}
    assert envs["hot"] == {"PYTHONPATH": str(BENCH / "hop_tax"), "HOP_TAX_BURN_US": "500"}
    assert envs["slow"]["HOP_TAX_SLEEP_US"] == "3000"
    assert [rounds.describe(e) for e in envs.values()] == [
        {"tree": "this checkout"}, {"tree": str(tmp_path)},
        {"burn_us": "500"}, {"sleep_us": "3000"},
    ]  # fmt: skip


@pytest.mark.parametrize("bad", ["hot:burn", "hot:burn=-5", "hot:spin=5", "hot:burn=1.5"])
def test_a_tax_that_is_not_burn_or_sleep_in_whole_microseconds_is_refused(
    rounds: ModuleType, bad: str
) -> None:
    with pytest.raises(ValueError, match="NAME:burn=US"):
        rounds.gateway_envs([], [bad])


@pytest.mark.parametrize(
    ("trees", "taxes", "says"),
    [
        (["old"], [], "NAME=DIR"),  # no directory
        (["old=/nonexistent"], [], "NAME=DIR"),  # no server/ in it
        ([], ["head:burn=5"], "new word"),  # a taken name
        ([], ["direct:sleep=5"], "new word"),
        ([], ["a:burn=5", "a:sleep=5"], "new word"),  # the same name twice
        ([], ["a b:burn=5"], "new word"),
    ],
)
def test_a_tree_or_a_name_that_cannot_be_told_apart_is_refused(
    rounds: ModuleType, trees: list[str], taxes: list[str], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        rounds.gateway_envs(trees, taxes)


def test_every_path_leads_a_round_in_turn(rounds: ModuleType) -> None:
    paths = ["direct", "head", "hot"]
    orders = [rounds.order(paths, i) for i in range(6)]
    assert [o[0] for o in orders] == ["direct", "head", "hot"] * 2
    assert all(sorted(o) == sorted(paths) for o in orders)


def test_the_summary_is_per_round_ratios_to_direct(rounds: ModuleType) -> None:
    tps = {"direct": [1000.0, 800.0, 1000.0], "head": [900.0, 800.0, 300.0],
           "hot": [810.0, 880.0, 330.0]}  # fmt: skip
    cpu = {"direct": [], "head": [0.5, 0.7, 0.6], "hot": [1.0, 1.2, 1.1]}
    steps = {"direct": [70.0, 72.0, 74.0], "head": [75.0, 80.0, 78.0], "hot": [80.0] * 3}
    switched = {"direct": [], "head": [(1.0, 0.5), (1.2, 0.1), (0.8, 0.3)],
                "hot": [(1.0, 0.0)] * 3}  # fmt: skip
    out = rounds.summary(tps, cpu, steps, switched)
    assert out["head"]["switches_per_request_median"] == {"voluntary": 1.0, "involuntary": 0.3}
    assert "switches_per_request_median" not in out["direct"]
    assert out["hot"]["vs_head_median"] == 1.1  # 0.9, 1.1, 1.1 of head's rounds
    assert out["hot"]["ahead_of_head_rounds"] == 2
    assert "vs_head_median" not in out["head"]
    assert out["head"]["ratios"] == [0.9, 1.0, 0.3]
    assert out["head"]["ratio_median"] == 0.9
    assert out["head"]["stalled_rounds"] == 1  # 300 is under half of its median (800)
    assert out["head"]["cpu_ms_per_request_median"] == 0.6
    assert out["direct"]["engine_steps_median"] == 72.0 and "ratio_median" not in out["direct"]


def test_the_tax_makes_a_gateway_spend_cpu_or_wait_on_completions_only(tmp_path: Path) -> None:
    """The gateway's own ASGI app with the tax loaded as Python loads it at start-up
    (`sitecustomize` on the path): a completion request costs the burn in CPU, the sleep
    in time without CPU; other routes pay nothing."""
    probe = """
import asyncio, os, sys, time
import sitecustomize  # the tax, from bench/hop_tax on the path
from fastapi import FastAPI
from server import app

async def main():
    hot = app.GatewayApp(FastAPI(), lambda: None, None)
    for path in ("/v1/chat/completions", "/v1/models"):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            await hot({"type": "http", "path": path, "method": "GET"}, None, None)
        except Exception:
            pass
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(path, round(wall * 1000), round(cpu * 1000))
asyncio.run(main())
"""

    def run(var: str) -> dict[str, tuple[int, int]]:
        env = {"PYTHONPATH": f"{BENCH / 'hop_tax'}:{BENCH.parent}", var: "300000", "PATH": ""}
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        ).stdout
        return {p: (int(w), int(c)) for p, w, c in (line.split() for line in out.splitlines())}

    burn = run("HOP_TAX_BURN_US")
    assert burn["/v1/chat/completions"][1] >= 150  # 300 ms of CPU (half, on a busy host)
    assert burn["/v1/models"][0] < 100
    sleep = run("HOP_TAX_SLEEP_US")
    wall, cpu = sleep["/v1/chat/completions"]
    assert wall >= 250 and cpu < 100  # 300 ms waited, not spent
    assert sleep["/v1/models"][0] < 100


@pytest.mark.parametrize("script", ["gateway_rounds.py", "hop_floor.py"])
def test_help_starts_nothing(script: str) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "usage:" in out


def test_a_hop_is_named_for_its_kind(rounds: ModuleType) -> None:
    envs = rounds.gateway_envs([], ["hot:burn=5"])
    assert rounds.hop_kinds(["raw", "asgi"], envs) == {"raw": "raw", "asgi": "asgi"}
    assert rounds.hop_kinds(["rawjson"], envs) == {"rawjson": "raw+json"}


@pytest.mark.parametrize(
    ("names", "taken", "says"),
    [
        (["quic"], {}, "one of raw, rawjson, asgi"),
        (["raw", "raw"], {}, "given twice"),
        (["asgi"], {"head": {}, "asgi": {}}, "the name of a gateway"),  # a --tree named so
    ],
)
def test_a_hop_unknown_or_named_twice_is_refused(
    rounds: ModuleType, names: list[str], taken: dict[str, dict[str, str]], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        rounds.hop_kinds(names, taken)
