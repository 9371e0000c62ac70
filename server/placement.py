"""Where processes run when the gateway shares a CPU host with vLLM.

vLLM's CPU worker binds its OpenMP threads to some cores and spins on them while it
generates (its log: `OpenMP thread binding info ... core ids=[0]`, `reserved_cpus=[1]`).
Any process the scheduler puts on a worker core starves: the gateway on the worker's core
served 0.09x of vLLM's direct throughput (docs/vllm.md, "CPU placement"). vLLM's engine
core, for its part, polls for its worker's answers with `sched_yield` for a second after
each one (vLLM's `SpinCondition`): wherever the OS puts it, it takes a core, and on the
free core it used 28 ms of CPU per 34 ms request (bench/README.md, "The engine core's
spin"), which everything else there (vLLM's API server, the gateway, clients) then waits
behind. The rule, measured in `bench/gateway_overhead.py` (figures in
bench/README.md):

- the worker's cores are the ones its threads are bound to (affinity narrower than the
  host's; the worker is the process titled `VLLM::Worker`); every other core is free;
- `gateway+engine` (the default): the gateway's own threads go to the free cores, and
  vLLM's engine core (titled `VLLM::EngineCor...`) to the worker's cores, where its
  yields hand the core back to the worker. Measured on 2 cores: vLLM's own short-request
  throughput 1.3-2.7x that of `gateway` in the same sitting, per-round ratios within
  0.79-1.11 where `gateway` swung 0.24-3.77; a lone request about 8% slower;
- `gateway`: the gateway alone goes to the free cores; the engine core floats;
- `gateway+vllm`: the gateway, vLLM's API server and its engine core all go to the free
  cores (everything in the server's process group that is not bound to worker cores).
  Measured worse: everything but the worker then shares the free cores;
- nothing happens where no vLLM process is bound to a subset of the cores (a GPU host,
  or a vLLM that did not bind): `apply` then returns a placement with no worker cores.

For a gateway beside an external vLLM on one host, `cpu_affinity` names the gateway's
cores outright (and vLLM's engine core is that vLLM's operator's to place).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger("loraport.gateway")

Mode = Literal["none", "gateway", "gateway+engine", "gateway+vllm"]


@dataclass(frozen=True)
class Placement:
    worker_cores: frozenset[int]
    free_cores: frozenset[int]
    moved: tuple[int, ...]
    """PIDs whose threads were moved to the free cores (the gateway's own included)."""
    beside_worker: tuple[int, ...] = ()
    """PIDs whose threads were moved to the worker's cores (vLLM's engine core)."""


def parse_cpus(text: str) -> frozenset[int]:
    """`"1"`, `"0,2"`, `"2-7"`, `"0-1,4"` as a set of core numbers."""
    cores: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"not a CPU list: {text!r} (use e.g. 1 or 2-7 or 0,2)")
        cores.update(range(int(low), int(high or low) + 1))
    if not cores:
        raise ValueError(f"empty CPU list: {text!r}")
    return frozenset(cores)


WORKER_TITLE = "VLLM::Worker"
"""vLLM's process title for its model worker (`/proc/PID/comm`)."""
ENGINE_TITLE = "VLLM::EngineCor"
"""vLLM's engine core (`VLLM::EngineCore`, cut to 15 characters in `/proc/PID/comm`)."""


def split_cores(
    host: frozenset[int], members: dict[int, tuple[str, list[frozenset[int]]]]
) -> tuple[frozenset[int], frozenset[int], list[int]]:
    """(worker cores, free cores, PIDs to move), from each process's title and its threads'
    affinities. Workers are the processes with a thread bound narrower than the host and
    titled as vLLM's worker (any bound process, where none is titled so): after a
    placement the moved processes are bound too, and must not count. Pure."""
    bound = {pid: [a for a in affinities if a < host] for pid, (_, affinities) in members.items()}
    titled = {pid for pid, (title, _) in members.items() if title.startswith(WORKER_TITLE)}
    workers = {pid for pid, b in bound.items() if b and (pid in titled or not titled)}
    worker: set[int] = set()
    movable = []
    for pid in members:
        if pid in workers:
            worker.update(*bound[pid])
        else:
            movable.append(pid)
    if not worker:
        return frozenset(), host, []
    return frozenset(worker), host - worker, sorted(movable)


def moves(
    mode: Mode, this: int | None, titles: dict[int, str], movable: list[int]
) -> tuple[list[int], list[int]]:
    """(PIDs for the free cores, PIDs for the worker's cores) under `mode`: `this` is the
    gateway's own PID (None: not placed), `movable` vLLM's processes not bound to worker
    cores, `titles` their process titles. Pure."""
    if mode == "none":
        return [], []
    own = [this] if this is not None else []
    if mode == "gateway+vllm":
        return own + movable, []
    if mode == "gateway+engine":
        return own, [pid for pid in movable if titles[pid].startswith(ENGINE_TITLE)]
    return own, []


def apply(group: int, mode: Mode = "gateway+engine", *, this: bool = True) -> Placement | None:
    """Place this process (the gateway; not with `this=False`) and, by `mode`, vLLM's
    non-worker processes of process group `group` (see the module docstring). None when
    there is nothing to do."""
    if mode == "none":
        return None
    host = frozenset(os.sched_getaffinity(0)) | _all_cores()
    members = {pid: (_title(pid), _thread_affinities(pid)) for pid in _group_members(group)}
    worker, free, movable = split_cores(host, members)
    if not worker or not free:
        log.info("cpu placement: no vLLM worker bound to a subset of the cores; nothing moved")
        return None
    titles = {pid: title for pid, (title, _) in members.items()}
    to_free, to_worker = moves(mode, os.getpid() if this else None, titles, movable)
    moved = tuple(pid for pid in to_free if pin_process(pid, free))
    beside = tuple(pid for pid in to_worker if pin_process(pid, worker))
    log.info(
        "cpu placement (%s): vLLM worker on cores %s; processes %s moved to cores %s%s",
        mode, sorted(worker), list(moved), sorted(free),
        f", vLLM's engine core {list(beside)} beside the worker" if beside else "",
    )  # fmt: skip
    return Placement(worker, free, moved, beside)


def pin_process(pid: int, cores: frozenset[int]) -> bool:
    """Every thread of `pid` onto `cores` (threads made later inherit it). False if the
    process is gone."""
    tids = _tids(pid)
    for tid in tids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(tid, cores)
    return bool(tids)


def unpin() -> None:
    """Let the calling process run on every online core (a child's pre-exec hook)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, _all_cores())


def _all_cores() -> frozenset[int]:
    try:
        return parse_cpus(Path("/sys/devices/system/cpu/online").read_text().strip())
    except (OSError, ValueError):
        return frozenset(range(os.cpu_count() or 1))


def _tids(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _thread_affinities(pid: int) -> list[frozenset[int]]:
    out = []
    for tid in _tids(pid):
        with contextlib.suppress(OSError):
            out.append(frozenset(os.sched_getaffinity(tid)))
    return out


def _group_members(group: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == group:  # after "pid (comm)": state, ppid, pgrp
            members.append(int(entry))
    return members
