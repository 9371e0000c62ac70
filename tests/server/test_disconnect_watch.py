"""server/serving.py `_unless_disconnected`: the answer, or None once the client has gone
(its work then cancelled). Under `gateway serve` the connection tells (the DISCONNECT
extension, tested under a real uvicorn in test_http_protocol.py and end to end in
test_hardening.py); under another server a watcher task waits for the disconnect
message. Both against a scripted connection and receive here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from server.http_protocol import DISCONNECT
from server.serving import _unless_disconnected


class Connection:
    def __init__(self, gone: bool = False) -> None:
        self.gone = gone
        self.lost: Callable[[], None] | None = None
        self.unwatched = False

    def watch(self, lost: Callable[[], None]) -> bool:
        if self.gone:
            return False
        self.lost = lost
        return True

    def unwatch(self) -> None:
        self.unwatched = True
        self.lost = None


async def work(log: list[str], seconds: float = 0.05) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        log.append("cancelled")
        raise
    return "answer"


def test_with_the_connection_told() -> None:
    async def main() -> None:
        log: list[str] = []
        stays = Connection()
        scope = {"extensions": {DISCONNECT: stays}}
        assert await _unless_disconnected(scope, _never, work(log)) == "answer"
        assert stays.unwatched and log == []

        leaves = Connection()
        scope = {"extensions": {DISCONNECT: leaves}}
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, lambda: leaves.lost and leaves.lost())
        assert await _unless_disconnected(scope, _never, work(log, 5)) is None
        assert log == ["cancelled"] and leaves.unwatched
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

        gone = Connection(gone=True)
        pending = work(log)
        scope = {"extensions": {DISCONNECT: gone}}
        assert await _unless_disconnected(scope, _never, pending) is None
        assert pending.cr_frame is None  # closed, never run

    asyncio.run(main())


def test_with_a_watcher_task_under_another_server() -> None:
    async def main() -> None:
        log: list[str] = []
        assert await _unless_disconnected({}, _never, work(log)) == "answer"
        assert await _unless_disconnected({}, _disconnect_after(0.01), work(log, 5)) is None
        assert log == ["cancelled"]
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        # a disconnect just after the answer is not taken for one during it
        assert await _unless_disconnected({}, _disconnect_after(0.0), work(log, 0)) == "answer"
        await asyncio.sleep(0.05)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


async def _never() -> dict[str, str]:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


def _disconnect_after(seconds: float):  # type: ignore[no-untyped-def]
    async def receive() -> dict[str, str]:
        await asyncio.sleep(seconds)
        return {"type": "http.disconnect"}

    return receive
