"""Processes pushing under one name at once get distinct versions."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import registry
from registry.local import LocalRegistry

PUSHER = """
import sys, time, registry
reg = registry.open(sys.argv[1], create=False)
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
result = reg.push_adapter(sys.argv[2], name="support", dataset="support-data")
print(result.adapter.version)
"""


def test_concurrent_pushes(
    local_reg: LocalRegistry, reg_path: Path, make_adapter: Callable[..., Path]
) -> None:
    paths = [make_adapter(seed=seed) for seed in range(4)]
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSHER, str(reg_path), str(p), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in paths
    ]
    versions = sorted(int(proc.communicate(timeout=60)[0]) for proc in procs)
    assert all(proc.returncode == 0 for proc in procs)
    assert versions == [1, 2, 3, 4]
    with registry.open(reg_path) as fresh:
        listed = fresh.list_adapters()
        assert [v.version for v in listed] == [1, 2, 3, 4]
        assert len({v.digest for v in listed}) == 4
        assert [e.version for e in fresh.events("support") if e.action == "push"] == [1, 2, 3, 4]
        assert fresh.aliases("support") == {"production": 1}
        assert fresh.verify().ok
        check = fresh.store.one("PRAGMA integrity_check")
        assert check is not None and list(check.values()) == ["ok"]
