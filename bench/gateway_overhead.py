"""Gateway overhead next to vLLM on one CPU host: the same request stream sent straight to
vLLM and through the gateway, interleaved, in one run. Prints one JSON line.

    .venv/bin/python bench/gateway_overhead.py [--embedded] [--placement MODE] [--quick]

- `--backend` (default): `gateway serve --backend URL` beside a vLLM this script starts;
  `--embedded`: `gateway serve` launching its own vLLM (the direct path then calls that
  vLLM where the gateway does: on its Unix socket, or its port with
  `GATEWAY_LOCAL__UNIX_SOCKET=false`).
- `--inprocess`: issue 22's experiment: the gateway inside vLLM's own API server process
  as ASGI middleware (bench/inprocess_gateway.py, vLLM's `--middleware`), no hop at all;
  the direct path is the same server's `/direct/` prefix, which the middleware hands to
  vLLM untouched.
- `--placement api-on-worker` (`--backend` only, not a product setting): the gateway on
  the free cores and vLLM's API server pinned to the worker's cores, to test whether the
  short-request swings follow where the API server runs.
- `--placement none|gateway|gateway+engine|gateway+vllm` (server/placement.py; the
  default is the product's, `gateway+engine`): where the gateway, and vLLM's API server
  and engine-core processes, run relative to the cores vLLM's worker binds. With
  `--backend` the script applies it (the gateway through `cpu_affinity`), with
  `--embedded` the gateway does (`cpu_placement`). The load generator (this process) runs
  on the free cores in every mode: clients are not part of a server's placement.

Measured: concurrency 1, direct and gateway requests alternating one by one (added p50);
then >= 10 rounds at concurrency 16 of short requests (base model, 8 tokens) and of long
ones (`support-v1`, 64 tokens), each round a direct burst and a gateway burst in
alternating order. Per round: tokens/s of both paths and their ratio. Reported: the median
of the per-round ratios, every ratio, absolute tokens/s, and the rounds that stalled (a
burst below half its path's median rate), and vLLM's engine steps per burst with the
tokens each computed (`vllm:iteration_tokens_total`, read before and after each burst;
the gateway's own probe may add a step): whether a path's requests reach vLLM in fewer,
fuller batches or in more, thinner ones. Per burst also (not `--instant` or
`--inprocess`): each core's busy share, and the CPU milliseconds per request of the load
generator, the gateway and each vLLM process but the worker (`cpu_direct`,
`cpu_gateway`): where the cores the worker leaves free are saturated, the gateway's CPU
is taken from vLLM's own processes.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from harness import (
    BASE_NAME,
    EXAMPLES,
    ROOT,
    UNIX,
    embedded_gateway,
    fill_registry,
    gateway,
    get,
    instant_backend,
    interleaved,
    load,
    machine,
    ms,
    settings,
    vllm,
)

from server import placement
from server.supervisor import free_port, vllm_command, vllm_env
from tests.support.launch import VLLM_START_TIMEOUT_S, serving, wait_for
from tests.support.zoo import BASE_DIR

ADAPTER = "support-v1"
GAP_S = 0.005
"""Concurrency 1 is measured twice: back to back (a request's trailing work, on either
path, then lands in the next one's time), and with this pause after each answer (each
request timed alone, as a client that is not a closed loop sees it)."""


def prompts() -> list[Any]:
    lines = (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    return [json.loads(x)["messages"] for x in lines]


def bodies(model: str, n: int, tokens: int) -> list[dict[str, Any]]:
    ps = prompts()
    return [
        {"model": model, "messages": ps[i % len(ps)], "max_tokens": tokens, "ignore_eos": True,
         "temperature": 0}
        for i in range(n)
    ]  # fmt: skip


class Where:
    """Where vLLM's own processes ran during a burst: every 20 ms, each thread's CPU time
    and the core it last ran on (/proc). Per burst, for each process by title, the share of
    its CPU time spent on the worker's cores. A burst that is slow because the OS put, say,
    the engine core beside the spinning worker shows here, not in the gateway's cost."""

    def __init__(self, group: int, worker_cores: frozenset[int]) -> None:
        self.worker_cores = worker_cores
        self.pids = {
            pid: _comm(pid) for pid in _members(group) if not _comm(pid).startswith("VLLM::Worker")
        }

    def during(self, work: Any) -> tuple[Any, dict[str, float]]:
        on, total = collections.Counter[str](), collections.Counter[str]()
        last: dict[tuple[int, int], int] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                for pid, title in self.pids.items():
                    for tid, ticks, core in _threads(pid):
                        used = ticks - last.get((pid, tid), ticks)
                        last[(pid, tid)] = ticks
                        total[title] += used
                        if core in self.worker_cores:
                            on[title] += used

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            result = work()
        finally:
            stop.set()
            thread.join()
        return result, {t: round(on[t] / total[t], 2) for t in total if total[t]}


