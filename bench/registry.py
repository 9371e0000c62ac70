"""Registry benchmark: push/pull throughput against sha256sum + cp, and resolve latency;
push and pull over HTTP (a real `registry serve` on loopback) against the directory.

    .venv/bin/python bench/registry.py [--quick] [--workdir DIR] [--rounds N]

Builds a valid synthetic Llama-shaped base (hidden 16, wide MLP) and a rank-16 PEFT
LoRA on its MLP (~200 MB; ~25 MB with --quick), times ``push`` and ``pull`` against
``sha256sum`` + ``cp`` of the same bytes in the same run, then fills a registry with
10,000 adapter versions (rows inserted directly, in one transaction) and times
``resolve`` in-process. Then ``--rounds`` interleaved rounds of push and pull on the
directory and through ``registry serve`` (its own process, the same disk), each push
under a new name so every round does the whole work; medians and every round's figures.
Prints one JSON line.
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
from tests.support.registry_service import registry_service
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

    Raw SQL on purpose, outside ``sql_store``: pushing 10,000 real versions would take
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
    return {
        **{f"resolve_{k}": v for k, v in percentiles(samples).items()},
        "resolve_mean_us": statistics.fmean(samples) / 1000,
    }


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50 and p99 of nanosecond samples, in microseconds."""
    ordered = sorted(samples_ns)
    return {
        "p50_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[int(len(ordered) * 0.99)] / 1000,
    }


def over_http(root: Path, base: Path, adapter: Path, rounds: int) -> dict[str, Any]:
    """Interleaved rounds: push then pull on a directory, then the same through HTTP."""
    settings = registry.RegistrySettings(user="bench")
    local_dir, served_dir = root / "local", root / "served"
    for location in (local_dir, served_dir):
        with open_local(location, settings=settings) as reg:
            reg.add_base(base, name="base")
    times: dict[str, list[float]] = {"push_local": [], "push_http": [], "pull_local": [],
                                     "pull_http": []}  # fmt: skip
    with registry_service(served_dir, root / "serve.log") as proc:
        local = open_local(local_dir, settings=settings)
        remote = registry.open(proc.url, settings=settings)
        try:
            order = [("local", local), ("http", remote)]
            for i in range(rounds):  # alternating which goes first: neither gets a warmer cache
                for kind, reg in order if i % 2 == 0 else list(reversed(order)):
                    name, dest = f"adapter-{i}", root / f"pull-{kind}-{i}"
                    started = time.perf_counter()
                    reg.push_adapter(adapter, name=name, allow_unknown_dataset=True)
                    pushed = time.perf_counter()
                    reg.pull(f"{name}@1", dest)
                    times[f"push_{kind}"].append(pushed - started)
                    times[f"pull_{kind}"].append(time.perf_counter() - pushed)
                    shutil.rmtree(dest)
        finally:
            local.close()
            remote.close()
    mib = sum(p.stat().st_size for p in adapter.iterdir()) / 2**20
    med = {k: statistics.median(v) for k, v in times.items()}

    def ratio(op: str) -> float:  # the median of the per-round rate ratios (http / local)
        pairs = zip(times[f"{op}_local"], times[f"{op}_http"], strict=True)
        return round(statistics.median(local / http for local, http in pairs), 2)

    def stalled(op: str) -> int:  # rounds slower than twice their path's median
        return sum(t > 2 * med[k] for k in (f"{op}_local", f"{op}_http") for t in times[k])

    return {
        "http_rounds": rounds,
        "push_local_mib_s": round(mib / med["push_local"], 1),
        "push_http_mib_s": round(mib / med["push_http"], 1),
        "push_http_vs_local": ratio("push"),
        "push_stalled": stalled("push"),
        "pull_local_mib_s": round(mib / med["pull_local"], 1),
        "pull_http_mib_s": round(mib / med["pull_http"], 1),
        "pull_http_vs_local": ratio("pull"),
        "pull_stalled": stalled("pull"),
        "rounds_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="~25 MB adapter, 2,000 calls")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: /tmp)")
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved HTTP rounds")
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
        http = over_http(root, base, adapter, args.rounds)
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
        **http,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
