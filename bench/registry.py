"""Registry benchmark: push/pull throughput against sha256sum + cp, and resolve latency.

    .venv/bin/python bench/registry.py [--quick] [--workdir DIR]

Builds a valid synthetic Llama-shaped base (hidden 16, wide MLP) and a rank-16 PEFT
LoRA on its MLP (~200 MB; ~25 MB with --quick), times ``push`` and ``pull`` against
``sha256sum`` + ``cp`` of the same bytes in the same run, then fills a registry with
10,000 adapter versions (rows inserted directly, in one transaction) and times
``resolve`` in-process. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# This file is bench/registry.py: run as a script, its own directory comes first on
# sys.path and would shadow the `registry` package it measures.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

import registry
from registry.local import LocalRegistry
from registry.location import open_local
from tests.support.synthetic import Shape, write_adapter, write_base

RANK = 16
SHAPE = Shape(hidden=16, intermediate=65536, heads=1)  # a wide MLP: big tensors, fast to build


def build(root: Path, layers: int) -> tuple[Path, Path]:
    shape = replace(SHAPE, layers=layers)
    base = write_base(root / "base", shape, "{{ messages }}", random=True)
    targets = ("gate_proj", "up_proj", "down_proj")
    return base, write_adapter(root / "adapter", shape, r=RANK, targets=targets)


def timed(func: Any) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def raw_copy(src: Path, dest: Path) -> float:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    return timed(
        lambda: (
            subprocess.run(["sha256sum", *map(str, files)], check=True, capture_output=True),
            subprocess.run(["cp", "-r", str(src), str(dest)], check=True),
        )
    )


def fill(reg: LocalRegistry, versions: int, per_name: int = 10) -> list[str]:
    """Insert ``versions`` adapter rows (unique digests) straight into the store's tables.

    Raw SQL on purpose, outside ``sqlite_store``: pushing 10,000 real versions would take
    most of the run, and only the rows' shape matters to ``resolve``.
    """
    template = reg.store.one("SELECT * FROM adapters WHERE name = 'adapter'")
    assert template is not None
    refs: list[str] = []
    columns = [c for c in template if c not in ("id", "name", "version", "digest")]
    with reg.store.write() as tx:
        conn = tx.conn
        for i in range(versions):
            name, version = f"tenant-{i // per_name:05d}", i % per_name + 1
            digest = f"sha256:{i:064x}"
            conn.execute("INSERT INTO manifests VALUES (?, '[]', 0, 0)", (digest,))
            if version == 1:
                conn.execute("INSERT INTO names VALUES (?, 'adapter', '')", (name,))
            conn.execute(
                f"INSERT INTO adapters (name, version, digest, {', '.join(columns)}) "
                f"VALUES (?, ?, ?, {', '.join('?' * len(columns))})",
                (name, version, digest, *(template[c] for c in columns)),
            )
            if version == per_name:
                for alias, target in (("production", per_name - 1), ("canary", per_name)):
                    conn.execute(
                        "INSERT INTO aliases VALUES (?, ?, ?, 'bench', '')", (name, alias, target)
                    )
            refs += [f"{name}@{version}", digest]
            if version == per_name:
                refs += [name, f"{name}@canary"]
    return refs


def resolve_latency(reg: LocalRegistry, refs: list[str], calls: int) -> dict[str, float]:
    rng = random.Random(0)
    sample = [rng.choice(refs) for _ in range(calls)]
    for ref in sample[:1000]:
        reg.resolve(ref)
    samples = []
    for ref in sample:
        start = time.perf_counter_ns()
        reg.resolve(ref)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return {
        "resolve_p50_us": samples[len(samples) // 2] / 1000,
        "resolve_p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "resolve_mean_us": statistics.fmean(samples) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="~25 MB adapter, 2,000 calls")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: /tmp)")
    parser.add_argument("--versions", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="registry-bench-", dir=args.workdir))
    try:
        base, adapter = build(root, layers=2 if args.quick else 16)
        size = sum(p.stat().st_size for p in adapter.iterdir())
        raw_s = min(raw_copy(adapter, root / f"raw{i}") for i in range(2))
        reg = open_local(root / "reg", settings=registry.RegistrySettings(user="bench"))
        reg.add_base(base, name="base")
        push_s = timed(lambda: reg.push_adapter(adapter, allow_unknown_dataset=True))
        pull_s = timed(lambda: reg.pull("adapter@1", root / "pulled"))
        refs = fill(reg, args.versions)
        latency = resolve_latency(reg, refs, 2_000 if args.quick else 20_000)
        reg.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mib = size / 2**20
    result = {
        "bench": "registry",
        "quick": args.quick,
        "adapter_mib": round(mib, 1),
        "raw_sha256sum_cp_mib_s": round(mib / raw_s, 1),
        "push_mib_s": round(mib / push_s, 1),
        "push_vs_raw": round(raw_s / push_s, 2),
        "pull_mib_s": round(mib / pull_s, 1),
        "pull_vs_raw": round(raw_s / pull_s, 2),
        "versions": args.versions,
        **{k: round(v, 1) for k, v in latency.items()},
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
