"""For bench/hop_calls.py: a process started with this directory on PYTHONPATH and
`CALL_COUNT_OUT` set counts the function calls its main thread makes (Python functions
by name and file, C functions by name) between SIGUSR1 and SIGUSR2, and on SIGUSR2 writes
them to `$CALL_COUNT_OUT.<pid>.json`. Python imports `sitecustomize` at start-up from the
path; the product's code is not changed. Calls, unlike CPU time, do not move with the
machine's load: a lever that removes work shows in them in one run."""

from __future__ import annotations

import os

_OUT = os.environ.get("CALL_COUNT_OUT")

if _OUT:
    import collections
    import json
    import signal
    import sys
    from types import FrameType
    from typing import Any

    _counts: collections.Counter[str] = collections.Counter()

    def _count(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":  # a coroutine's every resumption counts as a call
            code = frame.f_code
            _counts[f"{code.co_name} {code.co_filename}"] += 1
        elif event == "c_call":
            _counts[f"C {getattr(arg, '__qualname__', '?')}"] += 1

    def _start(*_: Any) -> None:
        _counts.clear()
        sys.setprofile(_count)

    def _stop(*_: Any) -> None:
        sys.setprofile(None)
        path = f"{_OUT}.{os.getpid()}.json"
        with open(f"{path}.part", "w") as f:
            json.dump(_counts.most_common(), f)
        os.replace(f"{path}.part", path)  # a reader never sees half of it

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