class Cpu:
    """The CPU a burst used: each core's busy share over the burst (/proc/stat), and the
    CPU time of each process on the request's way, per request: this load generator
    (`clients`), the gateway, and vLLM's processes by title (its spinning worker left
    out). Where the cores vLLM's worker leaves free are busy all the burst long, every
    millisecond the gateway spends is one vLLM's own processes do not get."""

    def __init__(self, roles: dict[int, str]) -> None:
        self.roles = roles

    def _sample(self) -> tuple[list[tuple[int, int]], dict[str, int]]:
        cores = []
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                ticks = [int(x) for x in line.split()[1:]]
                cores.append((sum(ticks) - ticks[3] - ticks[4], sum(ticks)))  # busy, all
        used = collections.Counter[str]()
        for pid, role in self.roles.items():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                used[role] += int(fields[11]) + int(fields[12])
        return cores, dict(used)

    def during(self, work: Any, requests: int) -> tuple[Any, dict[str, Any]]:
        cores0, used0 = self._sample()
        result = work()
        cores1, used1 = self._sample()
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        busy = [
            round((b1 - b0) / max(t1 - t0, 1), 2)
            for (b0, t0), (b1, t1) in zip(cores0, cores1, strict=True)
        ]
        per_request = {
            role: round((used1.get(role, 0) - used0.get(role, 0)) * tick_ms / requests, 2)
            for role in used1
        }
        return result, {"core_busy": busy, "cpu_ms_per_request": per_request}


def cpu_roles(group: int, via: str, gateway_too: bool) -> dict[int, str]:
    """Who to count: this process, the gateway listening at `via` (with `gateway_too`),
    and vLLM's processes (group `group`) but its workers."""
    roles = {os.getpid(): "clients"}
    for pid in _members(group):
        title = _comm(pid)
        if not title.startswith("VLLM::Worker"):
            roles[pid] = "vllm api server" if pid == group else title
    if gateway_too:
        port = int(via.rsplit(":", 1)[1].split("/")[0])
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                roles[conn.pid] = "gateway"
    return roles


def _members(group: int) -> list[int]:
    return [p.pid for p in psutil.process_iter() if _pgid(p.pid) == group]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _threads(pid: int) -> list[tuple[int, int, int]]:
    """(thread id, CPU ticks used so far, the core it last ran on) of each thread."""
    out = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                out.append((int(tid), int(fields[11]) + int(fields[12]), int(fields[36])))
    return out


def engine_steps(direct: str) -> tuple[float, float]:
    """(engine steps so far, tokens they computed), from vLLM's
    `vllm:iteration_tokens_total` histogram (one observation per engine step)."""
    steps = tokens = 0.0
    for line in get(direct, "/metrics").text.splitlines():
        if line.startswith("vllm:iteration_tokens_total_count"):
            steps += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:iteration_tokens_total_sum"):
            tokens += float(line.rsplit(" ", 1)[1])
    return steps, tokens


