"""Registry at scale: push and pull rates with records and blobs on the directory's disk,
blobs in S3 (a private SeaweedFS on loopback), and records in PostgreSQL with blobs in
S3; 8 concurrent pushers against one and two `registry serve` processes of the same
registry; and resolve latency with 100k versions in PostgreSQL.

    .venv/bin/python bench/registry_scale.py [--quick] [--workdir DIR] [--pushers 8]

For each configuration (``dir``: SQLite + blobs on disk; ``s3``: SQLite + blobs in S3;
``pg``: PostgreSQL + blobs in S3; each with 1 or 2 servers) it builds a registry, starts
the servers, and has ``--pushers`` threads each push ``--pushes`` adapters under names of
their own (pusher i talks to server i mod N, as a Service spreading connections would),
then pull them all back the same way (with S3, pulls are presigned: the bytes come from
the store). PostgreSQL runs with fsync on, as in production (the tests run it without).

Then (unless ``--versions 0``) a PostgreSQL registry is filled with ``--versions`` adapter
versions (rows inserted directly) and ``resolve`` is timed three ways: in the process that
holds the store (a registry server's own work per lookup), over HTTP from a client of
`registry serve` (loopback), and at a gateway (``server.resolver.Resolver.route`` over
that service: its first ask of each ref, then its cache).

Prints one JSON line: per configuration, pushes/s, pulls/s, MiB/s each way, and the
median and worst single push and pull; per resolve path, p50/p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
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
from bench.registry import fill, percentiles, resolve_latency
from registry.blob_location import record_blobs
from registry.location import open_local
from registry.server_location import open_store
from server.resolver import Resolver
from tests.support.registry_service import registry_service
from tests.support.synthetic import Shape, write_adapter, write_base

SHAPE = Shape(hidden=16, intermediate=8192, heads=1)
#: (store, servers) in the order they run.
CONFIGS: tuple[tuple[str, int], ...] = (
    ("dir", 1), ("dir", 2), ("s3", 1), ("s3", 2), ("pg", 1), ("pg", 2)
)  # fmt: skip
STORES = ("dir", "s3", "pg")


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
    """``dir:1,pg:2`` -> (("dir", 1), ("pg", 2)); ValueError for anything else."""
    configs = []
    for part in text.split(","):
        store, _, count = part.strip().partition(":")
        if store not in STORES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{part!r}: expected dir:N, s3:N or pg:N with N >= 1")
        configs.append((store, int(count)))
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
def servers(location: Path | str, count: int, log_dir: Path) -> Iterator[list[str]]:
    with ExitStack() as stack:
        procs = [
            stack.enter_context(registry_service(location, log_dir / f"serve-{i}.log"))
            for i in range(count)
        ]
        yield [p.url for p in procs]


def across(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One configuration over its rounds: the median of each phase's rate, how many rounds
    stalled (below half that median), and every round's rates."""
    summary: dict[str, Any] = {}
    for phase in ("push", "pull"):
        rates = [r[phase]["per_s"] for r in rounds]
        middle = statistics.median(rates)
        summary[f"{phase}_per_s_median"] = round(middle, 2)
        summary[f"{phase}_mib_s_median"] = round(
            statistics.median(r[phase]["mib_s"] for r in rounds), 1
        )
        summary[f"{phase}_stalled_rounds"] = sum(rate < middle / 2 for rate in rates)
        summary[f"{phase}_worst_single_s"] = max(r[phase]["worst_s"] for r in rounds)
        summary[f"{phase}_per_s_rounds"] = rates
    return summary


async def gateway_routes(url: str, models: list[str], hits: int) -> dict[str, Any]:
    """A gateway's resolver over the service at ``url``: its first ask of each model
    (a registry call), then ``hits`` cached answers, each timed."""
    resolver = Resolver(url)
    try:
        await resolver.open("base")
        first = []
        for model in models:
            started = time.perf_counter_ns()
            await resolver.route(model)
            first.append(time.perf_counter_ns() - started)
        cached = []
        for i in range(hits):
            model = models[i % len(models)]
            started = time.perf_counter_ns()
            await resolver.route(model)
            cached.append(time.perf_counter_ns() - started)
    finally:
        await resolver.close()
    return {
        phase: {k: round(v, 1) for k, v in percentiles(samples).items()}
        for phase, samples in (("first_ask", first), ("cached", cached))
    }


