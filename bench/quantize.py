"""Quantization benchmark: every variant of the committed tiny model, one table.

    .venv/bin/python bench/quantize.py [--methods awq,gptq,fp8] [--workdir DIR]

Fills a fresh registry with the demo zoo and the calibration set, runs the real
``quantize run tiny-llama --method M --force --json`` for each method (``--force`` so a
variant that misses its gate is still measured; the table says which missed), and
prints one JSON line plus a markdown table: size ratio to the fp32 parent, perplexity
ratio (eval answers, held-out texts), greedy token agreement, time to quantize (the
``oneshot`` step alone, and the whole command with its evaluation), and each adapter's
token agreement and task score on the variant. With ``--serve M,...`` it also starts a
real vLLM CPU server (the gateway's own command line, bfloat16) on the parent and on each
named variant in turn and measures greedy chat tokens/s at 16 concurrent clients, the
parent first, in the same run (int4 variants need an AVX-512 CPU: docs/quantize.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from tests.support.zoo import EXAMPLES, fill_registry  # noqa: E402

BIN = Path(sys.executable).parent
CLIENTS, ROUNDS, MAX_TOKENS = 16, 6, 32


def tokens_per_s(location: Path, base: str, work: Path) -> float:
    """Greedy chat tokens/s of a vLLM server on ``base`` (16 concurrent clients)."""
    import asyncio

    import httpx

    import registry
    from server.settings import GatewaySettings, LocalVllm
    from server.supervisor import free_port, vllm_command, vllm_env
    from tests.support.launch import VLLM_START_TIMEOUT_S, serving

    with registry.open(location, create=False) as reg:
        model_dir = reg.pull(base, work / f"serve-{base}")
    settings = GatewaySettings(local=LocalVllm(dtype="bfloat16"))
    rows = (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    prompts = [json.loads(r)["messages"] for r in rows][:CLIENTS]
    port = free_port()
    cmd = vllm_command(settings, model_dir, base, port)
    log = work / f"vllm-{base}.log"

    async def load(url: str) -> tuple[int, float]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def one(messages: list[dict[str, str]]) -> int:
                body = {"model": base, "messages": messages, "max_tokens": MAX_TOKENS,
                        "temperature": 0, "ignore_eos": True}  # fmt: skip
                r = await client.post(f"{url}/v1/chat/completions", json=body)
                r.raise_for_status()
                return int(r.json()["usage"]["completion_tokens"])

            await asyncio.gather(*(one(p) for p in prompts))  # warm-up
            started = time.monotonic()
            done = 0
            for _ in range(ROUNDS):
                done += sum(await asyncio.gather(*(one(p) for p in prompts)))
            return done, time.monotonic() - started

    with serving(cmd, port, log, "/health", vllm_env(), VLLM_START_TIMEOUT_S) as proc:
        tokens, seconds = asyncio.run(load(proc.url))
    return tokens / seconds


def run_method(location: Path, method: str) -> dict[str, Any]:
    cmd = [str(BIN / "quantize"), "run", "tiny-llama", "--method", method, "--force",
           "--json", "--registry", str(location)]  # fmt: skip
    if method != "fp8":
        cmd += ["--calibration", "calibration"]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "REGISTRY_URL": ""}
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{method}: {proc.stderr[-2000:]}")
    outcome: dict[str, Any] = json.loads(proc.stdout)
    pairs = {}
    for adapter in ("support-v1", "support-v2", "extract", "triage"):
        data = json.loads(
            subprocess.run(
                [str(BIN / "registry"), "show", adapter, "--json", "--registry", str(location)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for result in data.get("variant_evals", []):
            if result["variant"] == outcome["name"]:
                pairs[adapter] = {
                    "passed": result["passed"],
                    "failed_gates": result["failed_gates"],
                    "token_agreement": result["figures"]["token_agreement"],
                    "task_score": result["figures"]["task_score"],
                }
    base = outcome["fidelity"]["base"]
    return {
        "method": method,
        "scheme": outcome["quantization"]["scheme"],
        "size_ratio": outcome["fidelity"]["size_ratio"],
        "perplexity_ratio": base["perplexity_ratio"],
        "token_agreement": base["token_agreement"],
        "exact_match": base["exact_match"],
        "failed_gates": outcome["fidelity"]["failed_gates"],
        "oneshot_s": outcome["quantization"]["seconds"],
        "command_s": round(wall, 1),
        "pairs": pairs,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | size vs fp32 | ppl ratio eval / held-out | token agreement | "
        "quantize s (oneshot / whole run) | extract task score | triage | support-v1 / v2 "
        "agreement | pairs failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["pairs"]
        ppl = r["perplexity_ratio"]
        failed = [a for a, v in p.items() if not v["passed"] or v["failed_gates"]]
        lines.append(
            f"| {r['method']} ({r['scheme']}) | {r['size_ratio']:.3f} | "
            f"{ppl['eval']:.4f} / {ppl['heldout']:.4f} | {r['token_agreement']:.4f} | "
            f"{r['oneshot_s']:.0f} / {r['command_s']:.0f} | "
            f"{p['extract']['task_score']['candidate']:.3f} "
            f"(parent {p['extract']['task_score']['reference']:.3f}) | "
            f"{p['triage']['task_score']['candidate']:.3f} | "
            f"{p['support-v1']['token_agreement']:.4f} / {p['support-v2']['token_agreement']:.4f}"
            f" | {', '.join(failed) or '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="awq,gptq,fp8")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--serve", default="", help="variants to time on vLLM, e.g. fp8")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-quantize-"))
    location = work / "registry"
    fill_registry(location)
    subprocess.run(
        [str(BIN / "registry"), "dataset", "add", str(EXAMPLES / "data" / "calibration.jsonl"),
         "--name", "calibration", "--registry", str(location)],
        check=True, capture_output=True,
    )  # fmt: skip
    rows = [run_method(location, m) for m in args.methods.split(",")]
    served = [m for m in args.serve.split(",") if m]
    speed: dict[str, float] = {}
    if served:
        speed["parent"] = round(tokens_per_s(location, "tiny-llama", work), 1)
        for method in served:
            speed[method] = round(tokens_per_s(location, f"tiny-llama-{method}", work), 1)
    machine = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps({"bench": "quantize", **machine, "variants": rows, "tokens_per_s": speed}))
    print(table(rows))
    for name, rate in speed.items():
        ratio = rate / speed["parent"]
        print(f"vLLM CPU bf16, {CLIENTS} clients: {name} {rate} tokens/s ({ratio:.2f}x parent)")


if __name__ == "__main__":
    main()
