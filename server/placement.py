"""Where processes run when the gateway shares a CPU host with vLLM.

vLLM's CPU worker binds its OpenMP threads to some cores and spins on them while it
generates (its log: `OpenMP thread binding info ... core ids=[0]`, `reserved_cpus=[1]`).
Any process the scheduler puts on a worker core starves: the gateway on the worker's core
served 0.09x of vLLM's direct throughput (docs/vllm.md, "CPU placement"). The rule, measured in
`bench/gateway_overhead.py` (figures in bench/README.md):

- the worker's cores are the ones its threads are bound to (affinity narrower than the
  host's; the worker is the process titled `VLLM::Worker`); every other core is free;
- `gateway` (the default): the gateway's own threads go to the free cores;
- `gateway+vllm`: so do vLLM's API server and engine-core processes (everything in the
  server's process group that is not bound to worker cores). Measured worse: everything
  but the worker then shares the free cores, and vLLM's own request handling needs CPU;
- nothing happens where no vLLM process is bound to a subset of the cores (a GPU host,
  or a vLLM that did not bind): `apply` then returns a placement with no worker cores.

For a gateway beside an external vLLM on one host, `cpu_affinity` names the gateway's
cores outright.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger("loraport.gateway")

Mode = Literal["none", "gateway", "gateway+vllm"]


@dataclass(frozen=True)
class Placement:
    worker_cores: frozenset[int]
    free_cores: frozenset[int]
    moved: tuple[int, ...]
    """PIDs whose threads were moved to the free cores (the gateway's own included)."""


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


def apply(group: int, mode: Mode = "gateway", *, this: bool = True) -> Placement | None:
    """Place this process (the gateway; not with `this=False`) and, by `mode`, vLLM's
    non-worker processes of process group `group` on the cores vLLM's worker leaves free.
    None when there is nothing to do."""
    if mode == "none":
        return None
    host = frozenset(os.sched_getaffinity(0)) | _all_cores()
    members = {pid: (_title(pid), _thread_affinities(pid)) for pid in _group_members(group)}
    worker, free, movable = split_cores(host, members)
    if not worker or not free:
        log.info("cpu placement: no vLLM worker bound to a subset of the cores; nothing moved")
        return None
    targets = ([os.getpid()] if this else []) + (movable if mode == "gateway+vllm" else [])
    moved = tuple(pid for pid in targets if pin_process(pid, free))
    log.info(
        "cpu placement (%s): vLLM worker on cores %s; processes %s moved to cores %s",
        mode, sorted(worker), list(moved), sorted(free),
    )  # fmt: skip
    return Placement(worker, free, moved)


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
