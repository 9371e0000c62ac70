"""Tokens on a real `registry serve`: no token or a wrong one is 401, a read token on a
write is 403, nothing is written either way; an open server stays on loopback; no token
ever reaches the server's log."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry import errors as e
from server.supervisor import free_port
from tests.support.registry_service import REGISTRY, registry_service
from tests.support.served_registry import (
    READ_TOKEN,
    WRITE_TOKEN,
    WRONG_TOKEN,
    Served,
    build_registry,
    upload,
)
from tests.support.synthetic import write_adapter

#: One of every kind of write: a generic op, an upload, each write with files, a gc.
WRITES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/set_alias", {"name": "support", "alias": "production", "version": 1}),
    ("/v1/blobs", {}),
    ("/v1/add_base", {"name": "stolen", "files": []}),
    ("/v1/add_dataset", {"name": "stolen", "file": {}}),
    ("/v1/push_request", {"request": {}, "files": []}),
    ("/v1/add_variant", {"name": "stolen", "files": []}),
    ("/v1/verify", {"gc": True, "gc_grace_s": 0}),
]


def send(served: Served, token: str | None, path: str, body: dict[str, Any]) -> Any:
    with served.http(token) as c:
        if path == "/v1/blobs":
            return c.post(path, content=b"bytes an attacker wants stored")
        return c.post(path, json=body)


@pytest.mark.parametrize(("path", "body"), WRITES, ids=[w[0] for w in WRITES])
@pytest.mark.parametrize(
    ("token", "status", "code"),
    [(None, 401, "unauthorized"), (WRONG_TOKEN, 401, "unauthorized"),
     ("null", 401, "unauthorized"), (READ_TOKEN, 403, "forbidden")],
    ids=["none", "wrong", "null", "read-scope"],
)  # fmt: skip
def test_a_write_without_a_write_token_is_refused_and_writes_nothing(
    served_registry: Served, path: str, body: dict[str, Any], token: str | None, status: int,
    code: str,
) -> None:  # fmt: skip
    before = served_registry.state()
    r = send(served_registry, token, path, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert served_registry.state() == before


@pytest.mark.parametrize("token", [None, WRONG_TOKEN, f"{WRITE_TOKEN}x", WRITE_TOKEN[:-1]])
@pytest.mark.parametrize(
    "path",
    ["/v1/list_adapters", "/v1/changes", "/v1/info", "/v1/manifest?ref=tiny-base",
     "/v1/resolve?ref=tiny-base", "/v1/blobs/sha256:" + "0" * 64],
)  # fmt: skip
def test_a_read_without_a_known_token_is_401(
    served_registry: Served, path: str, token: str | None
) -> None:
    with served_registry.http(token) as c:
        r = c.get(path)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"
    assert "REGISTRY_TOKEN" in r.json()["error"]["message"]


def test_other_schemes_are_not_a_token(served_registry: Served) -> None:
    for header in (f"Basic {WRITE_TOKEN}", WRITE_TOKEN, f"Bearer{WRITE_TOKEN}", "Bearer"):
        with served_registry.http(None) as c:
            r = c.get("/v1/info", headers={"authorization": header})
        assert r.status_code == 401, header


def test_the_client_raises_the_same_classes(served_registry: Served) -> None:
    with served_registry.open(None) as reg, pytest.raises(e.UnauthorizedError):
        reg.list_bases()
    with served_registry.open(WRONG_TOKEN) as reg, pytest.raises(e.UnauthorizedError):
        reg.list_bases()
    with served_registry.open(READ_TOKEN) as reg:
        assert [b.name for b in reg.list_bases()] == ["tiny-base"]
        with pytest.raises(e.ForbiddenError):
            reg.set_alias("tiny-base", "production", 1)


def test_writes_are_recorded_as_the_token_not_the_clients_claim(
    served_registry: Served, tmp_path: Path
) -> None:
    adapter = write_adapter(tmp_path / "token-who")
    with served_registry.open(WRITE_TOKEN) as reg:
        pushed = reg.push_adapter(adapter, base="tiny-base", allow_unknown_dataset=True,
                                  who="mallory")  # fmt: skip
        events = reg.events("token-who")
    assert pushed.adapter.name == "token-who"
    assert {ev.who for ev in events} == {"ci"}


def test_tokens_never_reach_the_log(served_registry: Served) -> None:
    """Every request above (and these, with tokens in every header and in the query)
    went through this server: its log holds none of the secrets."""
    with served_registry.http(WRONG_TOKEN) as c:
        c.get("/v1/info", params={"token": WRITE_TOKEN})
        c.get(f"/{READ_TOKEN}")
    with served_registry.http(WRITE_TOKEN) as c:
        upload(c, b"logged?")
        c.get(f"/v1/resolve?ref={READ_TOKEN}")
    log = served_registry.log.read_text(errors="replace")
    assert "registry serving" in log  # the log is the server's, and it is written
    for secret in (WRITE_TOKEN, READ_TOKEN, WRONG_TOKEN):
        assert secret not in log
        assert secret[:12] not in log


def test_an_open_server_refuses_to_bind_beyond_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        cmd = [REGISTRY, "serve", "--registry", str(tmp_path / "reg"), "--host", host,
               "--port", str(free_port())]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "refusing to serve on" in done.stderr
        assert "--tokens FILE" in done.stderr and "127.0.0.1" in done.stderr


def test_an_open_server_says_it_is_loopback_only(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "reg", tmp_path)
    log = tmp_path / "open.log"
    with registry_service(root, log) as proc:
        assert httpx.get(f"{proc.url}/v1/info").status_code == 200  # open: no token needed
    said = log.read_text()
    assert "with no tokens" in said and "bound to loopback only" in said


def test_a_server_with_a_token_may_bind_wider(tmp_path: Path) -> None:
    """REGISTRY_TOKEN: 0.0.0.0 is allowed, and the token is required there."""
    root = build_registry(tmp_path / "reg", tmp_path)
    log = tmp_path / "wide.log"
    env = {"REGISTRY_TOKEN": WRITE_TOKEN}
    with registry_service(root, log, host="0.0.0.0", env=env) as proc:
        assert httpx.get(f"{proc.url}/v1/info").status_code == 401
        auth = {"authorization": f"Bearer {WRITE_TOKEN}"}
        assert httpx.get(f"{proc.url}/v1/info", headers=auth).status_code == 200
    assert "0.0.0.0" in log.read_text() and WRITE_TOKEN not in log.read_text()