def resolve_at_scale(
    pg_url: str, blobs: str, base: Path, adapter: Path, versions: int, calls: int, logs: Path
) -> dict[str, Any]:
    """Resolve latency with ``versions`` adapter versions in PostgreSQL, three ways."""
    settings = registry.RegistrySettings(user="bench")
    with open_store(pg_url, blobs, settings=settings, create=True) as reg:
        reg.add_base(base, name="base")
        reg.push_adapter(adapter, name="adapter", allow_unknown_dataset=True)
        started = time.perf_counter()
        refs = fill(reg, versions)
        fill_s = time.perf_counter() - started
        in_process = resolve_latency(reg, refs, calls)
    # The gateway routes names and pinned versions (its `model` field), not digests.
    models = [r for r in refs if not r.startswith("sha256:")][: min(2000, calls)]
    with servers(pg_url, 1, logs) as (url,), registry.open(url, settings=settings) as client:
        over_http = resolve_latency(client, refs, max(calls // 10, 200))
        gateway = asyncio.run(gateway_routes(url, models, calls))
    return {
        "versions": versions,
        "fill_s": round(fill_s, 1),
        "server_in_process": {k: round(v, 1) for k, v in in_process.items()},
        "http_client": {k: round(v, 1) for k, v in over_http.items()},
        "gateway": gateway,
    }


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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small adapter, 2 pushes each")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: /tmp)")
    parser.add_argument("--pushers", type=int, default=8)
    parser.add_argument("--pushes", type=int, default=None, help="per pusher (default 5)")
    parser.add_argument(
        "--configs",
        type=parse_configs,
        default=CONFIGS,
        help="which to run, e.g. dir:1,pg:2 (default: all six)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 5, 1 with --quick)"
    )
    parser.add_argument(
        "--versions",
        type=int,
        default=None,
        help="adapter versions in PostgreSQL for the resolve timing (default 100000, "
        "2000 with --quick; 0 skips it)",
    )
    args = parser.parse_args(argv)
    pushes = args.pushes or (2 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 5)
    versions = args.versions if args.versions is not None else (2000 if args.quick else 100_000)
    # Only once the arguments are known good:
    from tests.support.postgres import postgres
    from tests.support.seaweed import seaweed

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
        settings = registry.RegistrySettings(user="bench")
        with seaweed(weed_dir / "s") as store:
            os.environ.update(store.env())  # the servers (children) inherit it
            pg = None
            if versions > 0 or any(kind == "pg" for kind, _ in args.configs):
                pg = stack.enter_context(postgres(fsync=True))
            rounds: dict[str, list[dict[str, Any]]] = {}
            for r in range(args.rounds):
                # Interleaved: every configuration once a round, the order reversed on odd
                # rounds, so drift on this shared machine falls on all of them alike.
                order = args.configs if r % 2 == 0 else tuple(reversed(args.configs))
                for kind, count in order:
                    location: Path | str = work / f"{kind}-{count}-{r}"
                    if kind == "pg":
                        assert pg is not None
                        location = pg.new_database()
                        blobs = store.location()
                        with open_store(location, blobs, settings=settings, create=True) as reg:
                            reg.add_base(base, name="base")
                    else:
                        if kind == "s3":
                            record_blobs(Path(location), store.location())
                        with open_local(location, settings=settings) as reg:
                            reg.add_base(base, name="base")
                    with servers(location, count, work) as urls:
                        rounds.setdefault(f"{kind}_{count}_servers", []).append(
                            measure(work, adapter, urls, args.pushers, pushes)
                        )
                    if kind != "pg":
                        shutil.rmtree(location, ignore_errors=True)
            results.update({config: across(each) for config, each in rounds.items()})
            if versions > 0:
                assert pg is not None
                calls = 2_000 if args.quick else 20_000
                results["resolve"] = resolve_at_scale(
                    pg.new_database(), store.location(), base, adapter, versions, calls, work
                )
    print(
        json.dumps(
            {
                "bench": "registry_scale",
                "quick": args.quick,
                "pushers": args.pushers,
                "pushes_each": pushes,
                "rounds": args.rounds,
                "adapter_mib": round(mib, 2),
                **results,
                "machine": f"{platform.machine()} {os.cpu_count()} cpus, {cpu_model()}",
            }
        )
    )


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
