"""The figures push's magnitude bounds are chosen from (registry/adapter_bounds.py).

    .venv/bin/python bench/adapter_bounds.py [--steps N]

For each adapter of the demo zoo (examples/adapters/*) and a "foreign" adapter trained
here differently (PEFT, rsLoRA, ``init_lora_weights="gaussian"``, all linear layers,
``lora_alpha`` 64 at r 16, at the zoo's learning rate and 5x and 25x it, a few seconds
each on CPU) it prints
the largest |weight|, the scalings, and the max and median effective-update ratio
``||scaling * B @ A||_F / ||W||_F`` over modules, against examples/models/tiny-llama.

Then it finds what breaks serving: the zoo's support-v1 with its ``lora_B`` multiplied by
1 to 10^5, run through tiny-llama in float16 (the dtype the gateway may serve in) with PEFT
(``x W^T + s (x A^T) B^T``, as vLLM computes it): for each k, the max update ratio and
whether the logits stay finite and how many greedy next tokens stay the base's (each
trained adapter is served the same way). Prints JSON lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this directory comes first on sys.path and would shadow `registry`.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from registry.adapter_bounds import figures  # noqa: E402
from registry.architecture import read_safetensors_header  # noqa: E402
from registry.validation import ADAPTER_WEIGHTS  # noqa: E402
from registry.weights import module_norms, tensor_stats  # noqa: E402

EXAMPLES = ROOT / "examples"
BASE = EXAMPLES / "models" / "tiny-llama"


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu}"


def measure(name: str, path: Path, norms: dict[str, float]) -> dict[str, Any]:
    """The figures, read as a push reads them (without refusing anything)."""
    config = json.loads((path / "adapter_config.json").read_text())
    weights = path / ADAPTER_WEIGHTS
    tensors = read_safetensors_header(weights)
    found = figures(config, weights, tensors, tensor_stats(weights, tensors), norms)
    ratios = [u.ratio for u in found.updates if u.ratio is not None]
    return {
        "adapter": name,
        "max_abs_weight": round(max(found.max_abs.values()), 4),
        "scalings": {k: round(v, 4) for k, v in found.scalings.items()},
        "modules": len(found.updates),
        "update_ratio_max": round(max(ratios), 5),
        "update_ratio_median": round(statistics.median(ratios), 5),
    }


def train_foreign(out: Path, steps: int, lr: float) -> float:
    """A LoRA trained unlike the zoo: rsLoRA, gaussian init, all-linear, high LR."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(BASE)
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    config = LoraConfig(
        r=16,
        lora_alpha=64,
        use_rslora=True,
        init_lora_weights="gaussian",
        target_modules="all-linear",
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    lines = (EXAMPLES / "data" / "triage.jsonl").read_text().splitlines()[:64]
    texts = [json.dumps(json.loads(line)) for line in lines]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        batch = tok(texts[(step * 8) % 64 : (step * 8) % 64 + 8], return_tensors="pt",
                    padding=True, truncation=True, max_length=96)  # fmt: skip
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return time.perf_counter() - started


def _batch() -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(BASE)
    prompts = [
        json.loads(line)["messages"][0]["content"]
        for line in (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()[:8]
    ]
    return tok(prompts, return_tensors="pt", padding=True)


def serve_fp16(adapter: Path | None, label: str) -> dict[str, Any]:
    """tiny-llama in float16 with ``adapter`` (PEFT computes x W^T + s (x A^T) B^T, as
    vLLM does): are the logits finite, and how many greedy next tokens equal the base's?"""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    batch = _batch()
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float16)
    with torch.no_grad():
        plain = model(**batch).logits.argmax(-1)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        logits = model.eval()(**batch).logits
    finite = bool(torch.isfinite(logits).all())
    same = float((logits.argmax(-1) == plain).float().mean()) if finite else 0.0
    return {"served_fp16": label, "logits_finite": finite, "argmax_same_as_base": round(same, 3)}


def breaking_point(norms: dict[str, float]) -> list[dict[str, Any]]:
    """support-v1 with lora_B scaled up, served in float16: where do the logits break?"""
    src = EXAMPLES / "adapters" / "support-v1"
    tensors = load_file(str(src / ADAPTER_WEIGHTS))
    rows = []
    for factor in (1, 3, 5, 10, 20, 30, 50, 100, 1000, 10**5):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "scaled"
            out.mkdir()
            (out / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
            times = np.float32(factor)
            scaled = {n: (t * times if "lora_B" in n else t) for n, t in tensors.items()}
            save_file(scaled, str(out / ADAPTER_WEIGHTS))
            figs = measure(f"support-v1 lora_B x {factor:g}", out, norms)
            served = serve_fp16(out, figs["adapter"])
        rows.append(
            {
                **served,
                "max_abs_weight": figs["max_abs_weight"],
                "update_ratio_max": figs["update_ratio_max"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="foreign adapter's train steps")
    args = parser.parse_args()
    header = read_safetensors_header(BASE / "model.safetensors")
    names = [n.removesuffix(".weight") for n, t in header.items() if len(t.shape) == 2]
    norms = module_norms([BASE / "model.safetensors"], [*names, "lm_head"])
    print(json.dumps({"machine": machine(), "base": "tiny-llama", "modules": len(norms)}))
    for path in sorted((EXAMPLES / "adapters").iterdir()):
        print(json.dumps(measure(path.name, path, norms)))
    for lr in (2e-3, 1e-2, 5e-2):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "foreign"
            seconds = train_foreign(out, args.steps, lr)
            row = measure(f"foreign (rslora, gaussian, all-linear, lr {lr:g})", out, norms)
            print(json.dumps({**row, "train_s": round(seconds, 1), "steps": args.steps}))
            print(json.dumps(serve_fp16(out, f"foreign lr {lr:g}")))
    for row in breaking_point(norms):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
