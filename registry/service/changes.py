"""The change token for every watcher of one server, read once per poll.

`GET /v1/changes?since=N&timeout=S` is a long poll that each gateway keeps open. Read
once per watcher every 50 ms, a server with a hundred gateways attached would ask its
database two thousand times a second for one number; here one poller reads it for all of
them while any waits, and wakes them when it moves. The poller runs only while someone
waits, and a failed read (the database down) is given to every waiter as it is, so a
watch fails exactly as a single read would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

Read = Callable[[], Awaitable[int]]
#: How often a waiter checks that its client is still there (seconds).
CLIENT_CHECK_S = 1.0


class ChangeFeed:
    def __init__(self, read: Read, poll_s: float) -> None:
        self._read = read
        self._poll_s = poll_s
        self._waiters = 0
        self._moved = asyncio.Event()
        self._last: int | BaseException | None = None
        self._poller: asyncio.Task[None] | None = None

    async def wait(
        self,
        since: int,
        timeout_s: float,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> int | None:
        """The token once it is not ``since``, or the token at ``timeout_s``; None when
        ``gone()`` says the client left. Raises what reading the token raised."""
        deadline = time.monotonic() + timeout_s
        self._waiters += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())
        stale = self._last if isinstance(self._last, BaseException) else None
        try:
            while True:
                moved = self._moved  # the event of the next change: taken before looking
                last = self._last
                if isinstance(last, BaseException):
                    if last is not stale:  # a failure before this watcher came is not its
                        raise last
                    last = None
                left = deadline - time.monotonic()
                if (last is not None and last != since) or left <= 0:
                    return last if last is not None else await self._read()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(moved.wait(), min(left, CLIENT_CHECK_S))
                if gone is not None and not moved.is_set() and await gone():
                    return None
        finally:
            self._waiters -= 1

    async def _poll(self) -> None:
        """Read the token every poll while anyone waits; wake them all on a change or a
        failure. A fresh feed starts from no token, so its first read wakes everyone to
        compare with their own ``since``."""
        self._last = None
        try:
            while self._waiters > 0:
                try:
                    token: int | BaseException = await self._read()
                except Exception as exc:  # handed to every waiter, which raises it
                    token = exc
                if token != self._last or isinstance(token, BaseException):
                    self._last = token
                    moved, self._moved = self._moved, asyncio.Event()
                    moved.set()
                await asyncio.sleep(self._poll_s)
        finally:  # ended or cancelled (shutdown): a later poller starts from no token
            self._last = None
