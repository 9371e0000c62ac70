"""Hostile input to a real `registry serve`: every refusal is a 4xx in the one JSON
envelope, and nothing is written (no path escapes the service's scratch directory)."""

from __future__ import annotations

import hashlib
import json
import math
import select
import socket
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import registry
from registry import errors as e
from registry.dirscan import ScanError, check_relpath
from registry.service.app import create_app
from registry.service.context import MAX_FILES
from registry.service.inputs import MAX_DEPTH, crawling, depth, json_value, seconds, whole
from tests.support.registry_service import registry_service
from tests.support.served_registry import (
    MAX_FILE_BYTES,
    READ_TIMEOUT_S,
    WRITE_TOKEN,
    Served,
    build_registry,
    raw,
    read_response,
    settle,
    upload,
)

HOSTILE_PATHS = ["../x", "/abs", "./x", "a//b", "x/", "a/../../b", "a\\b", "x" * 300,
                 "a/" * 600 + "b", "", ".", "..", "a/\x00b"]  # fmt: skip
AUTH = f"Authorization: Bearer {WRITE_TOKEN}\r\n".encode()


def envelope(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    assert set(error) >= {"code", "message", "type"}
    assert "Traceback" not in r.text
    return error  # type: ignore[no-any-return]


# -- the rules, as tables ----------------------------------------------------------------
@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_check_relpath_refuses_every_other_spelling(path: str) -> None:
    with pytest.raises(ScanError):
        check_relpath(path)


@pytest.mark.parametrize("path", ["a", "a/b.json", "adapter_config.json", "é/b", "a" * 255])
def test_check_relpath_takes_plain_relative_paths(path: str) -> None:
    check_relpath(path)


@pytest.mark.parametrize(
    ("raw_value", "expected"),
    [(None, 7), ("", 7), ("0", 0), ("1000", 1000), ("-1", None), ("1001", None),
     ("1.5", None), ("abc", None), ("1e3", None), (" 1", None), ("nan", None),
     ("9" * 30, None), ("0x10", None)],
)  # fmt: skip
def test_whole_numbers(raw_value: str | None, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(e.BadRequestError):
            whole(raw_value, "n", low=0, high=1000, default=7)
    else:
        assert whole(raw_value, "n", low=0, high=1000, default=7) == expected


@pytest.mark.parametrize(
    ("raw_value", "expected"),
    [(None, 0.0), ("0", 0.0), ("2.5", 2.5), ("1e-05", 1e-05), ("1e300", 30.0), ("31", 30.0),
     ("-1", None), ("nan", None), ("NaN", None), ("inf", None), ("-inf", None),
     ("1e400", None), ("x", None), ("1" * 40, None)],
)  # fmt: skip
def test_seconds(raw_value: str | None, expected: float | None) -> None:
    if expected is None:
        with pytest.raises(e.BadRequestError):
            seconds(raw_value, "t", high=30.0)
    else:
        value = seconds(raw_value, "t", high=30.0)
        assert math.isfinite(value) and value == expected


@pytest.mark.parametrize(
    "text",
    ["[" * 5000 + "]" * 5000,
     "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "{", b"\xff\xfe"],
)  # fmt: skip
def test_json_value_is_strict(text: str | bytes) -> None:
    with pytest.raises(e.BadRequestError):
        json_value(text)


def test_json_value_takes_json() -> None:
    assert json_value('{"a": [1, {"b": 2.5}]}') == {"a": [1, {"b": 2.5}]}
    # as registry.wire.dumps writes them; each write checks its own values
    assert math.isnan(json_value('{"a": NaN}')["a"]) and json_value("[-Infinity]") == [-math.inf]
    assert depth([[[]]]) == 3 and depth(1) == 0 and depth({}) == 1


# -- on a real server --------------------------------------------------------------------
@pytest.mark.parametrize("path", HOSTILE_PATHS)
@pytest.mark.parametrize("op", ["add_base", "add_variant", "add_dataset"])
def test_path_like_file_names_are_refused_before_anything_is_written(
    served_registry: Served, op: str, path: str
) -> None:
    with served_registry.http() as c:
        ref = upload(c, b'{"architectures": ["LlamaForCausalLM"]}')
        before = served_registry.state()
        files = [{"path": path, **ref}]
        body: dict[str, Any] = {"name": "hostile", "files": files}
        if op == "add_dataset":
            body = {"name": "hostile", "file": files[0]}
        if op == "add_variant":
            body.update(parent="tiny-base", quantization={}, fidelity={}, passed=True,
                        forced=False, pairs=[])  # fmt: skip
        r = c.post(f"/v1/{op}", json=body)
    error = envelope(r, 400, "bad_request")
    assert "path" in error["message"] or "unsafe" in error["message"]
    assert served_registry.state() == before
    assert not Path("/abs").exists() and not (served_registry.root / "incoming" / "x").exists()


@pytest.mark.parametrize("name", ["../escaped", "/tmp/loraport-escaped", "a/b", "./x", "x" * 200])
@pytest.mark.parametrize("op", ["add_base", "add_variant"])
def test_path_like_record_names_are_refused(served_registry: Served, op: str, name: str) -> None:
    with served_registry.http() as c:
        ref = upload(c, b'{"architectures": ["LlamaForCausalLM"]}')
        before = served_registry.state()
        body: dict[str, Any] = {"name": name, "files": [{"path": "config.json", **ref}]}
        if op == "add_variant":
            body.update(parent="tiny-base", quantization={}, fidelity={}, passed=True,
                        forced=False, pairs=[])  # fmt: skip
        r = c.post(f"/v1/{op}", json=body)
    envelope(r, 400, "invalid_ref")
    assert served_registry.state() == before
    assert not Path("/tmp/loraport-escaped").exists()
    assert not (served_registry.root / "escaped").exists()


def test_a_write_naming_too_many_files_is_a_400(served_registry: Served) -> None:
    with served_registry.http() as c:
        ref = upload(c, b"{}")
        before = served_registry.state()
        files = [{"path": f"f{i}", **ref} for i in range(MAX_FILES + 1)]
        r = c.post("/v1/add_base", json={"name": "many", "files": files})
    envelope(r, 400, "bad_request")
    assert served_registry.state() == before


def test_a_file_where_a_directory_must_go_is_a_400(served_registry: Served) -> None:
    with served_registry.http() as c:
        ref = upload(c, b"{}")
        before = served_registry.state()
        files = [{"path": "a", **ref}, {"path": "a/b", **ref}]
        r = c.post("/v1/add_base", json={"name": "clash", "files": files})
    envelope(r, 400, "bad_request")
    assert served_registry.state() == before


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("GET", "/v1/blobs/x/y", 404), ("PUT", "/v1/resolve", 405),
     ("DELETE", "/health", 405), ("GET", "/v1/no_such_op", 400), ("GET", "/v1/manifest", 400),
     ("POST", "/v1/resolve", 400)],
)  # fmt: skip
def test_unknown_routes_and_methods_answer_in_the_envelope(
    served_registry: Served, method: str, path: str, status: int
) -> None:
    with served_registry.http() as c:
        envelope(c.request(method, path), status, "bad_request")


@pytest.mark.parametrize(
    "query",
    ["/v1/list_adapters?page_size=abc", "/v1/list_adapters?page_size=-1",
     "/v1/list_adapters?page_size=0", "/v1/list_adapters?page_size=100000",
     "/v1/list_adapters?page_token=-5", "/v1/list_adapters?page_token=1e3",
     "/v1/list_adapters?page_token=99999999999999999999999", "/v1/changes?since=x",
     "/v1/changes?since=-1", "/v1/changes?since=1&timeout=nan", "/v1/changes?timeout=inf",
     "/v1/changes?since=1&timeout=-1", "/v1/changes?timeout=abc",
     "/v1/pair?adapter=NaN&variant=x",
     "/v1/resolve?ref=a&extra=1"],
)  # fmt: skip
def test_query_numbers_are_checked(served_registry: Served, query: str) -> None:
    with served_registry.http() as c:
        r = c.get(query)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("bad_request", "invalid_ref")


def test_a_huge_watch_timeout_is_held_to_the_limit(served_registry: Served) -> None:
    """A watch asked to wait 1e300 s answers (it is held to 30 s): timed with since = the
    current token and a short client limit, it is still waiting, not refused."""
    with served_registry.http() as c:
        token = c.get("/v1/change_token").json()["result"]
        started = time.monotonic()
        r = c.get("/v1/changes", params={"since": token, "timeout": "0.2"})
        assert r.status_code == 200 and r.json()["result"] == token
        assert time.monotonic() - started >= 0.2
        r = c.get("/v1/changes", params={"since": token + 1, "timeout": "1e300"})
        assert r.status_code == 200 and r.json()["result"] == token


@pytest.mark.parametrize(
    "body",
    [b'{"name": "support", "alias": "x", "version": NaN}', b"[" * 3000 + b"]" * 3000,
     b'{"name": ' + b"[" * 100 + b"]" * 100 + b"}", b"not json", b"[1, 2]", b"\xff"],
)  # fmt: skip
def test_bad_json_bodies_are_400(served_registry: Served, body: bytes) -> None:
    before = served_registry.state()
    with served_registry.http() as c:
        r = c.post("/v1/set_alias", content=body, headers={"content-type": "application/json"})
    envelope(r, 400, "bad_request")
    assert served_registry.state() == before


@pytest.mark.parametrize(
    ("op", "body"),
    [("set_alias", {"name": "tiny-base", "alias": "x", "version": 2**70}),
     ("claim_rollout", {"name": "x", "rollout_id": 2**63, "holder": "h", "ttl_s": 1}),
     ("release_rollout", {"name": "x", "rollout_id": -(2**64), "holder": "h"})],
)  # fmt: skip
def test_numbers_beyond_64_bits_are_400_not_500(
    served_registry: Served, op: str, body: dict[str, Any]
) -> None:
    """Found by fuzzing the operation table: SQLite cannot hold them (an OverflowError,
    once a 500 whose connection was reset under the answer)."""
    before = served_registry.state()
    with served_registry.http() as c:
        envelope(c.post(f"/v1/{op}", json=body), 400, "bad_request")
        assert c.get("/health").status_code == 200  # the same connection, still open
    assert served_registry.state() == before


def test_a_digest_mismatch_stores_nothing(served_registry: Served) -> None:
    data = b"the bytes actually sent"
    other = "sha256:" + hashlib.sha256(b"what the client claimed").hexdigest()
    before = served_registry.state()
    with served_registry.http() as c:
        r = c.post("/v1/blobs", params={"digest": other}, content=data)
        envelope(r, 400, "bad_request")
        r = c.post("/v1/blobs", params={"digest": "sha256:../../etc"}, content=data)
        envelope(r, 400, "invalid_ref")
    assert served_registry.state() == before
    assert hashlib.sha256(data).hexdigest() not in before[1]


def test_a_truncated_upload_leaves_nothing(served_registry: Served) -> None:
    """The client says 1 MiB, sends 1000 bytes and hangs up: no blob, no temp file."""
    before = served_registry.state()
    head = (
        b"POST /v1/blobs HTTP/1.1\r\nHost: x\r\n" + AUTH
        + b"Content-Length: 1048576\r\n\r\n"
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", served_registry.port)) as sock:
        sock.sendall(head + b"x" * 1000)
        time.sleep(0.3)  # the server has the piece and a temp file for it
    assert settle(lambda: served_registry.state() == before), served_registry.state()


def test_a_10_gb_content_length_is_refused_at_once(served_registry: Served) -> None:
    """A 10 GB Content-Length with a tiny body: 413 before any body is read, for a JSON
    write (REGISTRY_SERVE_MAX_BODY_BYTES) and for a blob over REGISTRY_MAX_FILE_BYTES."""
    before = served_registry.state()
    for path in (b"/v1/push_request", b"/v1/set_alias", b"/v1/blobs"):
        head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + AUTH
        head += b"Content-Length: 10000000000\r\n\r\n"
        started = time.monotonic()
        status, body = raw(served_registry.port, head, b"tiny")
        took = time.monotonic() - started
        assert status == 413, body
        assert json.loads(body)["error"]["code"] == "request_too_large"
        assert took < READ_TIMEOUT_S, f"{path!r} answered after {took:.1f} s"
    assert served_registry.state() == before
    with served_registry.http() as c:  # one byte over the upload limit, sent in full
        r = c.post("/v1/blobs", content=b"\0" * (MAX_FILE_BYTES + 1))
    envelope(r, 413, "request_too_large")
    assert served_registry.state() == before


def test_an_upload_the_disk_cannot_hold_is_refused_at_once(tmp_path: Path) -> None:
    """With no upload limit to speak of, a Content-Length over the disk's free space is
    507 storage_full before a byte is read, not a disk filled and then refused."""
    root = build_registry(tmp_path / "reg", tmp_path)
    env = {"REGISTRY_MAX_FILE_BYTES": str(2**62)}
    with registry_service(root, tmp_path / "serve.log", token=WRITE_TOKEN, env=env) as proc:
        port = int(proc.url.rsplit(":", 1)[1])
        head = b"POST /v1/blobs HTTP/1.1\r\nHost: x\r\n" + AUTH
        head += f"Content-Length: {2**61}\r\n\r\n".encode()
        started = time.monotonic()
        status, body = raw(port, head, b"tiny")
        assert status == 507, body
        assert json.loads(body)["error"]["code"] == "storage_full"
        assert time.monotonic() - started < 5  # the read timeout there is 60 s
    assert not list((root / "blobs" / "tmp").glob("*"))


def test_a_huge_request_head_is_refused(served_registry: Served) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    try:
        status, _ = raw(served_registry.port, head)
    except (ConnectionResetError, BrokenPipeError):
        status = 0  # closed while the head was still being sent: refused as well
    assert status in (0, 400, 431)
    with served_registry.http() as c:
        assert c.get("/health").status_code == 200  # and the server is none the worse


def test_a_request_head_sent_slowly_is_cut_off(served_registry: Served) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served_registry.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        with pytest.raises(OSError):
            while time.monotonic() - started < 10:
                sock.sendall(b"X-Slow: 1\r\n")  # a header line every 0.2 s, never the end
                time.sleep(0.2)
                if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    raise OSError("closed")
    took = time.monotonic() - started
    assert READ_TIMEOUT_S * 0.9 <= took < READ_TIMEOUT_S + 3, took
    with socket.create_connection(("127.0.0.1", served_registry.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # silent from the start: closed too
        assert time.monotonic() - started < READ_TIMEOUT_S + 3


def test_a_body_nobody_reads_cannot_hold_the_connection(served_registry: Served) -> None:
    """A GET that declares a 10 GB body is answered without reading it; trickling that
    body afterwards does not keep the connection: it is closed after the read timeout."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served_registry.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"
        with pytest.raises(OSError):
            while time.monotonic() - started < READ_TIMEOUT_S + 5:
                sock.sendall(b"x")
                time.sleep(0.2)
                if _readable(sock) and sock.recv(65536, socket.MSG_DONTWAIT) == b"":
                    raise OSError("closed")
    assert time.monotonic() - started < READ_TIMEOUT_S + 3


@pytest.mark.parametrize("path", [b"/v1/set_alias", b"/v1/blobs"])
def test_a_body_sent_slowly_is_cut_off(served_registry: Served, path: bytes) -> None:
    """A JSON body must arrive whole within the read timeout; an upload may take long
    but not go silent for it. Either way: 400, nothing stored."""
    before = served_registry.state()
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 1000\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served_registry.port), timeout=10) as sock:
        sock.sendall(head + b"{")
        if path == b"/v1/set_alias":  # a byte every 0.3 s: never silent, never done
            while time.monotonic() - started < READ_TIMEOUT_S + 1:
                sock.sendall(b" ")
                time.sleep(0.3)
        status, body = read_response(sock)
    took = time.monotonic() - started
    assert status == 400, body
    assert "did not arrive in time" in json.loads(body)["error"]["message"]
    assert took < READ_TIMEOUT_S + 3
    assert settle(lambda: served_registry.state() == before)


def test_an_upload_that_crawls_is_cut_off(served_registry: Served) -> None:
    """Never silent for the read timeout, but a few bytes a second: dropped once the
    timeout has passed and it stays under MIN_BYTES_PER_S, temp file and all."""
    before = served_registry.state()
    head = b"POST /v1/blobs HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 100000\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served_registry.port), timeout=10) as sock:
        sock.sendall(head)
        with suppress(OSError):  # sent until the server answers (or closes)
            while time.monotonic() - started < READ_TIMEOUT_S * 2 + 2 and not _readable(sock):
                sock.sendall(b"x" * 16)
                time.sleep(0.25)
        status, body = read_response(sock)
    assert status == 400, body
    assert "slower than" in json.loads(body)["error"]["message"]
    assert time.monotonic() - started < READ_TIMEOUT_S * 2 + 2
    assert settle(lambda: served_registry.state() == before)


@pytest.mark.parametrize(
    ("received", "elapsed", "expected"),
    [(0, 1.9, False), (0, 2.1, True), (100, 2.05, False), (1024, 3.0, False),
     (1023, 3.0, True), (10**9, 1000.0, False)],
)  # fmt: skip
def test_crawling(received: int, elapsed: float, expected: bool) -> None:
    assert crawling(received, elapsed, 2.0) is expected


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_an_unexpected_error_is_a_500_in_the_envelope_without_a_traceback(
    local_reg: registry.LocalRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug (here: the store's list raising a plain error) is a 500 with code
    service_failed and no traceback or internals in the body."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail /var/lib/x")

    monkeypatch.setattr(local_reg, "list_adapters", broken)
    app = create_app(local_reg, registry.RegistrySettings(user="tester"), ())
    with TestClient(app) as c:  # type: ignore[arg-type]
        r = c.get("/v1/list_adapters")
        assert c.get("/health").status_code == 200
    error = envelope(r, 500, "service_failed")
    assert "secret internal detail" not in r.text and "RuntimeError" not in r.text
    assert error["type"] == "ServiceFailedError"
    logged = [r for r in caplog.records if r.name == "loraport.registry.service"]
    assert len(logged) == 1 and logged[0].exc_info is not None  # the traceback: in the log
    assert logged[0].exc_info[0] is RuntimeError
