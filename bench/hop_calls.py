"""Function calls per request: the gateway against the bare uvicorn hop (bench/hop_floor.py's
`asgi`: the gateway's protocol and client, no logic), both in front of
bench/instant_backend.py answering after 35 ms. Prints one JSON line.

    .venv/bin/python bench/hop_calls.py [--requests 1000] [--concurrency 16] [--top 15]

What separates the gateway from the bare hop next to a real vLLM is the CPU its features
cost per request (bench/README.md, "The stack meets the target, the gateway's features
do not"). CPU time per request moves by 10-30% between batches with the machine's load;
the calls a request makes do not. Each process counts the calls of its main thread over
one batch (bench/call_count/sitecustomize.py, through `sys.setprofile`, which slows the
process: CPU is not measured here), and the script reports per request: Python calls (a
coroutine's every resumption counts as one), C calls, the calls into the product's own
modules (`server/`) and how many of its functions they reach, calls by module (the
file's last two path parts; `C` for builtins), and the functions called most. A lever
that removes work shows in one run. Also timed, in this process: a few pieces of the
request path (`pieces_us`), to show their size.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import psutil
from gateway_cpu import bodies, drive
from harness import ROOT, fill_registry, gateway, instant_backend, machine
from hop_floor import hop

COUNTER = ROOT / "bench" / "call_count"


def module_of(key: str) -> str:
    """`C` for a builtin, else the last two parts of the function's file (pure)."""
    if key.startswith("C "):
        return "C"
    path = key.split(" ", 1)[1]
    return "/".join(Path(path).parts[-2:])


def summarise(counts: list[tuple[str, int]], requests: int, top: int) -> dict[str, Any]:
    """Per request: Python and C calls, the calls into the product's `server/` modules and
    how many of its functions they reach, and by module and by function the `top` of
    each (pure)."""
    per = collections.Counter[str]()
    python = c = own = 0
    own_functions = 0
    for key, n in counts:
        module = module_of(key)
        per[module] += n
        if key.startswith("C "):
            c += n
        else:
            python += n
        if module.startswith("server/"):
            own += n
            own_functions += 1

    def rate(n: int) -> float:
        return round(n / requests, 2)

    return {
        "python_calls_per_request": rate(python),
        "c_calls_per_request": rate(c),
        "server_calls_per_request": rate(own),
        "server_functions_called": own_functions,
        "by_module": {m: rate(n) for m, n in per.most_common(top)},
        "functions": {
            (k if k.startswith("C ") else f"{k.split(' ', 1)[0]} ({module_of(k)})"): rate(n)
            for k, n in counts[:top]
        },
    }


def pieces() -> dict[str, float]:
    """Microseconds per call of a few pieces of the gateway's request path, in this
    process (timeit, best of 5): each is small; their number is what counts."""
    from server.access import request_id
    from server.containment import client_shaped, response_problem
    from server.protocol import parse, renamed
    from server.vllm_http import _encode, json_object

    raw = bodies(1)[0]
    body, _ = parse("chat", raw)
    answer = json.dumps(
        {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "tiny",
         "choices": [{"index": 0, "message": {"role": "assistant",
                                              "content": "Hello there, how can I"},
                      "finish_reason": "length"}],
         "usage": {"prompt_tokens": 30, "total_tokens": 38, "completion_tokens": 8}},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    cases: dict[str, Any] = {
        "parse and validate the request": lambda: parse("chat", raw),
        "encode the forward": lambda: _encode(dict(body)),
        "rename the answer's model": lambda: renamed(answer, "tiny", "tiny-base@1"),
        "read the answer": lambda: json_object("/v1/chat/completions", answer),
        "client_shaped + response_problem": lambda: (
            client_shaped(body),
            response_problem([("Hello there, how can I", "length")], 8, False),
        ),
        "request id": lambda: request_id(None),
    }
    return {
        name: round(min(timeit.repeat(f, number=20000, repeat=5)) / 20000 * 1e6, 2)
        for name, f in cases.items()
    }


def counted(pid: int, out: str, url: str, payloads: list[bytes], concurrency: int) -> list[Any]:
    """The calls process `pid` made over one batch sent to `url`."""
    os.kill(pid, signal.SIGUSR1)
    time.sleep(0.3)  # the handler runs at the process's next bytecode
    asyncio.run(drive(url, payloads, concurrency))
    os.kill(pid, signal.SIGUSR2)
    written = Path(f"{out}.{pid}.json")
    deadline = time.monotonic() + 30
    while not written.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} wrote no counts to {written}")
        time.sleep(0.1)
    return list(json.loads(written.read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="the counted batch")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--top", type=int, default=15, help="modules and functions listed")
    args = ap.parse_args()
    if min(args.requests, args.concurrency, args.top) < 1:
        ap.error("--requests, --concurrency and --top must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    fill_registry(work / "registry")
    payloads = bodies(args.requests)
    timed = pieces()
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        v = stack.enter_context(instant_backend(work / "instant.log", 0.035))
        env = {"PYTHONPATH": str(COUNTER), "CALL_COUNT_OUT": str(work / "asgi")}
        url, proc = stack.enter_context(hop("asgi", v.url, work / "asgi.log", payloads[0], env))
        hops: dict[str, tuple[str, psutil.Process]] = {"asgi": (url, proc)}
        env = {"GATEWAY_CPU_PLACEMENT": "none", "PYTHONPATH": str(COUNTER),
               "CALL_COUNT_OUT": str(work / "gateway")}  # fmt: skip
        g = stack.enter_context(gateway(work / "registry", v.url, work / "gateway", env))
        hops["gateway"] = (g.url, psutil.Process(g.popen.pid))
        for name, (url, proc) in hops.items():
            asyncio.run(drive(url, payloads[:200], args.concurrency))  # warm
            counts = counted(proc.pid, str(work / name), url, payloads, args.concurrency)
            out[name] = summarise(counts, args.requests, args.top)
    print(
        json.dumps(
            {
                "bench": "hop_calls",
                "machine": machine(),
                "requests": args.requests,
                "concurrency": args.concurrency,
                "calls_per_request": out,
                "pieces_us": timed,
            }
        )
    )


if __name__ == "__main__":
    main()
