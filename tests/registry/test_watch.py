"""The change token, its watch and the registry's clock behave alike on a directory and
through a service: what a gateway's resolver and deploy's controller stand on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import registry
from registry.local import WATCH_POLL_S, LocalRegistry
from registry.location import open_local
from registry.protocol import Registry


def test_the_token_moves_on_each_write_and_not_on_reads(
    reg: Registry, make_adapter: Callable[..., Path]
) -> None:
    first = reg.change_token()
    reg.list_adapters()
    reg.resolve("tiny-base")
    assert reg.change_token() == first
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    second = reg.change_token()
    assert second != first
    reg.set_alias("support", "staging", 1)
    assert reg.change_token() not in (first, second)


def test_a_watch_answers_at_once_when_behind_and_waits_out_its_timeout_otherwise(
    reg: Registry, make_adapter: Callable[..., Path]
) -> None:
    old = reg.change_token()
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    started = time.monotonic()
    assert reg.wait_for_change(old, timeout_s=30) == reg.change_token()
    assert time.monotonic() - started < 5  # not the timeout
    now = reg.change_token()
    started = time.monotonic()
    assert reg.wait_for_change(now, timeout_s=0.3) == now
    assert 0.25 <= time.monotonic() - started < 3


def test_a_write_ends_a_watch(reg: Registry, make_adapter: Callable[..., Path]) -> None:
    now = reg.change_token()
    path = make_adapter("support")
    writer = threading.Timer(0.3, lambda: reg.push_adapter(path, dataset="support-data"))
    started = time.monotonic()
    writer.start()
    try:
        moved = reg.wait_for_change(now, timeout_s=30)
    finally:
        writer.join()
    assert moved != now and time.monotonic() - started < 10  # the write, not the timeout
    assert moved == reg.change_token()


def test_the_clock_is_the_one_timestamps_are_written_with(
    reg: Registry, make_adapter: Callable[..., Path]
) -> None:
    before = reg.clock()
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    after = reg.clock()
    stamped = datetime.fromisoformat(reg.events("support")[-1].at).timestamp()
    assert before - 1 <= stamped <= after + 1
    assert abs(after - time.time()) < 5  # one machine here: the same clock, give or take


def test_a_directory_watch_sees_each_write_of_another_connection_within_polls(
    local_reg: LocalRegistry,
    reg_path: Path,
    settings: registry.RegistrySettings,
    make_adapter: Callable[..., Path],
) -> None:
    """Pushes and alias moves through another connection (as another process's), one
    after another: each ends the watch within a poll or two (WATCH_POLL_S)."""
    with open_local(reg_path, settings=settings) as other:
        for i in range(6):  # pushes and alias moves, alternating
            now = local_reg.change_token()
            path = make_adapter("support", seed=i)  # new content: a new version
            done: list[float] = []

            def write(i: int = i, path: Path = path, done: list[float] = done) -> None:
                if i % 2 == 0:
                    other.push_adapter(path, dataset="support-data")
                else:
                    other.set_alias("support", "staging", 1 + i // 2)
                done.append(time.monotonic())

            writer = threading.Timer(0.2, write)
            writer.start()
            try:
                moved = local_reg.wait_for_change(now, timeout_s=10)
                seen = time.monotonic()
            finally:
                writer.join()
            assert moved == other.change_token() != now
            assert seen - done[0] < 2 * WATCH_POLL_S + 0.3, seen - done[0]  # a poll or two
