"""The embedded default, end to end: `gateway serve` with no --backend launches its own
vLLM (on a Unix socket, or with `GATEWAY_LOCAL__UNIX_SOCKET=false` on a loopback port),
answers 503 + Retry-After while that vLLM is dead, restarts it, and takes it down on
exit."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import torch
from safetensors.torch import load_file, save_file

import registry
from server.supervisor import free_port
from tests.conftest import TEST_DTYPE, VLLM_START_TIMEOUT_S, adapter_dir, fill_registry, wait_for
from tests.server.conftest import wait_until
from tests.support import launch
from tests.support.harmful import harmful_adapter, push_as_older_loraport
from tests.support.unix_forward import tcp_to_unix

pytestmark = pytest.mark.vllm

MSGS = [{"role": "user", "content": "Hello, my parcel is late."}]


@pytest.fixture(scope="module")
def embedded_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded gateway's directory: its registry (``registry/``) and its cache."""
    root = tmp_path_factory.mktemp("embedded")
    fill_registry(root / "registry")
    return root


@pytest.fixture(scope="module")
def embedded(embedded_root: Path) -> Iterator[tuple[str, psutil.Process]]:
    root = embedded_root
    env = {
        "GATEWAY_LOCAL__DTYPE": TEST_DTYPE,
        "GATEWAY_LOCAL__RESTART_BACKOFF_S": "0.5",
        "GATEWAY_LOCAL__MAX_LORA_RANK": "8",
        "GATEWAY_PROBE_INTERVAL_S": "2",
    }
    with launch.gateway(root / "registry", root, backend=None, env=env) as proc:
        gateway = psutil.Process(proc.popen.pid)
        yield proc.url, gateway
        socket_dir = socket_of(vllm_of(gateway)).parent
    assert not socket_dir.exists(), "the gateway left its vLLM's socket directory behind"


def vllm_of(gateway: psutil.Process) -> psutil.Process:
    for child in gateway.children(recursive=True):
        if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no vLLM child process")


def socket_of(server: psutil.Process) -> Path:
    cmd = server.cmdline()
    return Path(cmd[cmd.index("--uds") + 1])


def over_socket(path: Path) -> httpx.Client:
    """A client of the vLLM listening at `path`."""
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(path)), base_url="http://localhost", timeout=60
    )


def tcp_listening(proc: psutil.Process) -> list[Any]:
    return [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]


def chat(url: str, model: str = "support-v1", **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=60,
        json={"model": model, "messages": MSGS, "max_tokens": 16, **extra},
    )


def test_serves_through_its_own_vllm(embedded: tuple[str, psutil.Process]) -> None:
    url, _ = embedded
    r = chat(url)
    assert r.status_code == 200, r.text
    assert r.headers["x-loraport-adapter"] == "support-v1@1"


def test_its_vllm_listens_on_a_private_unix_socket_alone(
    embedded: tuple[str, psutil.Process],
) -> None:
    """Issue 22: the embedded vLLM is reached over a Unix socket (a cheaper hop than TCP
    on loopback), and has no TCP port at all."""
    _, gateway = embedded
    server = vllm_of(gateway)
    cmd = server.cmdline()
    assert "--port" not in cmd and "--host" not in cmd
    path = socket_of(server)
    assert path.is_socket()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.parent.stat().st_uid == os.getuid()
    assert tcp_listening(server) == [], "the embedded vLLM listens on TCP too"
    assert str(path) in {c.laddr for c in server.net_connections(kind="unix")}
    with over_socket(path) as vllm:
        assert vllm.get("/health").status_code == 200


def placed(gateway: psutil.Process) -> tuple[set[int], set[int], set[int], set[int]]:
    """(cores vLLM's worker is bound to, the host's other cores, the gateway's cores,
    the engine core's cores), every thread of each process looked at."""
    members = {p.name(): p for p in group_members(vllm_of(gateway).pid)}

    def cores(p: psutil.Process) -> set[int]:
        return set().union(*(os.sched_getaffinity(t.id) for t in p.threads()))

    host = set(range(os.cpu_count() or 1))
    worker = next(cores(p) for name, p in members.items() if name.startswith("VLLM::Worker"))
    engine = next(cores(p) for name, p in members.items() if name.startswith("VLLM::EngineCor"))
    return worker, host - worker, cores(gateway), engine


