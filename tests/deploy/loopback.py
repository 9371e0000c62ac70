"""Loopback HTTP servers answering what a test sets: ``Canned`` (GET: a Prometheus API or a
gateway's ``/metrics``) and ``Chat`` (the gateway's chat-completions wire format), for
the sources' and the eval gate's failure paths. The live tests ask real gateways in
front of real vLLM."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Chat:
    """A loopback server speaking the chat-completions wire format: each model answers
    the content the test sets (or a raw body and status)."""

    def __init__(self) -> None:
        self.answers: dict[str, str | None] = {}
        self.raw: tuple[int, bytes] | None = None
        self.asked: list[dict[str, object]] = []
        chat = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                chat.asked.append(body)
                status, raw = chat.raw or (200, json.dumps({"choices": [
                    {"message": {"role": "assistant", "content": chat.answers[body["model"]]}}
                ]}).encode())  # fmt: skip
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


class Canned:
    """A loopback HTTP server whose answer (status, body) the test sets."""

    def __init__(self) -> None:
        self.status, self.body = 200, b""
        self.paths: list[str] = []
        self.by_query: Callable[[str], object] | None = None
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                canned.paths.append(self.path)
                body = canned.body
                if canned.by_query is not None:
                    query = parse_qs(urlsplit(self.path).query)["query"][0]
                    body = json.dumps(canned.by_query(query)).encode()
                self.send_response(canned.status)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, body: object, status: int = 200) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
