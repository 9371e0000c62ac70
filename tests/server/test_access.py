"""x-request-id: a client's plausible id is kept, anything else replaced (pure); the
access log's writer: logging's line format, one write per step of the event loop."""

import asyncio
import logging
import os
import re
import threading

import pytest

from server.access import AccessLog, request_id


@pytest.mark.parametrize("given", [b"abc-123", b"req_7f3a", b"x" * 128])
def test_plausible_ids_are_kept(given):
    assert request_id(given) == given


@pytest.mark.parametrize("given", [None, b"", b"x" * 129, b"has space", b"new\nline", b"\xff"])
def test_others_are_replaced(given):
    made = request_id(given)
    assert made != given and len(made) == 32 and made.isalnum()


def _logged_line() -> str:
    """The line `logging` made with the gateway's format (as `gateway serve` sets it)."""
    record = logging.LogRecord("loraport.access", logging.INFO, __file__, 0, "msg", (), None)
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)


def test_lines_keep_the_log_format_and_leave_in_one_write_per_loop_step(monkeypatch):
    read, write = os.pipe()
    writes = []
    real_write = os.write

    def counting(fd, data):
        writes.append(len(data))
        return real_write(fd, data)

    async def main():
        log = AccessLog(write)
        for i in range(3):
            log.line(b"rid-%d" % i, "POST", "/v1/chat/completions", 200, b"triage@2", 1.25)
        assert not writes  # nothing written inside the step
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        log.line(b"rid-3", "GET", "/health", 499, b"-", 0.04)
        log.flush()  # as on shutdown

    monkeypatch.setattr(os, "write", counting)
    asyncio.run(main())
    monkeypatch.undo()
    os.close(write)
    lines = os.read(read, 1 << 16).decode().splitlines()
    os.close(read)
    assert len(writes) == 2, writes  # three lines in one write, then the fourth
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(stamp + r" INFO loraport\.access: msg", _logged_line())
    assert re.fullmatch(
        stamp + r' INFO loraport\.access: rid-0 "POST /v1/chat/completions" 200 triage@2 1\.2ms',
        lines[0],
    ), lines[0]
    assert lines[3].endswith('rid-3 "GET /health" 499 - 0.0ms')


def test_a_full_pipe_gets_every_byte_and_a_closed_one_loses_only_lines():
    """More than a pipe holds in one step: every line arrives whole (a partial write goes
    on). Then with no reader left the lines are dropped, without an error."""
    read, write = os.pipe()
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(b"".join(iter_read(read))))
    reader.start()

    async def main(fd):
        log = AccessLog(fd)
        for i in range(5000):  # about 400 KB, several times a pipe's 64 KiB
            log.line(b"r%05d" % i, "POST", "/v1/completions", 200, b"x" * 40, 3.0)
        await asyncio.sleep(0)

    asyncio.run(main(write))
    os.close(write)
    reader.join(10)
    lines = got.decode().splitlines()
    assert len(lines) == 5000 and all(f"r{i:05d} " in lines[i] for i in range(5000))
    read, write = os.pipe()
    os.close(read)  # the reader is gone: EPIPE
    asyncio.run(main(write))  # no exception
    os.close(write)


def iter_read(fd):
    while chunk := os.read(fd, 1 << 16):
        yield chunk
    os.close(fd)


def test_a_path_with_control_characters_cannot_forge_a_line():
    """uvicorn hands the app the percent-decoded path: `/x%0A2026-... INFO ...` would have
    started a line of the client's own making."""
    read, write = os.pipe()

    async def main():
        log = AccessLog(write)
        log.line(b"rid", "GET", "/x\n2026-01-01 00:00:00,000 INFO loraport.access: forged\r",
                 404, b"-", 0.1)  # fmt: skip
        log.line(b"rid2", "GET", "/caf\u00e9", 404, b"-", 0.1)

    asyncio.run(main())
    os.close(write)
    lines = os.read(read, 1 << 16).decode().splitlines()
    os.close(read)
    assert len(lines) == 2, lines
    assert '"GET /x\\n2026-01-01 00:00:00,000 INFO loraport.access: forged\\r" 404' in lines[0]
    assert '"GET /caf\u00e9" 404' in lines[1]  # printable non-ASCII stays as it is