def test_its_processes_are_placed_around_the_bound_worker(
    embedded: tuple[str, psutil.Process],
) -> None:
    """Issue 22, the default `gateway+engine`: the gateway on the cores vLLM's worker
    leaves free, vLLM's engine core (which spins while it waits for the worker) beside the
    worker. Where the worker is not bound to a subset of the host (not vLLM's CPU build
    here), nothing moves."""
    _, gateway = embedded
    worker, free, gateway_cores, engine_cores = placed(gateway)
    if worker and free:
        print(f"worker bound to {sorted(worker)}: checking the placement")
        assert (gateway_cores, engine_cores) == (free, worker)
    else:
        print(f"worker not bound ({sorted(worker)}): checking that nothing moved")
        assert gateway_cores == engine_cores == worker | free


def group_members(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, ProcessLookupError):
            continue
    return out


def test_vllm_crash_gives_503_then_recovers_leaving_no_orphans(
    embedded: tuple[str, psutil.Process],
) -> None:
    """kill -9 of vLLM's API server alone (as an OOM kill would): its engine core and
    worker must not survive it. Twice: every restart cleans up after itself. The killed
    server's socket file stays behind (vLLM will not bind over it): the new server listens
    on a fresh socket at the same path."""
    url, gateway = embedded
    restarts = 0
    for _ in range(2):
        old = vllm_of(gateway)
        assert len(group_members(old.pid)) >= 3  # API server, engine core, worker (+ tracker)
        path = socket_of(old)
        old_socket = path.stat().st_ino
        with ThreadPoolExecutor(1) as pool:  # a request in flight on the socket when it dies
            cut = pool.submit(chat, url, max_tokens=400, ignore_eos=True)
            time.sleep(1.5)
            os.kill(old.pid, signal.SIGKILL)
            r = cut.result()
        assert r.status_code in (502, 503), r.text
        assert r.json()["error"]["type"] in ("backend_error", "service_unavailable"), r.text
        assert wait_until(lambda: httpx.get(f"{url}/ready").status_code == 503, 30)
        r = chat(url)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "backend_unavailable"
        assert httpx.get(f"{url}/health").status_code == 200  # the gateway itself is fine
        wait_for(f"{url}/ready", VLLM_START_TIMEOUT_S)
        worker, free, _, engine = placed(gateway)  # ready only once placed: no race with it
        assert engine == (worker if free else worker | free)
        restarts += 1
        assert vllm_of(gateway).pid != old.pid
        assert group_members(old.pid) == [], "the killed server's engine or worker lives on"
        assert socket_of(vllm_of(gateway)) == path
        assert path.is_socket() and path.stat().st_ino != old_socket
        r = chat(url, "triage")  # adapters load again into the new server
        assert r.status_code == 200, r.text
        worker, free, _, engine = placed(gateway)  # still placed after loading an adapter
        assert engine == (worker if free else worker | free)
    engines = [
        p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("VLLM::Eng")
    ]
    mine = [p for p in engines if os.getpgid(p.pid) == vllm_of(gateway).pid]
    assert len(mine) == 1
    metrics = httpx.get(f"{url}/metrics").text
    assert f'loraport_backend_restarts_total{{backend="local"}} {restarts}.0' in metrics


