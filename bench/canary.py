"""Canary rollouts, measured: split accuracy, and how fast a bad canary is rolled back.

    .venv/bin/python bench/canary.py [--quick]

1. **split, pure**: the share of 100,000 synthetic users the arm function sends to the
   canary at weights 1, 5, 10, 25 and 50 (`server.canary.Split`), against the weight;
2. **split, live**: 2,000 users, each asking once through each of two real gateways
   (`gateway serve --backend`, own processes) in front of one real vLLM, at weight 10:
   the canary share and how many users saw both arms;
3. **time to rollback**: a real Prometheus scrapes both gateways every second; a bad
   canary (a version whose schema cannot be met in the token budget: every canary answer
   is a 422) is rolled out by `deploy canary --prometheus` at each interval while four
   clients send traffic. Measured from the first failed canary answer a client saw: when
   the registry recorded the rollback, and when the last gateway stopped sending a canary
   user to the canary (a probe per gateway asks as that user every 100 ms). Reported in
   seconds and in intervals (target: within two; Flagger's defaults take about five).
4. **degenerate answers of healthy adapters** (what ``--max-degenerate-rate`` must let
   pass): each demo adapter, through a gateway on its pinned ref, greedy, answers the
   probe's question, the live tests' question and the first five user prompts of each
   demo data set, at 16 and at 64 tokens; the gateway's own
   ``loraport_degenerate_answers_total`` over its ``loraport_requests_total``, per
   adapter. ``--only degenerate`` runs this part alone.

Prints one JSON line. Machine notes in bench/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import registry  # noqa: E402
from bench.harness import machine  # noqa: E402
from deploy.controller import epoch  # noqa: E402
from server.canary import CANARY, Split, position, sticky_key  # noqa: E402
from server.probe import PROBE_MESSAGE, degenerate  # noqa: E402
from server.settings import GatewaySettings, LocalVllm  # noqa: E402
from server.supervisor import free_port  # noqa: E402
from tests.support import launch  # noqa: E402
from tests.support.zoo import BASE_DIR, BASE_NAME, EXAMPLES, adapter_dir  # noqa: E402

DEPLOY = str(Path(sys.executable).with_name("deploy"))
IMPOSSIBLE = {
    "type": "object",
    "properties": {"reply": {"type": "string", "minLength": 400}},
    "required": ["reply"],
}
MESSAGES = [{"role": "user", "content": "Hello, my order #71033 has not arrived."}]
DEMO = ("support-v1", "support-v2", "triage", "extract")


def split_pure(users: int) -> dict[str, float]:
    out = {}
    for weight in (1.0, 5.0, 10.0, 25.0, 50.0):
        split = Split(weight, "bench#1")
        share = 100 * sum(split.arm(f"u:user-{i}") == CANARY for i in range(users)) / users
        out[f"w{weight:g}"] = round(share - weight, 3)
    return out


def ask(client: httpx.Client, model: str, user: str, max_tokens: int = 4) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "user": user,
            "temperature": 0}  # fmt: skip
    return client.post("/v1/chat/completions", json=body)


def split_live(reg_dir: Path, gateways: list[str], users: int) -> dict[str, Any]:
    with registry.open(reg_dir, create=False) as reg:
        reg.set_alias("support", "production", 1)
        rollout = reg.start_rollout("support", 2, steps=[10])
    time.sleep(2.5)
    clients = [httpx.Client(base_url=u, timeout=120) for u in gateways]
    names = [f"customer-{i}" for i in range(users)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        arms = list(
            pool.map(
                lambda job: (job[0], ask(clients[job[1]], "support", job[0], 1)),
                [(u, g) for u in names for g in range(len(clients))],
            )
        )
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    seen: dict[str, set[str]] = {}
    for user, r in arms:
        seen.setdefault(user, set()).add(r.headers.get("x-loraport-arm", "?"))
    canary = sum("canary" in s for s in seen.values())
    with registry.open(reg_dir, create=False) as reg:
        reg.end_rollout("support", rollout.id, "aborted", reason="bench over")
    return {
        "users": users,
        "weight": rollout.weight,
        "canary_share": round(100 * canary / users, 2),
        "users_on_both_arms": sum(len(s) > 1 for s in seen.values()),
        "errors": sum(r.status_code != 200 for _, r in arms),
        "requests_per_s": round(len(arms) / wall, 1),
    }


def canary_user(salt: str, weight: float) -> str:
    """A user the split sends to the canary at ``weight`` (for the per-gateway probes)."""
    for i in itertools.count():
        if position(sticky_key(f"probe-{i}", None) or "", salt) < weight:
            return f"probe-{i}"
    raise AssertionError


def rollback_once(
    reg_dir: Path, gateways: list[str], prometheus: str, interval_s: float
) -> dict[str, Any]:
    with registry.open(reg_dir, create=False) as reg:
        reg.set_alias("faq", "production", 1)
        next_id = max([r.id for r in reg.rollouts("faq")] + [0]) + 1
    weight = 25.0
    probe_user = canary_user(f"faq#{next_id}", weight)
    stop = threading.Event()
    failures: list[float] = []
    stable_errors: list[int] = []
    probes: dict[int, list[tuple[float, str]]] = {i: [] for i in range(len(gateways))}
    users = itertools.cycle(range(300))
    lock = threading.Lock()

    def traffic(i: int) -> None:
        with httpx.Client(base_url=gateways[i % len(gateways)], timeout=120) as c:
            while not stop.is_set():
                with lock:
                    user = f"user-{next(users)}"
                r = ask(c, "faq", user)
                arm = r.headers.get("x-loraport-arm")
                if arm == "canary" and r.status_code != 200:
                    failures.append(time.time())
                elif arm == "stable" and r.status_code != 200:
                    stable_errors.append(r.status_code)

    def probe(i: int) -> None:
        with httpx.Client(base_url=gateways[i], timeout=120) as c:
            while not stop.is_set():
                r = ask(c, "faq", probe_user, 1)
                probes[i].append((time.time(), r.headers.get("x-loraport-arm", "?")))
                time.sleep(0.1)

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=probe, args=(i,)) for i in range(len(gateways))]
    for t in threads:
        t.start()
    try:
        cmd = [DEPLOY, "--registry", str(reg_dir), "canary", "faq", "--to", "2",
               "--steps", f"{weight:g},50,100", "--interval", f"{interval_s:g}s",
               "--min-requests", "5", "--prometheus", prometheus]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    with registry.open(reg_dir, create=False) as reg:
        final = reg.rollouts("faq")[-1]
    ended = epoch(final.ended_at or "")
    first = min(failures) if failures else float("nan")
    last_switch = max(
        min((t for t, arm in samples if t > ended and arm == "stable"), default=float("nan"))
        for samples in probes.values()
    )
    return {
        "interval_s": interval_s,
        "state": final.state,
        "exit": done.returncode,
        "analyses": len(final.analyses),
        "to_rollback_s": round(ended - first, 2),
        "to_every_gateway_s": round(last_switch - first, 2),
        "in_intervals": round((last_switch - first) / interval_s, 2),
        "stable_errors": len(stable_errors),
    }


def prompts() -> list[str]:
    """The probe's question, the live tests' question, and five user prompts of each demo
    data set."""
    out = [PROBE_MESSAGE, MESSAGES[0]["content"]]
    for data in sorted((EXAMPLES / "data").glob("*.jsonl")):
        rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
        chats = [r["messages"] for r in rows if "messages" in r]
        out += [next(m["content"] for m in c if m["role"] == "user") for c in chats[:5]]
    return out


def scrape_sum(gateway: str, name: str, adapter: str) -> float:
    text = httpx.get(f"{gateway}/metrics", timeout=30).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("adapter") == adapter
    )


def degenerate_baseline(gateway: str) -> dict[str, Any]:
    """Degenerate answers of the healthy demo adapters, as the gateway counts them."""
    asked = prompts()
    out: dict[str, Any] = {"prompts": len(asked), "max_tokens": [16, 64]}
    with httpx.Client(base_url=gateway, timeout=300) as c:
        for adapter in DEMO:
            examples: list[str] = []
            statuses: dict[int, int] = {}
            for max_tokens in (16, 64):
                for prompt in asked:
                    body = {"model": f"demo-{adapter}@1", "max_tokens": max_tokens,
                            "temperature": 0,
                            "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
                    r = c.post("/v1/chat/completions", json=body)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code != 200:  # extract's schema cut off at 16 tokens: a 422
                        continue
                    text = r.json()["choices"][0]["message"]["content"] or ""
                    if degenerate(text) is not None and len(examples) < 3:
                        examples.append(text)
            requests = scrape_sum(gateway, "loraport_requests_total", f"demo-{adapter}")
            bad = scrape_sum(gateway, "loraport_degenerate_answers_total", f"demo-{adapter}")
            out[adapter] = {"requests": requests, "statuses": statuses, "degenerate": bad,
                            "examples": examples}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer users, one interval")
    parser.add_argument("--only", choices=["degenerate"], help="run one part alone")
    args = parser.parse_args()
    if shutil.which("prometheus") is None:
        sys.exit("prometheus is not installed: apt-get install -y prometheus")
    result: dict[str, Any] = {"bench": "canary", "quick": args.quick, "machine": machine()}
    result["split_pure_error_points"] = split_pure(20_000 if args.quick else 100_000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-canary-"))
    reg_dir = tmp / "registry"
    with registry.open(reg_dir) as reg:
        reg.add_base(BASE_DIR, name=BASE_NAME)
        data = EXAMPLES / "data" / "support-v1.jsonl"
        for name, source, schema in (("support", "support-v1", None),
                                     ("support", "support-v2", None),
                                     ("faq", "support-v1", None),
                                     ("faq", "support-v1", IMPOSSIBLE)):  # fmt: skip
            reg.push_adapter(adapter_dir(source), name=name, dataset=data, schema=schema)
        for name in DEMO:  # "demo-": the data sets take the adapters' own names
            reg.push_adapter(adapter_dir(name), name=f"demo-{name}",
                             dataset=EXAMPLES / "data" / f"{name}.jsonl")  # fmt: skip
    settings = GatewaySettings(local=LocalVllm(max_loras=4, max_lora_rank=8))
    with ExitStack() as stack:
        vllm = stack.enter_context(launch.vllm_server(settings, tmp / "vllm.log"))
        gateways = [
            stack.enter_context(launch.gateway(reg_dir, tmp / f"cache{i}", backend=vllm.url)).url
            for i in range(2)
        ]
        config = tmp / "prometheus.yml"
        targets = ", ".join(f"'{u.removeprefix('http://')}'" for u in gateways)
        config.write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gateways\n"
            f"    static_configs:\n      - targets: [{targets}]\n"
        )
        port = free_port()
        tsdb = tmp / "tsdb"
        cmd = [str(shutil.which("prometheus")), f"--config.file={config}",
               f"--storage.tsdb.path={tsdb}", f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
        prom = stack.enter_context(
            launch.serving(cmd, port, tmp / "prometheus.log", "/-/ready", {}, 60)
        )
        if args.only == "degenerate":
            result = {"bench": "canary", "machine": machine(),
                      "degenerate_baseline": degenerate_baseline(gateways[0])}  # fmt: skip
            print(json.dumps(result))
            return
        result["degenerate_baseline"] = degenerate_baseline(gateways[0])
        result["split_live"] = split_live(reg_dir, gateways, 500 if args.quick else 2000)
        intervals = (2.0,) if args.quick else (2.0, 5.0)
        result["rollback"] = [rollback_once(reg_dir, gateways, prom.url, i) for i in intervals]
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
