"""The rendered cpu overlay runs: every workload's init containers and container are
started from the manifest (command, args, env; tests/k8s/loopback.py maps Services,
ports and volumes to loopback), each probe answers on the port and path the manifest
names, and a request through the gateway is served by the vLLM server the manifest
starts, with the adapter pulled by its resolver plugin. A typo in a command, flag, env
name, port or path fails here.

Then a real Prometheus scrapes what the ServiceMonitors name (their ports and paths,
jobs named after the Services as the operator names them), traffic runs (both arms of a
rollout recorded for the controller, a JSON-contract failure, and requests while the
vLLM server is down), and every dashboard query and every alert expression (its
comparison made a `bool` one, so it returns its figures whether or not it fires) returns
data."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

import registry
from server.supervisor import free_port
from tests.k8s.conftest import OVERLAYS, ROOT, find, render
from tests.k8s.loopback import Loopback, selects
from tests.support.launch import VLLM_START_TIMEOUT_S, serving, wait_for
from tests.support.zoo import BASE_DIR, BASE_NAME, EXAMPLES, adapter_dir, fill_registry

pytestmark = pytest.mark.vllm

TOKEN = "k8s-loopback-3c9e1f0a7b2d"
SCRAPE_S = 1
DEPLOY = str(Path(sys.executable).with_name("deploy"))
#: Cannot be met in 4 tokens: a JSON-contract failure (422).
WORKLOADS = [("StatefulSet", "registry"), ("Deployment", "vllm"), ("Deployment", "gateway"),
             ("Deployment", "rollout-controller")]  # fmt: skip
IMPOSSIBLE = {"type": "object", "properties": {"reply": {"type": "string", "minLength": 400}},
              "required": ["reply"]}  # fmt: skip


@dataclass
class Running:
    lo: Loopback
    gateway: str
    prometheus: str
    vllm: subprocess.Popen[bytes]
    work: Path


def scrape_config(lo: Loopback) -> str:
    """Prometheus' scrape jobs from the ServiceMonitors: job = the Service's name (the
    operator's default), the endpoint's port name and path, `pod` as the operator adds."""
    jobs = []
    for sm in (d for d in lo.docs if d["kind"] == "ServiceMonitor"):
        for svc in (d for d in lo.docs if d["kind"] == "Service"):
            if not selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]):
                continue
            for ep in sm["spec"]["endpoints"]:
                (port,) = [p["port"] for p in svc["spec"]["ports"] if p["name"] == ep["port"]]
                name = svc["metadata"]["name"]
                jobs.append({
                    "job_name": name, "metrics_path": ep["path"],
                    "scrape_interval": f"{SCRAPE_S}s",
                    "static_configs": [{"targets": [f"127.0.0.1:{lo.ports[(name, port)]}"],
                                        "labels": {"pod": f"{name}-0",
                                                   "namespace": "loraport"}}],
                })  # fmt: skip
    return yaml.safe_dump({"global": {"scrape_interval": f"{SCRAPE_S}s"}, "scrape_configs": jobs})


def start_pod(stack: ExitStack, lo: Loopback, kind: str, name: str, timeout_s: float = 90
              ) -> subprocess.Popen[bytes]:  # fmt: skip
    doc = lo.workload(kind, name)
    log = lo.work / f"{name}.log"
    lo.run_init(doc, log)
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    proc = lo.start(doc, c, log)
    stack.callback(stop, proc)
    urls = lo.probe_urls(doc, c)
    try:
        wait_for(urls.get("startupProbe", urls["readinessProbe"]), timeout_s, proc)
        for url in urls.values():
            wait_for(url, 30, proc)
    except BaseException:
        print(log.read_text(errors="replace")[-4000:])
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        pytest.fail("prometheus is not installed: `scripts/test-deps.sh` installs it")
    work = tmp_path_factory.mktemp("k8s-loopback")
    docs = render(OVERLAYS["cpu"])
    assert find(docs, "ConfigMap", "loraport-settings")["data"]["base-model"] == BASE_NAME
    lo = Loopback(docs, work, secrets={("loraport-registry-token", "token"): TOKEN})
    prom_port = free_port()
    lo.settings["prometheus-url"] = f"http://127.0.0.1:{prom_port}"
    (work / "prometheus.yml").write_text(scrape_config(lo))
    with ExitStack() as stack:
        prom = stack.enter_context(serving(
            [prometheus_bin, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            prom_port, work / "prometheus.log", "/-/ready", {}, 60))  # fmt: skip
        # the registry pod: its init container creates the registry on the pod's volume;
        # a person then pushes the base and adapters (here: into the directory, before
        # `registry serve` starts; over HTTP in docs/kubernetes.md)
        registry_doc = lo.workload("StatefulSet", "registry")
        lo.run_init(registry_doc, work / "registry.log")
        location = lo.mounts(
            registry_doc, registry_doc["spec"]["template"]["spec"]["containers"][0]
        )
        reg_dir = location["/data"] / "registry"
        fill_registry(reg_dir)
        with registry.open(reg_dir, create=False) as reg:  # a second version to roll out
            reg.push_adapter(adapter_dir("support-v2"), name="support-v1", base=BASE_NAME,
                             dataset=EXAMPLES / "data" / "support-v2.jsonl")  # fmt: skip
        registry_doc["spec"]["template"]["spec"].pop("initContainers")  # ran above
        start_pod(stack, lo, "StatefulSet", "registry")
        vllm = start_pod(stack, lo, "Deployment", "vllm", timeout_s=VLLM_START_TIMEOUT_S)
        start_pod(stack, lo, "Deployment", "gateway")
        start_pod(stack, lo, "Deployment", "rollout-controller")
        yield Running(lo, lo.url("gateway", 8000), prom.url, vllm, work)


def chat(url: str, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Hello, my order has not arrived."}],
            **extra}  # fmt: skip
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_a_request_is_served_through_the_manifests_processes(running: Running) -> None:
    r = chat(running.gateway, "support-v1", user="someone")
    assert r.status_code == 200, r.text
    assert r.headers["x-loraport-adapter"] == "support-v1@1"
    # the vLLM server pulled the adapter itself, into the cache the manifest names
    vllm = running.lo.workload("Deployment", "vllm")
    cache = running.lo.mounts(vllm, vllm["spec"]["template"]["spec"]["containers"][0])["/cache"]
    assert any((cache / "adapters").iterdir())
    assert (cache.parent / "models" / "base" / "config.json").is_file()
    assert sorted(p.name for p in (cache.parent / "models" / "base").iterdir()) == sorted(
        p.name for p in BASE_DIR.iterdir()
    )
    # nothing was written outside the pods' volumes (the root filesystem is read-only)
    for kind, name in WORKLOADS:
        root = running.lo.root(running.lo.workload(kind, name))
        assert list(root.iterdir()) == [], (name, list(root.iterdir()))


def promql(prometheus: str, query: str) -> list[object]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=30)
    assert r.status_code == 200, (query, r.text)
    return r.json()["data"]["result"]  # type: ignore[no-any-return]


def as_figures(expr: str) -> str:
    """An alert expression that returns its figures whether or not it fires: `absent(X)`
    becomes X, each comparison a `bool` one."""
    expr = " ".join(expr.split())
    if expr.startswith("absent(") and expr.endswith(")"):
        expr = expr[len("absent(") : -1]
    return re.sub(r" (==|!=|>=|<=|>|<) (?!bool)", r" \1 bool ", expr)


def test_every_dashboard_query_and_alert_returns_data(running: Running) -> None:
    recorded = subprocess.run(
        [DEPLOY, "canary", "support-v1", "--to", "2", "--detach", "--steps", "50,100",
         "--interval", "2s", "--min-requests", "100"],
        env={"REGISTRY_URL": running.lo.url("registry", 8700), "REGISTRY_TOKEN": TOKEN,
             "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    time.sleep(2.5)  # the gateway's watch sees the split; the controller takes the rollout
    arms = {chat(running.gateway, "support-v1", user=f"user-{i}").headers.get("x-loraport-arm")
            for i in range(24)}  # fmt: skip
    assert arms == {"stable", "canary"}
    schema = {"type": "json_schema", "json_schema": {"name": "reply", "schema": IMPOSSIBLE}}
    assert chat(running.gateway, "support-v2", response_format=schema).status_code == 422
    time.sleep(3 * SCRAPE_S)
    stop(running.vllm)  # a backend down: the 5xx series and the backend-down figures
    failed = [chat(running.gateway, "support-v1", user="u").status_code for _ in range(3)]
    assert all(s >= 500 for s in failed), failed
    time.sleep(4 * SCRAPE_S)
    dashboard_cm = find(running.lo.docs, "ConfigMap", "loraport-grafana-dashboard")
    dashboard = json.loads(next(iter(dashboard_cm["data"].values())))
    queries = {p["title"]: t["expr"].replace("$__rate_interval", "1m")
               for p in dashboard["panels"] for t in p["targets"]}  # fmt: skip
    rule = find(running.lo.docs, "PrometheusRule", "loraport")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            queries[r["alert"]] = as_figures(r["expr"])
    empty = [f"{name}: {q}" for name, q in queries.items() if not promql(running.prometheus, q)]
    assert empty == []
    # the controller the manifest starts judged the rollout from the Prometheus it names
    # (too few requests for --min-requests 100: it holds, so the rollout stays active)
    settings = registry.RegistrySettings(token=TOKEN)
    with registry.open(running.lo.url("registry", 8700), settings=settings) as reg:
        active = reg.rollout("support-v1")
    assert active is not None and active.analyses, "the controller never judged the rollout"
    assert {a.verdict for a in active.analyses} == {"hold"}
    source = active.analyses[-1].figures["source"]
    assert running.prometheus.removeprefix("http://") in source, source
