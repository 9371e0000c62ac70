"""The gateway on a registry service (`--registry http://...`): it serves as on the
directory, and learns of a write through the service without a per-request round trip."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import registry
from tests.server.conftest import RunningGateway, running_gateway, scrape
from tests.support.registry_service import registry_service

pytestmark = pytest.mark.vllm
TOKEN = "test-remote-registry-token"


@pytest.fixture(scope="module")
def service(zoo_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    copy = tmp_path_factory.mktemp("remote") / "registry"
    shutil.copytree(zoo_registry, copy)
    with registry_service(copy, copy.parent / "serve.log", token=TOKEN) as proc:
        yield proc.url


@pytest.fixture(scope="module")
def remote_gateway(
    vllm_server: str,
    service: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch_module: pytest.MonkeyPatch,
) -> Iterator[RunningGateway]:
    monkeypatch_module.setenv("REGISTRY_TOKEN", TOKEN)
    cache = tmp_path_factory.mktemp("remote-cache")
    with running_gateway(vllm_server, service, cache) as gw:  # type: ignore[arg-type]
        yield gw


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def chat(gw: RunningGateway, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with gw.client() as c:
        return c.post("/v1/chat/completions", json=body)


def test_serves_adapters_from_a_registry_service(remote_gateway: RunningGateway) -> None:
    r = chat(remote_gateway, "support-v1")
    assert r.status_code == 200, r.text
    assert r.headers["x-loraport-adapter"] == "support-v1@1"
    with remote_gateway.client() as c:
        models = {m["id"] for m in c.get("/v1/models").json()["data"]}
    assert {"support-v1", "extract"} <= models


def test_a_push_and_alias_move_reach_the_gateway(
    remote_gateway: RunningGateway, service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.zoo import BASE_NAME, adapter_dir

    monkeypatch.setenv("REGISTRY_TOKEN", TOKEN)
    source = tmp_path / "support-v1"
    shutil.copytree(adapter_dir("support-v2"), source)
    with registry.open(service) as reg:
        pushed = reg.push_adapter(source, base=BASE_NAME, allow_unknown_dataset=True)
        assert pushed.adapter.ref == "support-v1@2"
        assert chat(remote_gateway, "support-v1").headers["x-loraport-adapter"] == "support-v1@1"
        requests_before = scrape(service, "loraport_registry_requests_total", op="resolve")
        reg.set_alias("support-v1", "production", 2)
        moved = time.monotonic()
    seen = None
    while time.monotonic() - moved < 5:
        seen = chat(remote_gateway, "support-v1").headers.get("x-loraport-adapter")
        if seen == "support-v1@2":
            break
        time.sleep(0.05)
    took = time.monotonic() - moved
    print(f"alias move served after {took:.2f} s")
    assert seen == "support-v1@2" and took < 3
    # Served many times since: a cached route asks the registry nothing per request.
    for _ in range(5):
        assert chat(remote_gateway, "support-v1").status_code == 200
    after = scrape(service, "loraport_registry_requests_total", op="resolve")
    assert after - requests_before <= 3
    with registry.open(service) as reg:
        reg.set_alias("support-v1", "production", 1)
