"""registry.overlap.Behind: pieces handled in order on one thread, errors surfaced, and
the block never ends while its worker still runs."""

from __future__ import annotations

import threading
import time

import pytest

from registry.overlap import Behind


def test_pieces_are_handled_in_order_off_the_callers_thread() -> None:
    seen: list[tuple[bytes, str]] = []
    with Behind(lambda p: seen.append((p, threading.current_thread().name))) as behind:
        for i in range(50):
            behind.put(bytes([i]))
    assert [p for p, _ in seen] == [bytes([i]) for i in range(50)]
    assert all(name.startswith("loraport-piece") for _, name in seen)


def test_an_error_in_the_worker_comes_out_of_the_next_put_or_the_end() -> None:
    def fail_on_two(piece: bytes) -> None:
        if piece == b"2":
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), Behind(fail_on_two) as behind:
        for piece in (b"1", b"2", b"3"):
            behind.put(piece)
    with pytest.raises(OSError, match="disk full"), Behind(fail_on_two) as behind:
        behind.put(b"2")


def test_the_block_waits_for_the_worker_even_when_the_caller_fails() -> None:
    done: list[bytes] = []

    def slow(piece: bytes) -> None:
        time.sleep(0.2)
        done.append(piece)

    with pytest.raises(KeyError), Behind(slow) as behind:
        behind.put(b"x")
        raise KeyError("the caller's own error wins")
    assert done == [b"x"]  # finished before the block ended
