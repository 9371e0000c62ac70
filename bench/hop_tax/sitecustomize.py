"""For bench/gateway_rounds.py `--tax`: a gateway started with this directory on
PYTHONPATH spends `HOP_TAX_BURN_US` microseconds of CPU (a busy loop), and/or waits
`HOP_TAX_SLEEP_US` microseconds without CPU, on every completion request before serving
it. Which of the two the short-request ratio at concurrency 16 follows tells whether the
gateway costs vLLM throughput by its CPU or by its latency. Python imports
`sitecustomize` at start-up from the path; the product's code is not changed."""

from __future__ import annotations

import os

_BURN_S = float(os.environ.get("HOP_TAX_BURN_US", "0")) / 1e6
_SLEEP_S = float(os.environ.get("HOP_TAX_SLEEP_US", "0")) / 1e6

if _BURN_S or _SLEEP_S:
    import asyncio
    import time
    from typing import Any

    from server import app

    _inner = app.GatewayApp.__call__

    async def _taxed(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in app.HOT_PATHS:
            if _BURN_S:
                start = time.perf_counter()
                while time.perf_counter() - start < _BURN_S:
                    pass
            if _SLEEP_S:
                await asyncio.sleep(_SLEEP_S)
        await _inner(self, scope, receive, send)

    app.GatewayApp.__call__ = _taxed  # type: ignore[method-assign]