def test_a_corrupted_engine_is_detected_and_restarted(
    embedded: tuple[str, psutil.Process], tmp_path: Path
) -> None:
    """An adapter with NaN weights, loaded straight into vLLM (the registry refuses it), made
    the base model answer "" with status 200 afterwards. The probe notices the base
    model's answer changed and the supervisor replaces the engine."""
    url, gateway = embedded
    vllm = over_socket(socket_of(vllm_of(gateway)))
    nan = tmp_path / "nan-adapter"
    shutil.copytree(adapter_dir("triage"), nan)
    weights = load_file(nan / "adapter_model.safetensors")
    save_file(
        {k: torch.full_like(v, float("nan")) if "lora_B" in k else v for k, v in weights.items()},
        nan / "adapter_model.safetensors",
    )
    before = httpx.get(f"{url}/metrics").text
    restarts = _sample(before, "loraport_backend_restarts_total")
    load = {"lora_name": "nan", "lora_path": str(nan)}
    with vllm:
        assert vllm.post("/v1/load_lora_adapter", json=load).status_code == 200
        body = {"messages": MSGS, "max_tokens": 8, "temperature": 0}
        vllm.post("/v1/chat/completions", json={**body, "model": "nan"})
        base = vllm.post("/v1/chat/completions", json={**body, "model": "tiny-llama"}).json()
    assert base["choices"][0]["message"]["content"] == ""  # the corruption is real
    assert wait_until(
        lambda: (
            _sample(httpx.get(f"{url}/metrics").text, "loraport_backend_restarts_total") > restarts
        ),
        60,
    )
    text = httpx.get(f"{url}/metrics").text
    assert _sample(text, "loraport_probe_failures_total", 'reason="changed"') >= 1
    wait_for(f"{url}/ready", VLLM_START_TIMEOUT_S)
    r = chat(url, "tiny-llama")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def _sample(text: str, name: str, having: str = "") -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and having in line
    )


def gateway_log(root: Path, lines: int = 40) -> str:
    """The gateway's own lines (no access lines) at the end of its log, for a failure."""
    own = [
        line
        for log in sorted(root.glob("gateway-*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "loraport.access" not in line and "not answering /health" not in line
    ]
    return "the gateway's log ends:\n" + "\n".join(own[-lines:])


def quarantine_of(location: Path, ref: str) -> registry.Quarantine | None:
    with registry.open(location, create=False) as reg:
        return reg.adapter(ref).quarantine


def test_an_adapter_that_answers_degenerately_is_quarantined_and_unloaded(
    embedded: tuple[str, psutil.Process], embedded_root: Path, tmp_path: Path
) -> None:
    """support-v1 with every weight 6e4 (finite in float16) answers "" while the engine
    stays healthy: quarantined on its first answer (its answer to the probe is empty
    too), unloaded, refused after; the engine is not restarted, the others keep serving."""
    url, _ = embedded
    location = embedded_root / "registry"
    ref = push_as_older_loraport(location, harmful_adapter(tmp_path / "looper", "support-v1",
                                                   fill_a=6e4, fill_b=6e4), "looper")  # fmt: skip
    restarts = _sample(httpx.get(f"{url}/metrics").text, "loraport_backend_restarts_total")
    r = chat(url, ref, temperature=0)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ""
    assert wait_until(lambda: quarantine_of(location, ref) is not None, 60), gateway_log(
        embedded_root
    )
    quarantine = quarantine_of(location, ref)
    assert quarantine is not None and "answers degenerately" in quarantine.reason
    r = chat(url, ref)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "adapter_quarantined"
    assert "registry quarantine rm looper@1" in r.json()["error"]["message"]
    text = httpx.get(f"{url}/metrics").text
    assert _sample(text, "loraport_degenerate_answers_total", 'adapter="looper"') == 1
    assert _sample(text, "loraport_quarantines_total", 'adapter="looper"') == 1
    assert _sample(text, "loraport_degenerate_answers_total", 'adapter="support-v1"') == 0
    assert _sample(text, "loraport_backend_restarts_total") == restarts
    ids = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
    assert "looper" not in ids and "support-v1" in ids
    r = chat(url, "support-v1")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].strip()


def test_an_engine_corrupting_adapter_is_quarantined_for_every_gateway(
    embedded: tuple[str, psutil.Process], embedded_root: Path, tmp_path: Path
) -> None:
    """Issue 17's adapter: lora_B filled with 3e38 answered "" and left the base model and
    every other adapter answering "" (200) until the engine was replaced, and did it again
    on its next request. Here it runs next to a good adapter: a long request of it, then a
    short one of triage that may finish first with "" on the corrupted engine. Only the
    bad one is quarantined (each suspect is replayed alone after the engine is replaced),
    and no gateway serves it again, including one that never saw it run."""
    url, gateway = embedded
    location = embedded_root / "registry"
    ref = push_as_older_loraport(location, harmful_adapter(tmp_path / "blaster", "triage",
                                                   fill_b=3e38), "blaster")  # fmt: skip
    wait_for(f"{url}/ready", VLLM_START_TIMEOUT_S)
    restarts = _sample(httpx.get(f"{url}/metrics").text, "loraport_backend_restarts_total")
    with ThreadPoolExecutor(2) as pool:
        bad = pool.submit(chat, url, ref, temperature=0, max_tokens=120)
        time.sleep(0.3)
        good = pool.submit(chat, url, "triage", temperature=0, max_tokens=8)
        answers = {"bad": bad.result(), "good": good.result()}
    print({k: (r.status_code, r.text[:200]) for k, r in answers.items()})
    assert answers["bad"].status_code == 200
    assert answers["bad"].json()["choices"][0]["message"]["content"] == ""
    quarantined = wait_until(lambda: quarantine_of(location, ref) is not None, VLLM_START_TIMEOUT_S)
    assert quarantined, gateway_log(embedded_root)  # one restart and a replay fit well within
    quarantine = quarantine_of(location, ref)
    assert quarantine is not None and "engine was corrupted" in quarantine.reason
    assert quarantine.who.startswith("gateway@")
    r = chat(url, ref)  # refused before any backend is asked, restarting or not
    assert r.status_code == 403 and r.json()["error"]["code"] == "adapter_quarantined"
    wait_for(f"{url}/ready", VLLM_START_TIMEOUT_S)
    assert _sample(httpx.get(f"{url}/metrics").text, "loraport_backend_restarts_total") > restarts

    def triage_served() -> bool:  # held (503 adapter_under_check) until its replay passed
        return chat(url, "triage").status_code == 200

    assert wait_until(triage_served, VLLM_START_TIMEOUT_S)
    assert quarantine_of(location, "triage@1") is None
    for model in ("tiny-llama", "support-v1", "triage"):
        r = chat(url, model)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].strip()
    # a second gateway on the same registry, in front of the same engine, never ran it
    env = {"GATEWAY_LOCAL__DTYPE": TEST_DTYPE}
    with (
        tcp_to_unix(socket_of(vllm_of(gateway))) as vllm,
        launch.gateway(location, tmp_path / "gw2", backend=vllm, env=env) as other,
    ):
        r = chat(other.url, ref)
        assert r.status_code == 403 and r.json()["error"]["code"] == "adapter_quarantined"
        assert "engine was corrupted" in r.json()["error"]["message"]


