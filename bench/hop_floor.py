"""What any Python hop costs, against what the gateway costs: the CPU per request of
three minimal forwarders and of `gateway serve --backend`, all in front of
bench/instant_backend.py answering after 35 ms (as vLLM would), in the same run. Prints
one JSON line.

    .venv/bin/python bench/hop_floor.py [--concurrency 16] [--requests 2000] [--repeat 4]
        [--delay-ms 35]

- `raw`: uvloop and httptools, raw protocols: read a request, write it to a kept-alive
  upstream connection, write the answer back; nothing parsed but HTTP framing;
- `raw+json`: the same, with the request and the answer each parsed and re-serialised
  with the standard library's json (what forwarding with any change to the body needs);
- `asgi`: a 20-line ASGI app on uvicorn with the gateway's own protocol (one write per
  answer) and its lean HTTP/1.1 client (server/http1.py): the gateway's stack with none
  of its work;
- `gateway`: the gateway of this checkout (validation, routing, admission, containment's
  answer checks, metrics, access log).
The difference between `asgi` and `gateway` is the CPU that the gateway's features cost;
what `asgi` costs is the floor for this stack on this machine. Batches alternate between
the hops; CPU per batch from the kernel's scheduler time of every thread, in ns
(`gateway_cpu.cpu_s`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from gateway_cpu import bodies, cpu_s, drive
from harness import fill_registry, gateway, instant_backend, machine

from server.supervisor import free_port

HOPS = ("raw", "raw+json", "asgi")
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def serve_raw(port: int, upstream: tuple[str, int], parse: bool) -> None:
    import httptools
    import uvloop

    pool: list[Any] = []

    class Up(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.body: list[bytes] = []
            self.waiter: asyncio.Future[bytes] | None = None
            self.lost = False

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost = True

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            waiter, self.waiter = self.waiter, None
            body, self.body = b"".join(self.body), []
            assert waiter is not None
            waiter.set_result(body)

    class Down(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            body, self.body = b"".join(self.body), []
            asyncio.get_running_loop().create_task(self.answer(body))

        async def answer(self, body: bytes) -> None:
            loop = asyncio.get_running_loop()
            if parse:
                body = json.dumps(json.loads(body)).encode()
            while pool and pool[-1].lost:
                pool.pop()
            if pool:
                up = pool.pop()
            else:
                _, up = await loop.create_connection(Up, *upstream)
            up.waiter = loop.create_future()
            up.transport.write(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            answer = await up.waiter
            pool.append(up)
            if parse:
                answer = json.dumps(json.loads(answer)).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % len(answer)
                + answer
            )

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Down, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def serve_asgi(port: int, upstream: tuple[str, int]) -> None:
    import uvicorn

    from server.http1 import Http1Pool
    from server.http_protocol import OneWriteProtocol

    pool = Http1Pool(f"{upstream[0]}:{upstream[1]}", host=upstream[0], port=upstream[1])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        status, body = await pool.post("/v1/chat/completions", b"".join(chunks), 30)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                http=OneWriteProtocol)  # fmt: skip


@contextlib.contextmanager
def hop(
    kind: str, upstream: str, log: Path, probe: bytes, env: dict[str, str] | None = None
) -> Any:
    """One minimal forwarder as its own process (`env` added to this one's): yields (its
    URL, the process)."""
    port = free_port()
    host, up_port = upstream.rsplit("//", 1)[1].split(":")
    cmd = [sys.executable, __file__, "--serve", kind, str(port), host, up_port]
    with log.open("w") as out:
        p = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.post(f"{url}/v1/chat/completions", content=probe, timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and p.poll() is None, f"{kind}: see {log}"
                time.sleep(0.1)
        yield url, psutil.Process(p.pid)
    finally:
        p.kill()
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2000, help="per batch")
    ap.add_argument("--repeat", type=int, default=4, help="measured batches per hop")
    ap.add_argument("--delay-ms", type=float, default=35.0)
    ap.add_argument("--serve", nargs=4, metavar=("KIND", "PORT", "HOST", "UPSTREAM_PORT"),
                    help=argparse.SUPPRESS)  # fmt: skip
    args = ap.parse_args()
    if min(args.concurrency, args.requests, args.repeat) < 1 or args.delay_ms < 0:
        ap.error("--concurrency, --requests and --repeat must be at least 1, --delay-ms >= 0")
    if args.serve:
        kind, port, host, up_port = args.serve
        upstream = (host, int(up_port))
        if kind == "asgi":
            serve_asgi(int(port), upstream)
        else:
            serve_raw(int(port), upstream, parse=kind == "raw+json")
        return
    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    fill_registry(work / "registry")
    payloads = bodies(args.requests)
    with contextlib.ExitStack() as stack:
        v = stack.enter_context(instant_backend(work / "instant.log", args.delay_ms / 1000))
        hops: dict[str, tuple[str, psutil.Process]] = {}
        for kind in HOPS:
            hops[kind] = stack.enter_context(hop(kind, v.url, work / f"{kind}.log", payloads[0]))
        env = {"GATEWAY_CPU_PLACEMENT": "none"}
        g = stack.enter_context(gateway(work / "registry", v.url, work / "gateway", env))
        hops["gateway"] = (g.url, psutil.Process(g.popen.pid))
        for url, _ in hops.values():
            asyncio.run(drive(url, payloads[:200], args.concurrency))  # warm
        used: dict[str, list[float]] = {name: [] for name in hops}
        for i in range(args.repeat):
            for name in list(hops) if i % 2 == 0 else list(reversed(hops)):
                url, proc = hops[name]
                before = cpu_s(proc)
                asyncio.run(drive(url, payloads, args.concurrency))
                used[name].append((cpu_s(proc) - before) / len(payloads) * 1e6)
    print(
        json.dumps(
            {
                "bench": "hop_floor",
                "machine": machine(),
                "concurrency": args.concurrency,
                "requests_per_batch": args.requests,
                "backend_delay_ms": args.delay_ms,
                "load_avg": round(os.getloadavg()[0], 2),
                "cpu_us_per_request": {
                    name: {
                        "median": round(statistics.median(xs)),
                        "batches": [round(x) for x in xs],
                    }
                    for name, xs in used.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
