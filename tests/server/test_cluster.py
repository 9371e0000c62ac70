"""What a cluster runs, as processes on this machine, started once for the module: one
`registry serve`, two vLLM CPU servers with the loraport resolver plugin (each knows only
REGISTRY_URL and REGISTRY_TOKEN, has its own adapter cache, and binds its OpenMP threads to
its own core), and two gateways in front of both (`--backend` twice, GATEWAY_BACKENDS_PULL).
Nothing is shared on disk but the registry's own directory, which only `registry serve`
reads.

The tests run in file order and build on each other: the plugin alone, a push served by
both gateways from both backends, a canary moving both gateways, a registry restart, and
last a vLLM server killed -9.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

import registry
from server.settings import GatewaySettings, LocalVllm
from server.supervisor import free_port, vllm_command, vllm_env
from tests.conftest import TEST_DTYPE
from tests.server.conftest import wait_until
from tests.support import launch
from tests.support.launch import Process, settings_env
from tests.support.registry_service import REGISTRY, registry_service
from tests.support.zoo import ADAPTERS, BASE_DIR, BASE_NAME, adapter_dir, fill_registry

pytestmark = pytest.mark.vllm

TOKEN = "cluster-5f0c2b7e9a1d4c3b"
DEPLOY = str(Path(sys.executable).with_name("deploy"))


@dataclass
class Cluster:
    registry_dir: Path
    registry_port: int
    registry: Process
    vllms: list[Process]
    plugin_caches: list[Path]
    gateways: list[Process]
    gateway_caches: list[Path]
    work: Path

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.registry_port}"

    def open(self) -> Any:
        settings = registry.RegistrySettings(user="tester", token=TOKEN)
        return registry.open(self.registry_url, settings=settings)


def vllm_settings() -> GatewaySettings:
    # A small KV cache each: two servers (and the session's own) share this host's memory.
    local = LocalVllm(dtype=TEST_DTYPE, max_loras=4, max_lora_rank=8, gpu_memory_utilization=0.05)
    return GatewaySettings(local=local, max_loaded_adapters=4)


def start_vllms(stack: ExitStack, work: Path, registry_url: str) -> list[tuple[Process, Path]]:
    """Two plugin vLLM servers, started side by side (each takes about a minute)."""
    started = []
    for core in (0, 1):
        port = free_port()
        cache = work / f"vllm-{core}-adapters"
        env = {
            **vllm_env(),
            "REGISTRY_URL": registry_url,
            "REGISTRY_TOKEN": TOKEN,
            "LORAPORT_PLUGIN_CACHE_DIR": str(cache),
            "VLLM_CPU_OMP_THREADS_BIND": str(core),
        }
        log = work / f"vllm-{core}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                vllm_command(vllm_settings(), BASE_DIR, BASE_NAME, port),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Process(f"http://127.0.0.1:{port}", popen, log)
        stack.callback(proc.stop)
        started.append((proc, cache))
    for proc, _ in started:
        try:
            launch.wait_for(proc.url + "/health", launch.VLLM_START_TIMEOUT_S, proc.popen)
        except BaseException:
            print(proc.log.read_text(errors="replace")[-4000:])
            raise
    return started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    registry_dir = work / "registry"
    fill_registry(registry_dir)
    port = free_port()
    with ExitStack() as stack:
        served = stack.enter_context(
            registry_service(registry_dir, work / "registry.log", token=TOKEN, port=port)
        )
        vllms = start_vllms(stack, work, served.url)
        gateways, caches = [], []
        env = {
            "REGISTRY_TOKEN": TOKEN,
            # One request in flight on an adapter's holder is enough to spread it: this
            # module shows both backends serving one adapter without minutes of load.
            **settings_env(backends_pull=True, spread_in_flight=1, probe_interval_s=2),
        }
        backends = tuple(proc.url for proc, _ in vllms)
        for i in (0, 1):
            cache = work / f"gateway-{i}"
            gw = launch.gateway(served.url, cache, backend=backends, env=env)
            gateways.append(stack.enter_context(gw))
            caches.append(cache)
        running = Cluster(
            registry_dir, port, served, [p for p, _ in vllms], [c for _, c in vllms],
            gateways, caches, work,
        )  # fmt: skip
        # A test may restart the registry server: the one running at the end is stopped
        # (the first one's own exit stops only the first).
        stack.callback(lambda: running.registry.stop())
        yield running


def chat(url: str, model: str, max_tokens: int = 4) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=120,
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Where is my order?"}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
    )


def loras(vllm_url: str) -> set[str]:
    data = httpx.get(f"{vllm_url}/v1/models", timeout=10).json()["data"]
    return {str(m["id"]) for m in data if m.get("parent")}


def cached(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def digest_hex(c: Cluster, ref: str) -> str:
    with c.open() as reg:
        return str(reg.adapter(ref).digest.hex)


def test_a_vllm_server_pulls_an_adapter_by_its_ref(cluster: Cluster) -> None:
    vllm, cache = cluster.vllms[0], cluster.plugin_caches[0]
    r = chat(vllm.url, "extract@1")
    assert r.status_code == 200, r.text
    assert "extract@1" in loras(vllm.url)
    assert cached(cache) == [digest_hex(cluster, "extract@1")]
    # The stable name a gateway uses for the same version: the same files, loaded again.
    with cluster.open() as reg:
        stable = registry.lora_name(reg.adapter("extract@1"))
    assert chat(vllm.url, stable).status_code == 200
    assert cached(cache) == [digest_hex(cluster, "extract@1")]
    # First requests for two versions at once, four each: one pull per version.
    names = ["triage@1", "support-v1@1"] * 4
    with ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(lambda name: chat(vllm.url, name), names))
    assert [r.status_code for r in answers] == [200] * len(names), [r.text for r in answers]
    expected = {digest_hex(cluster, ref) for ref in ("extract@1", "triage@1", "support-v1@1")}
    assert set(cached(cache)) == expected


def test_names_that_are_not_immutable_or_hostile_are_not_found(cluster: Cluster) -> None:
    vllm, cache = cluster.vllms[1], cluster.plugin_caches[1]
    before = cached(cache)
    for name in (
        "extract",  # moves with `production`
        "extract@production",
        "nobody@1",
        "../../../etc/passwd",
        "extract@1+000000000000",  # names other content than extract@1's
        "x" * 4000,
    ):
        r = chat(vllm.url, name)
        assert r.status_code == 404, (name, r.text)
    assert cached(cache) == before
    assert "never changes its weights" in vllm.log.read_text(errors="replace")
    assert chat(vllm.url, BASE_NAME).status_code == 200  # no resolver failure broke it


def test_an_adapter_pushed_over_http_is_served_by_both_gateways_from_both_backends(
    cluster: Cluster, tmp_path: Path
) -> None:
    source = tmp_path / "fresh"
    shutil.copytree(adapter_dir(ADAPTERS[1]), source)
    with cluster.open() as reg:
        pushed = reg.push_adapter(source, name="fresh", base=BASE_NAME, allow_unknown_dataset=True)
        stable = registry.lora_name(pushed.adapter)

    def burst(url: str) -> list[httpx.Response]:
        with ThreadPoolExecutor(6) as pool:
            return list(pool.map(lambda _: chat(url, "fresh", 8), range(6)))

    for gw in cluster.gateways:
        wait_until(lambda gw=gw: chat(gw.url, "fresh").status_code != 404, 15)
        answers = burst(gw.url)
        assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
        assert {r.json()["model"] for r in answers} == {"fresh@1"}
    # Both backends hold it (spread by in-flight load), each pulled into its own cache;
    # neither gateway holds a copy.
    assert all(stable in loras(v.url) for v in cluster.vllms), [loras(v.url) for v in cluster.vllms]
    fresh = digest_hex(cluster, "fresh@1")
    assert all(fresh in cached(cache) for cache in cluster.plugin_caches)
    assert all(not cached(cache / "adapters") for cache in cluster.gateway_caches)


def test_a_canary_moves_both_gateways_splits_together(cluster: Cluster, tmp_path: Path) -> None:
    source = tmp_path / "triage-v2"
    shutil.copytree(adapter_dir(ADAPTERS[0]), source)
    with cluster.open() as reg:
        reg.push_adapter(source, name="triage", base=BASE_NAME, allow_unknown_dataset=True)
    cmd = [DEPLOY, "canary", "triage", "--registry", cluster.registry_url, "--to", "2",
           "--steps", "50,100", "--interval", "3s", "--min-requests", "2",
           "--max-latency-ratio", "1000", "--lease-ttl", "5s"]  # fmt: skip
    for gw in cluster.gateways:
        cmd += ["--gateway", gw.url]
    env = {**os.environ, "REGISTRY_TOKEN": TOKEN}
    log = (tmp_path / "deploy.log").open("wb")
    deploy = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    arms: dict[int, set[str]] = {0: set(), 1: set()}
    deadline = time.monotonic() + 180
    try:
        while deploy.poll() is None and time.monotonic() < deadline:
            for i, gw in enumerate(cluster.gateways):
                r = chat(gw.url, "triage")
                assert r.status_code == 200, r.text
                arms[i].add(r.headers["x-loraport-adapter"])
    finally:
        if deploy.poll() is None:
            deploy.kill()
        deploy.wait()
    said = (tmp_path / "deploy.log").read_text()
    assert deploy.returncode == 0, said
    assert "promoted" in said
    # Each gateway served both versions during the split, then only the new one.
    assert arms == {0: {"triage@1", "triage@2"}, 1: {"triage@1", "triage@2"}}, arms
    for gw in cluster.gateways:
        assert wait_until(
            lambda gw=gw: chat(gw.url, "triage").headers["x-loraport-adapter"] == "triage@2", 15
        )


def widened(source: Path, dest: Path, rank: int) -> Path:
    """`source`'s adapter at rank `rank`: zero rows and columns added and alpha scaled with
    the rank, so its update (what the registry's checks see) is the same, but a vLLM
    started with a smaller --max-lora-rank cannot load it."""
    shutil.copytree(source, dest)
    config = json.loads((dest / "adapter_config.json").read_text())
    config["lora_alpha"] = config["lora_alpha"] * rank // config["r"]
    old, config["r"] = config["r"], rank
    (dest / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(dest / "adapter_model.safetensors")
    for key, t in tensors.items():
        if ".lora_A." in key:  # [r, in]
            tensors[key] = torch.cat([t, t.new_zeros(rank - old, t.shape[1])], dim=0)
        elif ".lora_B." in key:  # [out, r]
            tensors[key] = torch.cat([t, t.new_zeros(t.shape[0], rank - old)], dim=1)
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    return dest


def test_an_adapter_vllm_cannot_load_is_refused_beside_good_ones(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Rank 16 is within the registry's bound but above these servers' --max-lora-rank 8
    (a cluster whose vLLM pods were started narrower than the registry allows)."""
    wide = widened(adapter_dir("extract"), tmp_path / "wide", 16)
    with cluster.open() as reg:
        pushed = reg.push_adapter(wide, name="wide", base=BASE_NAME, allow_unknown_dataset=True)
        stable = registry.lora_name(pushed.adapter)
    direct = chat(cluster.vllms[0].url, "wide@1")
    print("vLLM directly:", direct.status_code, direct.text[:300])
    gw = cluster.gateways[0]
    wait_until(lambda: chat(gw.url, "wide").status_code != 404, 15)
    r = chat(gw.url, "wide")
    print("gateway:", r.status_code, r.text[:500])
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "adapter_load_failed", error
    assert "rank 16 needs vLLM started with --max-lora-rank 16" in error["message"], error
    assert stable not in loras(cluster.vllms[0].url)
    for model in (BASE_NAME, "support-v1", "triage", "fresh"):
        assert chat(gw.url, model).status_code == 200, model
    assert httpx.get(f"{gw.url}/ready", timeout=10).status_code == 200


def test_a_registry_server_killed_and_restarted_loses_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    source = tmp_path / "late"
    shutil.copytree(adapter_dir(ADAPTERS[2]), source)
    config = json.loads((source / "adapter_config.json").read_text())
    config["lora_dropout"] = 0.01  # content no server has cached (caches go by digest)
    (source / "adapter_config.json").write_text(json.dumps(config))
    with cluster.open() as reg:
        reg.push_adapter(source, name="late", base=BASE_NAME, allow_unknown_dataset=True)
        before = [(a.ref, a.digest) for a in reg.list_adapters()]
        never_pulled = digest_hex(cluster, "late@1")
    os.killpg(cluster.registry.popen.pid, signal.SIGKILL)
    cluster.registry.popen.wait()
    # A version no server pulled yet cannot be fetched now: vLLM says "not found" (the
    # plugin logs why) and keeps serving; a gateway that never resolved it says 503.
    vllm = cluster.vllms[0]
    r = chat(vllm.url, "late@1")
    assert r.status_code == 404, r.text
    assert "cannot fetch 'late@1' from the registry" in vllm.log.read_text(errors="replace")
    assert never_pulled not in cached(cluster.plugin_caches[0])
    assert chat(vllm.url, BASE_NAME).status_code == 200
    r = chat(cluster.gateways[0].url, "late@1")
    assert r.status_code == 503 and "retry-after" in r.headers, r.text
    # Known names keep serving while the registry is down (each gateway's route cache,
    # each backend's loaded adapters).
    for gw in cluster.gateways:
        r = chat(gw.url, "fresh")
        assert r.status_code == 200, r.text
        assert httpx.get(f"{gw.url}/ready", timeout=10).status_code == 200
    cmd = [REGISTRY, "serve", "--registry", str(cluster.registry_dir),
           "--port", str(cluster.registry_port)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY_URL"}
    env["REGISTRY_TOKEN"] = TOKEN
    log = cluster.work / "registry-again.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
    cluster.registry = Process(cluster.registry_url, popen, log)
    launch.wait_for(cluster.registry_url + "/ready", 60, popen)
    with cluster.open() as reg:
        assert [(a.ref, a.digest) for a in reg.list_adapters()] == before
        assert reg.verify().ok
    # Each gateway's watch sees the registry back within about a second (until then a
    # name it never resolved is a 503 with Retry-After); a version nobody loaded yet is
    # then pulled through the restarted registry.
    for gw in cluster.gateways:
        assert wait_until(lambda gw=gw: registry_state(gw.url) == "up", 10)
        r = chat(gw.url, "support-v2@1")
        assert r.status_code == 200, r.text


def test_killing_one_vllm_server_keeps_both_gateways_serving(cluster: Cluster) -> None:
    victim = cluster.vllms[1]
    os.killpg(victim.popen.pid, signal.SIGKILL)
    victim.popen.wait()
    models = (BASE_NAME, "fresh", "support-v2@1", "support-v1", "triage")
    for gw in cluster.gateways:
        for model in models:
            r = chat(gw.url, model)
            assert r.status_code == 200, (gw.url, model, r.text)
        ready = httpx.get(f"{gw.url}/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        # The gateway took the dead server out: by a request that could not reach it
        # (rerouted) or by its probe, whichever came first.
        assert wait_until(lambda gw=gw: backends_ready(gw.url) == [True, False], 30)
    assert chat(cluster.vllms[0].url, "fresh@1").status_code == 200  # the live one, directly


def registry_state(url: str) -> str:
    return str(httpx.get(f"{url}/ready", timeout=10).json()["registry"]["state"])


def backends_ready(url: str) -> list[bool]:
    return [b["ready"] for b in httpx.get(f"{url}/ready", timeout=10).json()["backends"]]
