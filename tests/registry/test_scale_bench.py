"""bench/registry_scale.py's pure parts (which server each pusher talks to, running jobs
concurrently, the summary of a phase), table-tested, and its `--help`, which must work
without starting anything. The bench itself is not run here (it starts SeaweedFS and
eight registry servers)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.bench import BENCH, bench_module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return bench_module("registry_scale")


@pytest.mark.parametrize(
    ("pushers", "urls", "expected"),
    [
        (3, ["a"], ["a", "a", "a"]),
        (4, ["a", "b"], ["a", "b", "a", "b"]),
        (3, ["a", "b"], ["a", "b", "a"]),
        (0, ["a"], []),
    ],
)
def test_assign(bench: ModuleType, pushers: int, urls: list[str], expected: list[str]) -> None:
    assert bench.assign(pushers, urls) == expected


def test_assign_needs_a_server(bench: ModuleType) -> None:
    with pytest.raises(ValueError):
        bench.assign(2, [])


def test_jobs_run_concurrently_and_errors_come_back(bench: ModuleType) -> None:
    barrier = threading.Barrier(4, timeout=5)  # passes only if all four run at once

    def job() -> list[float]:
        barrier.wait()
        return [0.5]

    wall, each = bench.run_concurrently([job] * 4)
    assert each == [0.5] * 4 and wall < 5

    def broken() -> list[float]:
        time.sleep(0.01)
        raise RuntimeError("push refused")

    with pytest.raises(RuntimeError, match="push refused"):
        bench.run_concurrently([broken, lambda: [1.0]])


def test_rates_summary(bench: ModuleType) -> None:
    rates = bench.Rates(ops=16, seconds=4.0, mib=32.0, each_s=(0.1, 0.3, 0.2, 2.0))
    assert rates.summary() == {"per_s": 4.0, "mib_s": 8.0, "median_s": 0.25, "worst_s": 2.0}


def test_help_starts_nothing() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "registry_scale.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--pushers" in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dir:1", (("dir", 1),)),
        ("dir:1, s3:2", (("dir", 1), ("s3", 2))),
        ("pg:2,dir:1", (("pg", 2), ("dir", 1))),
    ],
)
def test_parse_configs(bench: ModuleType, text: str, expected: tuple[tuple[str, int], ...]) -> None:
    assert bench.parse_configs(text) == expected


@pytest.mark.parametrize("text", ["", "nfs:1", "s3:0", "s3", "dir:x", "pg:-1", "PG:1"])
def test_parse_configs_refuses(bench: ModuleType, text: str) -> None:
    with pytest.raises(ValueError):
        bench.parse_configs(text)


def test_across_rounds(bench: ModuleType) -> None:
    def phase(per_s: float) -> dict[str, float]:
        return {"per_s": per_s, "mib_s": per_s * 4, "median_s": 0.1, "worst_s": 1 / per_s}

    rounds = [{"push": phase(p), "pull": phase(2 * p)} for p in (10.0, 12.0, 4.0, 11.0, 9.0)]
    summary = bench.across(rounds)
    assert summary["push_per_s_median"] == 10.0 and summary["pull_per_s_median"] == 20.0
    assert summary["push_mib_s_median"] == 40.0
    assert summary["push_stalled_rounds"] == 1  # 4.0 is below half of 10
    assert summary["push_worst_single_s"] == 0.25
    assert summary["push_per_s_rounds"] == [10.0, 12.0, 4.0, 11.0, 9.0]


def test_percentiles(bench: ModuleType) -> None:
    samples = [i * 1000 for i in range(1, 101)]  # 1..100 us, shuffled below
    assert bench.percentiles(samples[::-1]) == {"p50_us": 51.0, "p99_us": 100.0}


def test_a_tiny_run_prints_its_figures(tmp_path: Path) -> None:
    """The whole script end to end at the smallest size (SeaweedFS and PostgreSQL, two
    servers of a PostgreSQL + S3 registry, two pushers of one push each, resolve over 200
    versions): it runs and prints one JSON line. A smoke test of the script, not a
    measurement."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "registry_scale.py"), "--quick", "--pushers", "2",
         "--pushes", "1", "--configs", "pg:2", "--versions", "200", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "registry_scale" and result["pushers"] == 2
    figures = result["pg_2_servers"]
    assert figures["push_per_s_median"] > 0 and figures["pull_per_s_median"] > 0
    assert len(figures["push_per_s_rounds"]) == result["rounds"] == 1
    resolve = result["resolve"]
    assert resolve["versions"] == 200
    for path in (resolve["gateway"]["cached"], resolve["gateway"]["first_ask"]):
        assert 0 < path["p50_us"] <= path["p99_us"]
    assert resolve["server_in_process"]["resolve_p50_us"] > 0