def test_on_tcp_it_serves_and_stopping_the_gateway_stops_its_vllm(tmp_path: Path) -> None:
    """With the Unix socket turned off the local vLLM listens on a loopback port and
    serves as before; SIGTERM to the gateway takes its vLLM process group down with it:
    no orphans."""
    root = tmp_path
    fill_registry(root / "registry")
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_LOCAL__DTYPE": TEST_DTYPE,
        "GATEWAY_CACHE_DIR": str(root),
        "GATEWAY_LOCAL__MAX_LORA_RANK": "8",
        "GATEWAY_LOCAL__UNIX_SOCKET": "false",
    }
    proc = subprocess.Popen(
        [launch.GATEWAY, "serve", "--registry", str(root / "registry"), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = psutil.Process(proc.pid)
    assert wait_until(
        lambda: any(
            "vllm.entrypoints" in " ".join(c.cmdline()) for c in gateway.children(recursive=True)
        ),
        60,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", VLLM_START_TIMEOUT_S)
        r = chat(f"http://127.0.0.1:{port}")
        assert r.status_code == 200, r.text
        server = vllm_of(gateway)
        cmd = server.cmdline()
        assert "--uds" not in cmd
        assert int(cmd[cmd.index("--port") + 1]) in {c.laddr.port for c in tcp_listening(server)}
    except BaseException:
        proc.terminate()  # the gateway takes its vLLM down (asserted below when all went well)
        proc.wait(60)
        raise
    children = gateway.children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert wait_until(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 30
    )
