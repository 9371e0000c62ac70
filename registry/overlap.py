"""Work on a stream's pieces behind the stream: one worker thread runs a function on each
piece, in order, while the caller fetches the next. hashlib and os.write release the GIL,
so hashing and writing a piece overlap sending or receiving the next one (a pull over
HTTP: 0.42 s for 192 MiB done one after the other on this machine; see bench/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType


class Behind:
    """``with Behind(fn) as behind: behind.put(piece) ...``: ``fn(piece)`` for each piece
    on one worker thread, in order, with at most one piece waiting. An error in ``fn``
    comes out of the next ``put`` or of the block's end; the block never ends while the
    worker still runs (so a file it writes is never closed under it)."""

    def __init__(self, fn: Callable[[bytes], None]) -> None:
        self._fn = fn
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="loraport-piece")
        self._pending: Future[None] | None = None

    def put(self, piece: bytes) -> None:
        self.wait()
        self._pending = self._pool.submit(self._fn, piece)

    def wait(self) -> None:
        """Until every piece put so far is done (raising what ``fn`` raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> Behind:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                self.wait()
            elif self._pending is not None:
                self._pending.exception()  # let it finish; the block's own error wins
        finally:
            self._pool.shutdown(wait=True)
