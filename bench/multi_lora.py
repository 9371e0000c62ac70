"""Multi-LoRA throughput through the gateway: base only, then 1, 4 and 16 distinct
adapters in the request mix, and the first-request latency of a cold adapter.

    .venv/bin/python bench/multi_lora.py [--quick]

The zoo has four trained adapters; the 16-adapter mix adds renamed copies of them, which
vLLM treats as distinct LoRAs (own slot, own weights in memory): the compute cost is the
same as 16 different adapters of that shape. vLLM runs with --max-loras 16 so a mix can be
batched together. Every request generates exactly 16 tokens at concurrency 16.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from harness import EXAMPLES, fill_registry, gateway, load, machine, ms, settings, vllm

import registry


def bodies(models: list[str], n: int) -> list[dict[str, object]]:
    prompts = [
        json.loads(x)["messages"]
        for x in (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    ]
    return [
        {
            "model": models[i % len(models)],
            "messages": prompts[i % len(prompts)],
            "max_tokens": 16,
            "ignore_eos": True,
            "temperature": 0,
            "response_format": {"type": "text"},
        }
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 64 if args.quick else 192
    work = Path(tempfile.mkdtemp(prefix="bench-multilora-"))
    names = fill_registry(work / "registry", copies=12)
    s = settings(local_dtype="bfloat16", local_max_loras=16, max_loaded_adapters=24)
    mixes = {"base": ["tiny-llama"], "1": names[:1], "4": names[:4], "16": names[:16]}
    out: dict[str, object] = {
        "bench": "multi_lora",
        "quick": args.quick,
        "machine": machine(),
        "requests_per_mix": n,
        "concurrency": 16,
    }
    with (
        vllm(s, work / "vllm.log") as v,
        gateway(
            work / "registry",
            v.url,
            work / "cache",
            env={"GATEWAY_MAX_LOADED_ADAPTERS": "24"},
        ) as g,
    ):
        load(g.url, bodies(names[:16], 16), 1)  # every adapter loaded: measure serving only
        for label, models in mixes.items():
            r = load(g.url, bodies(models, n), 16)
            out[f"tokens_per_s_{label}"] = round(r.tokens_per_s, 1)
            out[f"p50_ms_{label}"] = ms(r.pct(0.5))
            out[f"errors_{label}"] = r.errors
        base_tps = float(out["tokens_per_s_base"])  # type: ignore[arg-type]
        for label in ("1", "4", "16"):
            out[f"ratio_to_base_{label}"] = round(float(out[f"tokens_per_s_{label}"]) / base_tps, 3)  # type: ignore[arg-type]
        cold, warm = [], []
        for i in range(3):
            src = work / f"cold-{i}"
            shutil.copytree(EXAMPLES / "adapters" / "triage", src)
            with registry.open(work / "registry") as reg:
                reg.push_adapter(src, base="tiny-llama", allow_unknown_dataset=True)
            body = bodies([src.name], 1)[0]
            for bucket in (cold, warm):
                t0 = time.perf_counter()
                assert (
                    httpx.post(f"{g.url}/v1/chat/completions", json=body, timeout=120).status_code
                    == 200
                )
                bucket.append(time.perf_counter() - t0)
        out["cold_first_request_ms"] = [ms(x) for x in cold]
        out["warm_second_request_ms"] = [ms(x) for x in warm]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
