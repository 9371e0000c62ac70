"""A registry behind a real `registry serve` with tokens, and the raw HTTP a hostile
client sends it (tests/registry/test_service_*.py)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import registry
from registry.location import open_local
from registry.service.tokens import hash_token
from tests.support.launch import Process
from tests.support.registry_service import registry_service
from tests.support.synthetic import write_base

WRITE_TOKEN = "w-5e3a1f9c0b2d4e6f8a7c"
READ_TOKEN = "r-9d8c7b6a5f4e3d2c1b0a"
WRONG_TOKEN = "x-0f1e2d3c4b5a69788796"
#: How long the test server waits for a request head or body (REGISTRY_SERVE_READ_TIMEOUT_S).
READ_TIMEOUT_S = 2.0
#: Its largest upload (REGISTRY_MAX_FILE_BYTES).
MAX_FILE_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Served:
    """A running `registry serve` with a write token ``ci`` and a read token ``viewer``."""

    url: str
    root: Path
    log: Path
    proc: Process

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def http(self, token: str | None = WRITE_TOKEN) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def open(self, token: str | None = WRITE_TOKEN) -> Any:
        """The registry through :class:`HttpRegistry`, as every verb opens it."""
        settings = registry.RegistrySettings(user="tester", token=token)
        return registry.open(self.url, settings=settings)

    @property
    def uploads(self) -> Path:
        """Where uploads in progress are (``FileBlobStore.uploads``)."""
        return self.root / "blobs" / "uploads"

    def state(self) -> tuple[int, frozenset[str], list[str]]:
        """What a refused request must leave as it was: the change token, the blobs
        stored, and what lies in the service's scratch and temp directories."""
        with self.http() as c:
            token = c.get("/v1/change_token").json()["result"]
        blobs = frozenset(p.name for p in (self.root / "blobs" / "sha256").glob("*/*"))
        scratch = sorted(
            str(p.relative_to(self.root))
            for d in (self.root / "incoming", self.root / "blobs" / "tmp", self.uploads)
            if d.is_dir()
            for p in d.iterdir()
        )
        return token, blobs, scratch


def build_registry(root: Path, work: Path) -> Path:
    """A registry directory holding base ``tiny-base`` and dataset ``support-data``."""
    base = write_base(work / "tiny-base")
    data = work / "support-data.jsonl"
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    settings = registry.RegistrySettings(user="tester")
    with open_local(root, settings=settings) as reg:
        reg.add_base(base, name="tiny-base", license="apache-2.0")
        reg.add_dataset(data, name="support-data")
    return root


def write_tokens(path: Path) -> Path:
    entries = [
        {"name": "ci", "scope": "write", "sha256": hash_token(WRITE_TOKEN)},
        {"name": "viewer", "scope": "read", "sha256": hash_token(READ_TOKEN)},
    ]
    path.write_text(json.dumps(entries))
    return path


@contextmanager
def served(root: Path, log: Path) -> Iterator[Served]:
    """`registry serve` of ``root`` with the two tokens and the tests' short limits."""
    env = {
        "REGISTRY_SERVE_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "REGISTRY_MAX_FILE_BYTES": str(MAX_FILE_BYTES),
    }
    tokens = write_tokens(log.with_name(log.stem + "-tokens.json"))
    with registry_service(root, log, tokens_file=tokens, env=env) as proc:
        yield Served(proc.url, root, log, proc)


def upload(client: httpx.Client, data: bytes) -> dict[str, Any]:
    """POST a blob; the file reference a write names it by."""
    r = client.post("/v1/blobs", content=data)
    assert r.status_code == 200, r.text
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert r.json()["result"] == {"digest": digest, "size": len(data)}
    return {"size": len(data), "digest": digest}


def raw(port: int, head: bytes, body: bytes = b"", *, wait_s: float = 10.0) -> tuple[int, bytes]:
    """Send ``head`` (and ``body``) on a plain socket; the status and body that come back
    (0 and b"" if the server closes without answering). Times out after ``wait_s``."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head + body)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                None,
            )  # fmt: skip
            if length is not None and len(body) >= length:
                break
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def settle(condition: Any, timeout_s: float = 5.0) -> bool:
    """Whether ``condition()`` holds within ``timeout_s`` (a server cleans up after a
    hang-up on its own time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())
