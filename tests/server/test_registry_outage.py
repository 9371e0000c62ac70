"""A real `registry serve` killed -9 under a running gateway on real vLLM, and a gateway
started while its registry is down (docs/gateway.md, "The registry down").

The gateway keeps serving the names it knows, stays ready (200) and says the registry is
down and how stale it is (/ready's `registry`, `loraport_registry_stale_seconds`); a name
never resolved is a 503 `registry_unavailable` with Retry-After; the restarted registry
is seen again. A gateway started with no registry answering waits, not ready, and becomes
ready when it answers. Also measured here: how soon an alias move is served."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

import registry
from server.supervisor import free_port
from tests.server.conftest import RunningGateway, running_gateway, scrape, wait_until
from tests.support.launch import Process
from tests.support.registry_service import registry_service
from tests.support.zoo import BASE_NAME, adapter_dir

pytestmark = pytest.mark.vllm


class Service:
    """A `registry serve` on a fixed port that a test may kill -9 and start again."""

    def __init__(self, directory: Path, logs: Path) -> None:
        self.directory = directory
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stack = ExitStack()
        self._proc: Process | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        log = self.logs / f"serve-{self._starts}.log"
        self._proc = self._stack.enter_context(
            registry_service(self.directory, log, port=self.port)
        )

    def kill(self) -> None:
        assert self._proc is not None
        os.killpg(self._proc.popen.pid, signal.SIGKILL)
        self._proc.popen.wait()

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def service(zoo_registry: Path, tmp_path: Path) -> Iterator[Service]:
    copy = tmp_path / "registry"
    shutil.copytree(zoo_registry, copy)
    svc = Service(copy, tmp_path)
    try:
        yield svc
    finally:
        svc.close()


def chat(gw: RunningGateway, model: str) -> httpx.Response:
    # `text`: opts out of an adapter's own schema (extract has one), so 4 tokens do
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "response_format": {"type": "text"}}  # fmt: skip
    with gw.client() as c:
        return c.post("/v1/chat/completions", json=body)


def ready(gw: RunningGateway) -> httpx.Response:
    return httpx.get(f"{gw.url}/ready", timeout=10)


def test_registry_killed_under_a_running_gateway(
    vllm_server: str, service: Service, tmp_path: Path
) -> None:
    service.start()
    with running_gateway(
        vllm_server,
        service.url,
        tmp_path / "cache",
        registry_timeout_s=2,  # type: ignore[arg-type]
    ) as gw:
        known = {"support-v1": "support-v1@1", "extract@production": "extract@1"}
        for model, ref in known.items():
            r = chat(gw, model)
            assert r.status_code == 200 and r.headers["x-loraport-adapter"] == ref, r.text
        with gw.client() as c:
            listed = [m["id"] for m in c.get("/v1/models").json()["data"]]
        first = ready(gw)
        assert first.status_code == 200
        assert first.json()["registry"] == {"state": "up", "stale_s": 0.0, "last_error": None}
        assert scrape(gw.url, "loraport_registry_stale_seconds") == 0.0

        service.kill()
        killed = time.monotonic()
        assert wait_until(lambda: ready(gw).json()["registry"]["state"] == "down", 10)
        print(f"registry down: seen after {time.monotonic() - killed:.2f} s")
        for model, ref in known.items():  # known names keep serving
            r = chat(gw, model)
            assert r.status_code == 200 and r.headers["x-loraport-adapter"] == ref, r.text
        with gw.client() as c:
            assert [m["id"] for m in c.get("/v1/models").json()["data"]] == listed
        time.sleep(0.5)
        now = ready(gw)
        assert now.status_code == 200, now.text  # stays ready: serves what it knows
        assert now.json()["ready"] is True
        detail = now.json()["registry"]
        assert detail["state"] == "down" and detail["stale_s"] > 0
        assert detail["last_error"] == "registry_unavailable"
        assert "127.0.0.1" not in now.text  # /ready answers anyone: no addresses
        assert scrape(gw.url, "loraport_registry_stale_seconds") > 0
        started = time.monotonic()
        r = chat(gw, "triage")  # never resolved by this gateway
        assert time.monotonic() - started < 1.0
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "registry_unavailable"
        assert int(r.headers["retry-after"]) >= 1

        service.start()
        back = time.monotonic()
        assert wait_until(lambda: ready(gw).json()["registry"]["state"] == "up", 10)
        print(f"registry back: seen after {time.monotonic() - back:.2f} s")
        assert scrape(gw.url, "loraport_registry_stale_seconds") == 0.0
        r = chat(gw, "triage")
        assert r.status_code == 200 and r.headers["x-loraport-adapter"] == "triage@1", r.text


def test_a_gateway_started_with_the_registry_down_waits_for_it(
    vllm_server: str, service: Service, tmp_path: Path
) -> None:
    with running_gateway(vllm_server, service.url, tmp_path / "cache", ready=False) as gw:  # type: ignore[arg-type]
        time.sleep(1.0)
        waiting = ready(gw)
        assert waiting.status_code == 503, waiting.text
        assert waiting.json()["waiting_for"] == "registry"
        assert waiting.json()["registry"]["state"] == "down"
        r = chat(gw, "extract")
        assert r.status_code == 503 and r.json()["error"]["code"] == "registry_unavailable"
        assert int(r.headers["retry-after"]) >= 1
        with gw.client() as c:
            assert c.get("/v1/models").status_code == 503

        service.start()
        up = time.monotonic()
        assert wait_until(lambda: ready(gw).status_code == 200, 60), ready(gw).text
        print(f"ready {time.monotonic() - up:.2f} s after the registry started")
        assert ready(gw).json()["registry"]["state"] == "up"
        r = chat(gw, "extract")
        assert r.status_code == 200 and r.headers["x-loraport-adapter"] == "extract@1", r.text


def routed_to(c: httpx.Client, model: str) -> str | None:
    """What the gateway routes `model` to now, without a generation: a request refused
    after routing (a malformed schema) names its target in the headers."""
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": "not a schema"}}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1, "response_format": bad}  # fmt: skip
    return c.post("/v1/chat/completions", json=body).headers.get("x-loraport-adapter")


@pytest.mark.parametrize("form", ["http", "directory"])
def test_alias_moves_reach_the_gateway_within_a_second(
    vllm_server: str, service: Service, tmp_path: Path, form: str
) -> None:
    """60 alias moves, on a registry service and on a directory: time from each move's
    commit until the gateway routes `NAME` to the new version (then one real generation
    confirms it)."""
    location = service.url if form == "http" else str(service.directory)
    if form == "http":
        service.start()
    source = tmp_path / "support-v1"
    shutil.copytree(adapter_dir("support-v2"), source)
    with registry.open(location, create=False) as reg:
        pushed = reg.push_adapter(source, base=BASE_NAME, allow_unknown_dataset=True)
        assert pushed.adapter.version == 2
    with (
        running_gateway(vllm_server, location, tmp_path / "cache") as gw,  # type: ignore[arg-type]
        gw.client() as c,
        registry.open(location, create=False) as reg,
    ):
        assert routed_to(c, "support-v1") == "support-v1@1"
        took = []
        for i in range(60):
            version = 2 if i % 2 == 0 else 1
            reg.set_alias("support-v1", "production", version)
            moved = time.monotonic()
            while routed_to(c, "support-v1") != f"support-v1@{version}":
                assert time.monotonic() - moved < 5, f"move {i} not seen in 5 s"
                time.sleep(0.005)
            took.append(time.monotonic() - moved)
            r = chat(gw, "support-v1")
            served = r.headers.get("x-loraport-adapter")
            assert r.status_code == 200 and served == f"support-v1@{version}", r.text
    took.sort()
    p50 = statistics.median(took)
    p99 = took[min(len(took) - 1, round(0.99 * (len(took) - 1)))]
    print(
        f"alias move -> routed, 60 moves, {form}: p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms"
    )
    assert p99 < 1.0