def rounds_of(
    direct: str,
    via: str,
    d_model: str,
    g_model: str,
    tokens: int,
    burst: int,
    rounds: int,
    where: Where | None,
    cpu: Cpu | None = None,
) -> dict[str, Any]:
    d_tps, g_tps, errors = [], [], 0
    d_where: list[dict[str, float]] = []
    g_where: list[dict[str, float]] = []
    steps: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
    used: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
    for i in range(rounds):
        order = [(direct, d_model, d_tps, d_where, "direct"),
                 (via, g_model, g_tps, g_where, "gateway")]  # fmt: skip
        for url, model, out, seen, path in order if i % 2 == 0 else reversed(order):
            payload = bodies(model, burst, tokens)
            before = engine_steps(direct)

            def run_burst(u: str = url, b: list[dict[str, Any]] = payload, into: str = path) -> Any:
                if cpu is None:
                    return load(u, b, 16)
                r, spent = cpu.during(lambda: load(u, b, 16), len(b))
                used[into].append(spent)
                return r

            if where is None:
                r = run_burst()
            else:
                r, shares = where.during(run_burst)
                seen.append(shares)
            after = engine_steps(direct)
            steps[path].append((after[0] - before[0], after[1] - before[1]))
            out.append(r.tokens_per_s)
            errors += r.errors
    ratios = [g / d for g, d in zip(g_tps, d_tps, strict=True)]
    d_med, g_med = statistics.median(d_tps), statistics.median(g_tps)
    return {
        "tokens": tokens,
        "rounds": rounds,
        "requests_per_burst": burst,
        "errors": errors,
        "ratio_median": round(statistics.median(ratios), 3),
        "ratios": [round(x, 3) for x in ratios],
        "direct_tokens_per_s_median": round(d_med, 1),
        "gateway_tokens_per_s_median": round(g_med, 1),
        "stalled_rounds_direct": sum(x < d_med / 2 for x in d_tps),
        "stalled_rounds_gateway": sum(x < g_med / 2 for x in g_tps),
        "direct_tokens_per_s": [round(x) for x in d_tps],
        "gateway_tokens_per_s": [round(x) for x in g_tps],
        "on_worker_cores_direct": d_where,
        "on_worker_cores_gateway": g_where,
        **{f"engine_steps_{path}": step_summary(seen) for path, seen in steps.items()},
        **{f"cpu_{path}": cpu_summary(spent) for path, spent in used.items()},
    }


