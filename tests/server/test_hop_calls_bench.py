"""bench/hop_calls.py's pure parts, and its counter (bench/call_count/sitecustomize.py) in
a real process started and stopped by signals, as the bench drives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.bench import BENCH, bench_module


@pytest.fixture(scope="module")
def calls() -> ModuleType:
    return bench_module("hop_calls")


@pytest.mark.parametrize(
    ("key", "module"),
    [
        ("C dict.get", "C"),
        ("serve /work/x/server/serving.py", "server/serving.py"),
        ("inc /v/site-packages/prometheus_client/values.py", "prometheus_client/values.py"),
        ("<listcomp> <string>", "<string>"),
    ],
)  # fmt: skip
def test_a_call_is_filed_under_its_module(calls: ModuleType, key: str, module: str) -> None:
    assert calls.module_of(key) == module


def test_the_summary_is_per_request_by_module_and_function(calls: ModuleType) -> None:
    counts = [
        ("C len", 400),
        ("serve /a/server/serving.py", 300),
        ("_read /a/server/serving.py", 100),
        ("inc /b/prometheus_client/values.py", 50),
    ]
    out = calls.summarise(counts, 100, 2)
    assert out["python_calls_per_request"] == 4.5  # 450 Python calls over 100 requests
    assert out["c_calls_per_request"] == 4.0
    assert out["server_calls_per_request"] == 4.0  # the two server/serving.py functions
    assert out["server_functions_called"] == 2
    assert out["by_module"] == {"C": 4.0, "server/serving.py": 4.0}  # the top 2
    assert out["functions"] == {"C len": 4.0, "serve (server/serving.py)": 3.0}


def test_the_counter_counts_between_the_two_signals_only(tmp_path: Path) -> None:
    """A process with the counter on its path: calls before SIGUSR1 and after SIGUSR2 are
    not counted, those between are, and SIGUSR2 writes them."""
    script = """
import signal, sys, time
def work():
    return None
for _ in range(50):
    work()
print("ready", flush=True)
sys.stdin.readline()  # counting starts (SIGUSR1 arrived first)
for _ in range(70):
    work()
sys.stdin.readline()  # counting stopped
for _ in range(30):
    work()
"""
    out = tmp_path / "counts"
    env = {**os.environ, "PYTHONPATH": str(BENCH / "call_count"), "CALL_COUNT_OUT": str(out)}
    p = subprocess.Popen([sys.executable, "-c", script], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert p.stdin is not None and p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    p.stdin.write("go\n")
    p.stdin.flush()
    time.sleep(0.3)
    p.send_signal(signal.SIGUSR2)
    time.sleep(0.2)
    p.stdin.write("stop\n")
    p.stdin.close()
    assert p.wait(10) == 0
    counts = dict(json.loads(Path(f"{out}.{p.pid}.json").read_text()))
    assert counts["work <string>"] == 70


def test_help_starts_nothing() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "hop_calls.py"), "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "usage:" in out and "--requests" in out


def test_the_timed_pieces_are_the_gateways_own_functions(calls: ModuleType) -> None:
    """Each piece runs against the product's code as it is (a renamed or moved function
    fails here, not in the bench), and takes some time."""
    timed = calls.pieces()
    assert set(timed) >= {"parse and validate the request", "read the answer", "request id"}
    assert all(0 < us < 1000 for us in timed.values())
