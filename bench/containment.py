"""Containment, measured: how fast a harmful adapter is quarantined, what it costs the
good tenants beside it, and what looking at every answer costs a request.

    .venv/bin/python bench/containment.py [--rounds N]

1. **per-answer cost, pure**: `server.containment.response_problem` on a 16-token
   answer, a 1.7 kB answer and a 2.4 kB loop (microseconds per call, 20,000 calls);
2. **live, embedded default**: `gateway serve` launching its own vLLM (float32) on the
   demo zoo. Per round, a fresh copy of issue 17's engine-blanking adapter (every lora_B
   3e38, pushed as an older loraport would have, since push now refuses it) gets one
   long request while a good adapter (triage) gets short ones from a second client. From
   the bad adapter's first answer: when the registry recorded the quarantine, how many
   engine restarts it took, how long triage was refused (503 `adapter_under_check` or
   `backend_unavailable`), and whether triage was ever quarantined (it must not be).

Prints one JSON line. Machine notes in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import registry  # noqa: E402
from bench.harness import machine  # noqa: E402
from server.containment import response_problem  # noqa: E402
from tests.support import launch  # noqa: E402
from tests.support.harmful import harmful_adapter, push_as_older_loraport  # noqa: E402
from tests.support.zoo import fill_registry  # noqa: E402

MSGS = [{"role": "user", "content": "Hello, my parcel is late."}]


def per_answer_cost() -> dict[str, float]:
    text = "Hello Ruby. I'm sorry to hear that you received the wrong item instead of"
    cases = {
        "short_us": [(text, "length")],
        "answer_1_7kb_us": [((text + " your order. ") * 20, "length")],
        "loop_2_4kb_us": [(" fixed" * 400, "length")],
    }
    out = {}
    for key, answers in cases.items():
        n = 20_000
        seconds = timeit.timeit(lambda a=answers: response_problem(a, 400, False), number=n)
        out[key] = round(seconds / n * 1e6, 1)
    return out


def chat(url: str, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MSGS, "max_tokens": 16, "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def restarts(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("loraport_backend_restarts_total")
    )


def one_round(url: str, location: Path, work: Path, n: int) -> dict[str, Any]:
    launch.wait_for(f"{url}/ready", launch.VLLM_START_TIMEOUT_S)
    ref = push_as_older_loraport(
        location, harmful_adapter(work / f"blaster{n}", "triage", fill_b=3e38), f"blaster{n}"
    )
    before = restarts(url)
    refused: list[float] = []
    stop = threading.Event()

    def good_client() -> None:
        while not stop.is_set():
            at = time.monotonic()
            status = chat(url, "triage", max_tokens=8).status_code
            if status != 200:
                refused.append(at)
                time.sleep(0.5)

    client = threading.Thread(target=good_client)
    client.start()
    first = time.monotonic()
    answer = chat(url, ref, max_tokens=120)
    answered = time.monotonic()
    quarantined_at = None
    deadline = answered + 2 * launch.VLLM_START_TIMEOUT_S
    while time.monotonic() < deadline:
        with registry.open(location, create=False) as reg:
            if reg.adapter(ref).quarantine is not None:
                quarantined_at = time.monotonic()
                break
        time.sleep(0.2)
    launch.wait_for(f"{url}/ready", launch.VLLM_START_TIMEOUT_S)
    while chat(url, "triage", max_tokens=8).status_code != 200:
        time.sleep(0.5)
    served_again = time.monotonic()
    stop.set()
    client.join()
    with registry.open(location, create=False) as reg:
        triage_quarantined = reg.adapter("triage@1").quarantine is not None
    return {
        "bad_answer": answer.json()["choices"][0]["message"]["content"] if answer.is_success
        else answer.status_code,
        "quarantine_s": None if quarantined_at is None else round(quarantined_at - answered, 1),
        "restarts": restarts(url) - before,
        "good_refused_s": round(served_again - min(refused), 1) if refused else 0.0,
        "good_refusals": len(refused),
        "good_quarantined": triage_quarantined,
        "bad_request_s": round(answered - first, 2),
    }  # fmt: skip


def live(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fill_registry(root / "registry")
        env = {"GATEWAY_LOCAL__DTYPE": "float32", "GATEWAY_LOCAL__MAX_LORA_RANK": "8",
               "GATEWAY_PROBE_INTERVAL_S": "2"}  # fmt: skip
        with launch.gateway(root / "registry", root, backend=None, env=env) as gw:
            results = [one_round(gw.url, root / "registry", root, n) for n in range(rounds)]
    times = [r["quarantine_s"] for r in results if r["quarantine_s"] is not None]
    return {
        "rounds": results,
        "quarantine_s_median": statistics.median(times) if times else None,
        "quarantined": f"{len(times)}/{rounds}",
        "good_ever_quarantined": any(r["good_quarantined"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out: dict[str, Any] = {"bench": "containment", **per_answer_cost(), **live(args.rounds)}
    out |= {"load_avg": [round(x, 1) for x in os.getloadavg()], "machine": machine()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