def cpu_summary(spent: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per core, the median busy share of a burst; per process, the median CPU ms per
    request."""
    if not spent:
        return None
    cores = len(spent[0]["core_busy"])
    roles = sorted({role for s in spent for role in s["cpu_ms_per_request"]})
    return {
        "core_busy_median": [
            round(statistics.median(s["core_busy"][i] for s in spent), 2) for i in range(cores)
        ],
        "cpu_ms_per_request_median": {
            role: round(statistics.median(s["cpu_ms_per_request"].get(role, 0) for s in spent), 2)
            for role in roles
        },
    }


def step_summary(seen: list[tuple[float, float]]) -> dict[str, Any] | None:
    """Engine steps per burst and tokens per step; None where the backend has no such
    metric (`--instant`'s stand-in)."""
    if not any(n for n, _ in seen):
        return None
    return {
        "median": statistics.median(n for n, _ in seen),
        "tokens_per_step_median": round(statistics.median(t / n for n, t in seen if n), 2),
        "per_round": [int(n) for n, _ in seen],
    }


def vllm_group_of(url: str) -> int:
    """The process group of the vLLM server at `url` (a base URL or `unix:PATH`)."""
    where = url[len(UNIX) :] if url.startswith(UNIX) else url.rsplit(":", 1)[1].split("/")[0]
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "vllm.entrypoints.openai.api_server" in " ".join(cmd) and where in cmd:
            return os.getpgid(p.pid)
    raise RuntimeError(f"no vLLM server on {url}")


def free_cores(group: int) -> frozenset[int]:
    host = frozenset(range(os.cpu_count() or 1))
    members = {
        p.pid: (p.name(), [frozenset(os.sched_getaffinity(t.id)) for t in p.threads()])
        for p in psutil.process_iter()
        if _pgid(p.pid) == group
    }
    worker, free, _ = placement.split_cores(host, members)
    return free if worker else host


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def c1_spread(d_lat: list[float], g_lat: list[float], prefix: str) -> dict[str, Any]:
    """How far the c=1 figure can be trusted: the middle half of each path's latencies,
    and the median of the per-pair differences (each gateway request against the direct
    one just before it), which a slow drift of vLLM's own latency does not move."""
    q = [statistics.quantiles(x, n=4) for x in (d_lat, g_lat)]
    return {
        f"{prefix}_direct_p25_p75_ms": [ms(q[0][0]), ms(q[0][2])],
        f"{prefix}_gateway_p25_p75_ms": [ms(q[1][0]), ms(q[1][2])],
        f"{prefix}_added_pair_median_ms": ms(
            statistics.median(g - d for d, g in zip(d_lat, g_lat, strict=True))
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embedded", action="store_true", help="gateway launches its own vLLM")
    ap.add_argument(
        "--inprocess", action="store_true", help="the gateway inside vLLM's process (experiment)"
    )
    ap.add_argument("--placement", default="gateway+engine",
                    choices=["none", "gateway", "gateway+engine", "gateway+vllm",
                             "api-on-worker"])  # fmt: skip
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="4 rounds, fewer pairs")
    ap.add_argument(
        "--instant",
        action="store_true",
        help="front bench/instant_backend.py instead of vLLM: the gateway's own cost, "
        "free of contention with a real engine (the short workload only)",
    )
    args = ap.parse_args()
    flags = (("instant", args.instant), ("inprocess", args.inprocess), ("embedded", args.embedded))
    mode = next((name for name, given in flags if given), "backend")
    rounds, pairs = (4, 60) if args.quick else (args.rounds, 200)
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    fill_registry(work / "registry")
    s = settings(local_dtype="bfloat16", max_loaded_adapters=4)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]  # other work on the machine shows here
    if args.instant:
        ctx = _external(s, work, "none", instant=True)
    elif args.inprocess:
        ctx = _inprocess(s, work)
    elif args.embedded and args.placement == "api-on-worker":
        ap.error("--placement api-on-worker is a bench-only placement: --backend mode only")
    elif args.embedded:
        env = {"GATEWAY_CPU_PLACEMENT": args.placement, "GATEWAY_LOCAL__DTYPE": "bfloat16"}
        ctx = embedded_gateway(work / "registry", work / "cache", env)
    else:
        ctx = _external(s, work, args.placement)
    with ctx as (direct, via):
        free = frozenset(os.sched_getaffinity(0))
        if not args.instant:
            free = free_cores(vllm_group_of(direct))
        placement.pin_process(os.getpid(), free)  # the load generator: on the free cores
        warm = load(via, bodies(ADAPTER, 8, 8), 1)
        assert warm.errors == 0, "gateway warm-up failed"
        lora = next(
            (m["id"] for m in get(direct, "/v1/models").json()["data"]
             if m["id"].startswith(f"{ADAPTER}@")), ADAPTER,
        )  # fmt: skip
        load(direct, bodies(lora, 8, 8), 1)
        c1 = [((direct, d), (via, g)) for d, g in zip(
            bodies(BASE_NAME, pairs, 8), bodies(BASE_NAME, pairs, 8), strict=True)]  # fmt: skip
        d_lat, g_lat = interleaved(c1)
        d_gap, g_gap = interleaved(c1, gap_s=GAP_S)
        where = None
        if not args.instant:
            group = vllm_group_of(direct)
            where = Where(group, frozenset(range(os.cpu_count() or 1)) - free_cores(group))
        cpu = None
        if not args.instant and not args.inprocess:
            cpu = Cpu(cpu_roles(vllm_group_of(direct), via, gateway_too=True))
        short = rounds_of(direct, via, BASE_NAME, BASE_NAME, 8, 96, rounds, where, cpu)
        long = None
        if not args.instant:
            long = rounds_of(direct, via, lora, ADAPTER, 64, 48, rounds, where, cpu)
    print(
        json.dumps(
            {
                "bench": "gateway_overhead",
                "mode": mode,
                "placement": args.placement,
                "free_cores": sorted(free),
                "machine": machine(),
                "c1_pairs": pairs,
                "c1_direct_p50_ms": ms(statistics.median(d_lat)),
                "c1_gateway_p50_ms": ms(statistics.median(g_lat)),
                "c1_added_p50_ms": ms(statistics.median(g_lat) - statistics.median(d_lat)),
                "c1_spaced_gap_ms": ms(GAP_S),
                "c1_spaced_direct_p50_ms": ms(statistics.median(d_gap)),
                "c1_spaced_gateway_p50_ms": ms(statistics.median(g_gap)),
                "c1_spaced_added_p50_ms": ms(statistics.median(g_gap) - statistics.median(d_gap)),
                **c1_spread(d_lat, g_lat, "c1"),
                **c1_spread(d_gap, g_gap, "c1_spaced"),
                "c16_short": short,
                "c16_long": long,
                "wall_s": round(time.perf_counter() - started),
                "load_avg_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )


class _external:
    """vLLM started here, then `gateway serve --backend` placed by `mode`."""

    def __init__(self, s: Any, work: Path, mode: str, instant: bool = False) -> None:
        self.s, self.work, self.mode, self.instant = s, work, mode, instant

    def __enter__(self) -> tuple[str, str]:
        if self.instant:
            self._v = instant_backend(self.work / "instant.log")
        else:
            self._v = vllm(self.s, self.work / "vllm.log")
        v = self._v.__enter__()
        env = {}
        if self.mode != "none":
            group = vllm_group_of(v.url)
            free = free_cores(group)
            env["GATEWAY_CPU_AFFINITY"] = ",".join(map(str, sorted(free)))
        if self.mode in ("gateway+engine", "gateway+vllm"):
            placement.apply(vllm_group_of(v.url), self.mode, this=False)
        if self.mode == "api-on-worker":  # the group's leader is vLLM's API server
            group = vllm_group_of(v.url)
            placement.pin_process(group, frozenset(range(os.cpu_count() or 1)) - free)
        self._g = gateway(self.work / "registry", v.url, self.work / "cache", env)
        g = self._g.__enter__()
        return v.url, g.url

    def __exit__(self, *exc: object) -> None:
        self._g.__exit__(*exc)
        self._v.__exit__(*exc)


@contextlib.contextmanager
def _inprocess(s: Any, work: Path) -> Any:
    """vLLM with the gateway as its middleware (bench/inprocess_gateway.py): yields (its
    `/direct` prefix, its own URL) once the gateway in it is ready."""
    port = free_port()
    cmd = [*vllm_command(s, BASE_DIR, BASE_NAME, port),
           "--middleware", "inprocess_gateway.Middleware"]  # fmt: skip
    env = {
        **vllm_env(),
        "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}",
        "GATEWAY_REGISTRY": str(work / "registry"),
        "GATEWAY_BASE": BASE_NAME,
        "GATEWAY_BACKENDS": '["http://in-process"]',
        "GATEWAY_CACHE_DIR": str(work / "cache"),
        "GATEWAY_MAX_LOADED_ADAPTERS": "4",
    }
    with serving(cmd, port, work / "vllm.log", "/health", env, VLLM_START_TIMEOUT_S) as v:
        wait_for(f"{v.url}/gw/ready", 300, v.popen)
        yield f"{v.url}/direct", v.url


if __name__ == "__main__":
    main()
