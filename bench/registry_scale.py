"""Registry at scale: push and pull rates with blobs on the directory's disk against
blobs in S3 (a private SeaweedFS on loopback), and 8 concurrent pushers against one and
two `registry serve` processes of the same registry.

    .venv/bin/python bench/registry_scale.py [--quick] [--workdir DIR] [--pushers 8]

For each configuration (blobs: ``dir`` | ``s3``; servers: 1 | 2) it builds a registry,
starts the servers, and has ``--pushers`` threads each push ``--pushes`` adapters under
names of their own (pusher i talks to server i mod N, as a Service spreading
connections would), then pull them all back the same way (with S3, pulls are presigned:
the bytes come from the store). Prints one JSON line: per configuration, pushes/s,
pulls/s, MiB/s each way, and the median and worst single push and pull.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Run as a script, this directory comes first on sys.path and would shadow `registry`.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

import registry
from registry.blob_location import record_blobs
from registry.location import open_local
from tests.support.registry_service import registry_service
from tests.support.synthetic import Shape, write_adapter, write_base

SHAPE = Shape(hidden=16, intermediate=8192, heads=1)
#: (blobs, servers) in the order they run.
CONFIGS: tuple[tuple[str, int], ...] = (("dir", 1), ("dir", 2), ("s3", 1), ("s3", 2))


@dataclass(frozen=True)
class Rates:
    """One phase (push or pull) of one configuration."""

    ops: int
    seconds: float
    mib: float
    each_s: tuple[float, ...]

    def summary(self) -> dict[str, float]:
        return {
            "per_s": round(self.ops / self.seconds, 2),
            "mib_s": round(self.mib / self.seconds, 1),
            "median_s": round(statistics.median(self.each_s), 3),
            "worst_s": round(max(self.each_s), 3),
        }


def parse_configs(text: str) -> tuple[tuple[str, int], ...]:
    """``dir:1,s3:2`` -> (("dir", 1), ("s3", 2)); ValueError for anything else."""
    configs = []
    for part in text.split(","):
        blobs, _, count = part.strip().partition(":")
        if blobs not in ("dir", "s3") or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{part!r}: expected dir:N or s3:N with N >= 1")
        configs.append((blobs, int(count)))
    return tuple(configs)


def assign(pushers: int, urls: Sequence[str]) -> list[str]:
    """The server each pusher talks to: round-robin, as a Service spreads connections."""
    if not urls:
        raise ValueError("no servers")
    return [urls[i % len(urls)] for i in range(pushers)]


def run_concurrently(jobs: Sequence[Callable[[], list[float]]]) -> tuple[float, list[float]]:
    """Run each job on its own thread; (wall seconds, every timing the jobs returned).
    A job's error is raised here, after all have finished."""
    results: list[list[float]] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # re-raised below, after the others finish
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return wall, [t for r in results for t in r]


@contextmanager
def servers(root: Path, count: int, log_dir: Path) -> Iterator[list[str]]:
    with ExitStack() as stack:
        procs = [
            stack.enter_context(registry_service(root, log_dir / f"serve-{i}.log"))
            for i in range(count)
        ]
        yield [p.url for p in procs]


def measure(
    root: Path, adapter: Path, urls: list[str], pushers: int, pushes: int
) -> dict[str, Any]:
    settings = registry.RegistrySettings(user="bench")
    mib = sum(p.stat().st_size for p in adapter.iterdir()) / 2**20
    targets = assign(pushers, urls)

    def pusher(i: int) -> Callable[[], list[float]]:
        def job() -> list[float]:
            times = []
            with registry.open(targets[i], settings=settings) as reg:
                for j in range(pushes):
                    started = time.perf_counter()
                    reg.push_adapter(adapter, name=f"p{i}-{j}", allow_unknown_dataset=True)
                    times.append(time.perf_counter() - started)
            return times

        return job

    def puller(i: int) -> Callable[[], list[float]]:
        def job() -> list[float]:
            times = []
            with registry.open(targets[i], settings=settings) as reg:
                for j in range(pushes):
                    dest = root / "pulls" / f"p{i}-{j}"
                    started = time.perf_counter()
                    reg.pull(f"p{i}-{j}@1", dest)
                    times.append(time.perf_counter() - started)
                    shutil.rmtree(dest)
            return times

        return job

    total = pushers * pushes
    push_wall, push_each = run_concurrently([pusher(i) for i in range(pushers)])
    pull_wall, pull_each = run_concurrently([puller(i) for i in range(pushers)])
    return {
        "push": Rates(total, push_wall, total * mib, tuple(push_each)).summary(),
        "pull": Rates(total, pull_wall, total * mib, tuple(pull_each)).summary(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small adapter, 2 pushes each")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: /tmp)")
    parser.add_argument("--pushers", type=int, default=8)
    parser.add_argument("--pushes", type=int, default=None, help="per pusher (default 5)")
    parser.add_argument(
        "--configs",
        type=parse_configs,
        default=CONFIGS,
        help="which to run, e.g. dir:1,s3:2 (default: all four)",
    )
    args = parser.parse_args(argv)
    pushes = args.pushes or (2 if args.quick else 5)
    from tests.support.seaweed import seaweed  # only once the arguments are known good

    work = Path(tempfile.mkdtemp(prefix="registry-scale-", dir=args.workdir))
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        shape = replace(SHAPE, layers=2 if args.quick else 8)
        base = write_base(work / "base", shape, "{{ messages }}", random=True)
        adapter = write_adapter(work / "adapter", shape, r=16, targets=("up_proj",))
        mib = sum(p.stat().st_size for p in adapter.iterdir()) / 2**20
        # SeaweedFS's unix sockets live in its directory: keep that path short (< 108).
        weed_dir = Path(tempfile.mkdtemp(prefix="weed-"))
        stack.callback(shutil.rmtree, weed_dir, ignore_errors=True)
        with seaweed(weed_dir / "s") as store:
            os.environ.update(store.env())  # the servers (children) inherit it
            for blobs, count in args.configs:
                root = work / f"{blobs}-{count}"
                if blobs == "s3":
                    record_blobs(root, store.location())
                with open_local(root, settings=registry.RegistrySettings(user="bench")) as reg:
                    reg.add_base(base, name="base")
                with servers(root, count, work) as urls:
                    results[f"{blobs}_{count}_servers"] = measure(
                        root, adapter, urls, args.pushers, pushes
                    )
    print(
        json.dumps(
            {
                "bench": "registry_scale",
                "quick": args.quick,
                "pushers": args.pushers,
                "pushes_each": pushes,
                "adapter_mib": round(mib, 2),
                **results,
                "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            }
        )
    )


if __name__ == "__main__":
    main()
