"""Quantization benchmark: every variant of the committed tiny model, one table.

    .venv/bin/python bench/quantize.py [--methods awq,gptq,fp8] [--workdir DIR]

Fills a fresh registry with the demo zoo and the calibration set, runs the real
``quantize run tiny-llama --method M --force --json`` for each method (``--force`` so a
variant that misses its gate is still measured; the table says which missed), and
prints one JSON line plus a markdown table: size ratio to the fp32 parent, perplexity
ratio (eval answers, held-out texts), greedy token agreement, time to quantize (the
``oneshot`` step alone, and the whole command with its evaluation), and each adapter's
token agreement and task score on the variant; and the merged deployment
(``quantize merge support-v1@1``) against adapter mode. With ``--serve M,...`` it also
starts real vLLM CPU servers (the gateway's own command line, bfloat16), one at a time,
in three interleaved cycles: the parent (asked as itself and with support-v1 on top,
alternating), each named variant, and the merged model, and reports greedy chat tokens/s
at 16 concurrent clients per round, each variant against the parent and the merged model
against adapter mode cycle by cycle, and the rounds that stalled (int4 variants need an
AVX-512 CPU: docs/quantize.md).
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
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from tests.support.zoo import EXAMPLES, fill_registry  # noqa: E402

BIN = Path(sys.executable).parent
CLIENTS, MAX_TOKENS = 16, 32


@dataclass(frozen=True)
class Server:
    """One vLLM server of the speed comparison: the base it serves and the models asked."""

    label: str
    base: str
    models: dict[str, str]  # label -> model name in requests
    adapters: dict[str, str]  # LoRA name -> registry ref, loaded after start


def serve_round(location: Path, server: Server, work: Path, rounds: int) -> dict[str, list[float]]:
    """Start vLLM on ``server.base`` (the gateway's command line, bfloat16), load its
    adapters, warm up, then measure ``rounds`` rounds of 16 concurrent greedy chats of
    32 tokens for each of its models, alternating; return tokens/s per round per model."""
    import asyncio

    import httpx

    import registry
    from server.settings import GatewaySettings, LocalVllm
    from server.supervisor import free_port, vllm_command, vllm_env
    from tests.support.launch import VLLM_START_TIMEOUT_S, serving

    dirs: dict[str, Path] = {}
    with registry.open(location, create=False) as reg:
        model_dir = work / f"serve-{server.base}"
        if not model_dir.exists():
            reg.pull(server.base, model_dir)
        for name, ref in server.adapters.items():
            dirs[name] = work / f"adapter-{name}"
            if not dirs[name].exists():
                reg.pull(ref, dirs[name])
    settings = GatewaySettings(local=LocalVllm(dtype="bfloat16"))
    rows = (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    prompts = [json.loads(r)["messages"] for r in rows][:CLIENTS]
    port = free_port()
    cmd = vllm_command(settings, model_dir, server.base, port)
    log = work / f"vllm-{server.label}.log"

    async def load(url: str) -> dict[str, list[float]]:
        async with httpx.AsyncClient(timeout=120) as client:
            for name, path in dirs.items():
                body = {"lora_name": name, "lora_path": str(path)}
                (await client.post(f"{url}/v1/load_lora_adapter", json=body)).raise_for_status()

            async def one(model: str, messages: list[dict[str, str]]) -> int:
                body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS,
                        "temperature": 0, "ignore_eos": True}  # fmt: skip
                r = await client.post(f"{url}/v1/chat/completions", json=body)
                r.raise_for_status()
                return int(r.json()["usage"]["completion_tokens"])

            for model in server.models.values():  # warm-up
                await asyncio.gather(*(one(model, p) for p in prompts))
            rates: dict[str, list[float]] = {label: [] for label in server.models}
            for _ in range(rounds):
                for label, model in server.models.items():
                    started = time.monotonic()
                    done = sum(await asyncio.gather(*(one(model, p) for p in prompts)))
                    rates[label].append(done / (time.monotonic() - started))
            return rates

    with serving(cmd, port, log, "/health", vllm_env(), VLLM_START_TIMEOUT_S) as proc:
        return asyncio.run(load(proc.url))


def speed(
    location: Path, methods: list[str], merged: str | None, work: Path, cycles: int, rounds: int
) -> dict[str, Any]:
    """Tokens/s of each variant against the parent, and of the merged deployment against
    adapter mode (the parent with the same LoRA on top), in ``cycles`` interleaved cycles
    (one server at a time: parent, each variant, the merged model, then again), each
    server measured for ``rounds`` rounds per cycle. Reports every round, the median of
    each, the per-cycle ratios (median of a cycle's rounds against the same cycle's
    baseline) and the rounds that stalled (under half their label's median)."""
    parent = Server("parent", "tiny-llama", {"parent": "tiny-llama"}, {})
    if merged is not None:
        parent.models["adapter mode"] = "support-v1"
        parent.adapters["support-v1"] = "support-v1@1"
    servers = [parent] + [Server(m, f"tiny-llama-{m}", {m: f"tiny-llama-{m}"}, {}) for m in methods]
    if merged is not None:
        servers.append(Server("merged", merged, {"merged": merged}, {}))
    measured: dict[str, list[list[float]]] = {}
    loads = []
    for cycle in range(cycles):
        for server in servers:
            print(f"speed: cycle {cycle + 1}/{cycles}, {server.label}", file=sys.stderr)
            for label, rates in serve_round(location, server, work, rounds).items():
                measured.setdefault(label, []).append(rates)
            loads.append(os.getloadavg()[0])
    baseline = {m: "parent" for m in methods} | ({"merged": "adapter mode"} if merged else {})
    flat = {label: [r for c in per for r in c] for label, per in measured.items()}
    return {
        "cycles": cycles,
        "rounds_per_cycle": rounds,
        "tokens_per_s": {label: round(median(v), 1) for label, v in flat.items()},
        "rounds": {label: [round(r, 1) for r in v] for label, v in flat.items()},
        "stalled": {label: sum(r < 0.5 * median(v) for r in v) for label, v in flat.items()},
        "ratios": {
            label: [
                round(median(mine) / median(base), 3)
                for mine, base in zip(measured[label], measured[against], strict=True)
            ]
            for label, against in baseline.items()
        },
        "against": baseline,
        "load_1m": [round(x, 2) for x in loads],
    }


#: The demo's eval set and scored adapters (quantize has no default for either).
DEMO_TASKS = {
    "QUANTIZE_TASKS": json.dumps({"extract": "fields", "triage": "label"}),
    "QUANTIZE_EVAL_FILE": str(Path(__file__).resolve().parents[1] / "examples/data/eval.jsonl"),
}


def quantize_json(location: Path, *args: str) -> tuple[dict[str, Any], float]:
    """Run `quantize ARGS --force --json` on ``location``: its outcome and wall seconds."""
    cmd = [str(BIN / "quantize"), *args, "--force", "--json", "--registry", str(location)]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "REGISTRY_URL": "", **DEMO_TASKS}
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {proc.stderr[-2000:]}")
    outcome: dict[str, Any] = json.loads(proc.stdout)
    return outcome, wall


def run_method(location: Path, method: str) -> dict[str, Any]:
    calibration = () if method == "fp8" else ("--calibration", "calibration")
    outcome, wall = quantize_json(location, "run", "tiny-llama", "--method", method, *calibration)
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


def run_merge(location: Path, adapter: str) -> dict[str, Any]:
    """`quantize merge ADAPTER --json`: the merged deployment's row."""
    outcome, wall = quantize_json(location, "merge", adapter)
    figures = outcome["fidelity"]["merged"]
    return {
        "name": outcome["name"],
        "adapter": adapter,
        "size_ratio": outcome["fidelity"]["size_ratio"],
        "perplexity_ratio": figures["perplexity_ratio"],
        "token_agreement": figures["token_agreement"],
        "exact_match": figures["exact_match"],
        "failed_gates": outcome["fidelity"]["failed_gates"],
        "command_s": round(wall, 1),
    }


def table(rows: list[dict[str, Any]], merged: dict[str, Any] | None) -> str:
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
    if merged is not None:
        m = merged
        lines.append(
            f"| {m['name']} (merged, against {m['adapter']} in adapter mode) | "
            f"{m['size_ratio']:.3f} | {m['perplexity_ratio']['eval']:.4f} / - | "
            f"{m['token_agreement']:.4f} (exact answers {m['exact_match']:.3f}) | "
            f"- / {m['command_s']:.0f} | - | - | - | "
            f"{', '.join(m['failed_gates']) or '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="awq,gptq,fp8")
    parser.add_argument("--merge", default="support-v1@1", help="adapter to merge ('' for none)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--serve",
        default="",
        help="variants to time on vLLM against the parent, e.g. fp8 ('merged' for the "
        "merged deployment alone; it is timed whenever --serve is given)",
    )
    parser.add_argument("--cycles", type=int, default=3, help="interleaved cycles")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per server per cycle")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-quantize-"))
    location = work / "registry"
    fill_registry(location)
    subprocess.run(
        [str(BIN / "registry"), "dataset", "add", str(EXAMPLES / "data" / "calibration.jsonl"),
         "--name", "calibration", "--registry", str(location)],
        check=True, capture_output=True,
    )  # fmt: skip
    rows = [run_method(location, m) for m in args.methods.split(",") if m]
    merged = run_merge(location, args.merge) if args.merge else None
    served = [m for m in args.serve.split(",") if m and m != "merged"]
    timing = (
        speed(location, served, merged["name"] if merged else None, work, args.cycles, args.rounds)
        if args.serve
        else None
    )
    machine = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    report = {"bench": "quantize", **machine, "variants": rows, "merged": merged, "speed": timing}
    print(json.dumps(report))
    print(table(rows, merged))
    if timing is not None:
        rates = timing["tokens_per_s"]
        for label, against in timing["against"].items():
            ratios = timing["ratios"][label]
            print(
                f"vLLM CPU bf16, {CLIENTS} clients: {label} {rates[label]} tokens/s against "
                f"{against} {rates[against]}: per-cycle ratios {ratios} (median "
                f"{median(ratios):.2f}x), stalled rounds {timing['stalled'][label]}/"
                f"{len(timing['rounds'][label])}"
            )
        print(f"load average (1 min) after each server: {timing['load_1m']}")


if __name__ == "__main__":
    main()
