"""A loopback HTTP server speaking the gateway's chat-completions wire format, for the
eval gate's unit tests (the live tests ask real gateways in front of real vLLM)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
