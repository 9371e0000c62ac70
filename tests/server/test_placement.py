"""CPU placement beside vLLM's bound worker (pure parts, and pinning this process)."""

from __future__ import annotations

import os

import pytest

from server.placement import moves, parse_cpus, pin_process, split_cores
from server.vllm_http import BackendState

HOST = frozenset({0, 1})


@pytest.mark.parametrize(
    ("text", "cores"),
    [("1", {1}), ("0,2", {0, 2}), ("2-4", {2, 3, 4}), ("0-1, 4", {0, 1, 4})],
)
def test_parse_cpus(text, cores):
    assert parse_cpus(text) == cores


@pytest.mark.parametrize("bad", ["", "a", "1-", "-1", "1-x", ","])
def test_parse_cpus_refuses(bad):
    with pytest.raises(ValueError):
        parse_cpus(bad)


def test_the_bound_worker_decides_what_is_free():
    members = {
        10: ("python", [HOST] * 8),  # API server: floats
        11: ("VLLM::EngineCor", [HOST] * 7),  # engine core: floats
        12: ("VLLM::Worker", [frozenset({0})]),  # bound by vLLM's OpenMP set-up
    }
    worker, free, movable = split_cores(HOST, members)
    assert (worker, free, movable) == ({0}, {1}, [10, 11])


def test_moved_processes_do_not_count_as_workers():
    """After a placement the API server and engine core are bound to the free core too."""
    members = {
        10: ("python", [frozenset({1})] * 8),
        11: ("VLLM::EngineCor", [frozenset({1})] * 7),
        12: ("VLLM::Worker", [frozenset({0})]),
    }
    assert split_cores(HOST, members) == ({0}, {1}, [10, 11])


def test_an_untitled_bound_process_is_the_worker():
    members = {10: ("python", [HOST]), 12: ("python", [frozenset({0})])}
    assert split_cores(HOST, members) == ({0}, {1}, [10])


def test_nothing_moves_where_nothing_is_bound():
    """A GPU host, or a vLLM that did not bind: no worker cores, nothing to move."""
    members = {10: ("python", [HOST]), 11: ("VLLM::Worker", [HOST])}
    assert split_cores(HOST, members) == (frozenset(), HOST, [])


def test_pin_process_moves_every_thread():
    before = os.sched_getaffinity(0)
    one = frozenset({min(before)})
    try:
        assert pin_process(os.getpid(), one)
        tids = os.listdir(f"/proc/{os.getpid()}/task")
        assert all(os.sched_getaffinity(int(t)) == one for t in tids)
    finally:
        pin_process(os.getpid(), frozenset(before))
    assert not pin_process(2**22 + 12345, one)  # no such process


TITLES = {10: "python", 11: "VLLM::EngineCor"}


@pytest.mark.parametrize(
    ("mode", "this", "to_free", "to_worker"),
    [
        ("gateway+engine", 99, [99], [11]),  # the default: the engine core beside the worker
        ("gateway+engine", None, [], [11]),
        ("gateway", 99, [99], []),
        ("gateway+vllm", 99, [99, 10, 11], []),
        ("none", 99, [], []),
    ],
)
def test_what_each_mode_moves(mode, this, to_free, to_worker):
    assert moves(mode, this, TITLES, [10, 11]) == (to_free, to_worker)


def test_only_the_engine_core_goes_beside_the_worker():
    titles = {10: "python", 11: "VLLM::EngineCor", 12: "VLLM::EngineCor", 13: "pt_main_thread"}
    assert moves("gateway+engine", 1, titles, [10, 11, 12, 13]) == ([1], [11, 12])


def test_a_launched_server_is_not_ready_until_placed():
    """The supervisor holds its new vLLM out of rotation until its processes are placed:
    /ready once said yes while the engine core still ran on the gateway's core."""
    state = BackendState()
    state.launched()
    state.answering_health(True)
    state.serving("base", 2048)
    assert state.up and not state.ready
    state.placed()
    assert state.ready
