"""What the cold-load share of bench/scaleout.py is made of, end to end: the gateway's
count of requests that waited for an adapter load (`loraport_adapter_load_waits_total`),
on the session's real vLLM; and the routing policy switch (`GATEWAY_ROUTING`) reaching
the router, on two instant backends (bench/instant_backend.py: no vLLM, runs anywhere).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from server.supervisor import free_port
from tests.conftest import ADAPTERS
from tests.server.conftest import running_gateway, scrape, wait_until
from tests.server.test_scaleout import ask, backends_ready, instant, loras, tidy
from tests.support import launch
from tests.support.launch import settings_env


@pytest.mark.vllm
def test_only_the_request_that_found_its_adapter_cold_counts_as_a_load_wait(
    vllm_server: str, zoo_registry: Path, tmp_path: Path
) -> None:
    adapter = ADAPTERS[1]  # plain text (extract answers JSON of its own schema)
    with (
        tidy(vllm_server, (adapter,)),
        running_gateway(vllm_server, zoo_registry, tmp_path / "cache") as gw,
    ):
        assert scrape(gw.url, "loraport_adapter_load_waits_total") == 0
        assert ask(gw.url, adapter).status_code == 200
        assert scrape(gw.url, "loraport_adapter_load_waits_total", adapter=adapter) == 1
        assert ask(gw.url, adapter).status_code == 200  # loaded now: no wait
        assert scrape(gw.url, "loraport_adapter_load_waits_total", adapter=adapter) == 1
        assert ask(gw.url, "tiny-llama").status_code == 200  # the base never waits
        assert scrape(gw.url, "loraport_adapter_load_waits_total") == 1


def held_by(urls: tuple[str, ...]) -> list[set[str]]:
    """The adapter names each backend holds."""
    return [{n.split("@")[0] for n in loras(u)} for u in urls]


@pytest.mark.parametrize(
    ("policy", "placement"),
    [
        # affinity: the second adapter nobody holds goes where more LRU slots are free.
        ("affinity", [{ADAPTERS[0]}, {ADAPTERS[1]}]),
        # least-loaded: one request at a time, nothing in flight: always the first listed.
        ("least-loaded", [{ADAPTERS[0], ADAPTERS[1]}, set()]),
    ],
)
def test_the_routing_policy_decides_where_adapters_load(
    policy: str, placement: list[set[str]], zoo_registry: Path, tmp_path: Path
) -> None:
    ports = (free_port(), free_port())
    backends = tuple(f"http://127.0.0.1:{p}" for p in ports)
    env = settings_env(routing=policy, probe_interval_s=300)
    with (
        instant(ports[0], tmp_path / "a.log"),
        instant(ports[1], tmp_path / "b.log"),
        launch.gateway(zoo_registry, tmp_path / "cache", backend=backends, env=env) as gw,
    ):
        assert wait_until(lambda: backends_ready(gw.url) == [True, True], 30)
        for adapter in (ADAPTERS[0], ADAPTERS[1], ADAPTERS[0], ADAPTERS[1]):
            assert ask(gw.url, adapter).status_code == 200
        assert held_by(backends) == placement
        # Two cold loads either way here; each later request found its adapter loaded.
        assert scrape(gw.url, "loraport_adapter_load_waits_total") == 2
        assert httpx.get(f"{gw.url}/ready", timeout=10).status_code == 200
