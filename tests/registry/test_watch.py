"""The change token, its watch and the registry's clock behave alike on a directory and
through a service: what a gateway's resolver and deploy's controller stand on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

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
