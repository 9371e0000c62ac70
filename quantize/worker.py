"""The quantize stage's worker: runs inside ``.venv-quantize`` as a plain script.

llm-compressor cannot share an environment with vLLM (they pin different
compressed-tensors), so ``quantize`` (main environment) runs this file with
``.venv-quantize/bin/python`` as a subprocess, hands it one JSON request, and reads one
JSON result back. This file imports only the standard library, torch, transformers, peft
and llm-compressor, never loraport's own packages: it is the whole contract of the
batch-job image a cluster would run.

Verbs (``python worker.py VERB REQUEST.json RESULT.json``):

- ``quantize``: model dir + recipe (already validated by the caller) + calibration texts
  -> a compressed-tensors directory, and the library versions used.
- ``merge``: a base dir + a LoRA adapter dir -> the merged model (safetensors).
- ``eval``: a reference model dir and a candidate dir (+ adapter dirs) -> per-text
  negative log-likelihoods, greedy generations, and teacher-forced argmax agreement with
  the reference. The caller (main environment) turns these into gated figures.

Progress goes to stderr as ``progress: STEP [i/n]`` lines; the caller relays them.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

#: llm-compressor releases whose IntermediatesCache.pin_memory has no accelerator check.
#: AWQ calls it unconditionally and crashes on a CPU-only machine ("Cannot access
#: accelerator device when none is available"). Checked up to 0.14.0.1; a newer release
#: runs unpatched, so the shim switches itself off once upstream may have fixed it.
PIN_MEMORY_SHIM_MAX_VERSION = (0, 14, 0, 1)
GENERATE_BATCH = 16


def progress(step: str, i: int | None = None, n: int | None = None) -> None:
    count = f" [{i}/{n}]" if i is not None and n is not None else ""
    print(f"progress: {step}{count}", file=sys.stderr, flush=True)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def pin_memory_shim_needed(version: str, accelerator: bool) -> bool:
    """True when this llm-compressor needs the CPU pin_memory shim on this machine."""
    return not accelerator and _version_tuple(version) <= PIN_MEMORY_SHIM_MAX_VERSION


def install_pin_memory_shim() -> bool:
    """Make IntermediatesCache.pin_memory a no-op where it would crash; True if installed.

    Pinning only speeds host-to-device copies; with no device there is nothing to speed.
    """
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    version = metadata.version("llmcompressor")
    if not pin_memory_shim_needed(version, bool(torch.accelerator.is_available())):
        return False

    def pin_memory(self: Any, batch_index: int, input_names: Any = None) -> None:
        return None

    IntermediatesCache.pin_memory = pin_memory  # type: ignore[method-assign]
    return True


def versions() -> dict[str, str]:
    names = ("llmcompressor", "compressed-tensors", "torch", "transformers")
    return {n: metadata.version(n) for n in names}


def _modifiers(recipe: dict[str, Any]) -> list[Any]:
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    kinds = {
        "AWQModifier": AWQModifier,
        "GPTQModifier": GPTQModifier,
        "QuantizationModifier": QuantizationModifier,
    }
    return [kinds[m["type"]](**m.get("args", {})) for m in recipe["modifiers"]]


def quantize(request: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    shim = install_pin_memory_shim()
    recipe = request["recipe"]
    progress("load model")
    model = AutoModelForCausalLM.from_pretrained(request["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(request["model"])
    texts: list[str] = request.get("calibration") or []
    calibration = recipe.get("calibration")
    kwargs: dict[str, Any] = {}
    if calibration is not None:
        kwargs = {
            "dataset": Dataset.from_dict({"text": texts}),
            "num_calibration_samples": len(texts),
            "max_seq_length": calibration["max_seq_length"],
            "shuffle_calibration_samples": False,
        }
    progress(f"oneshot {recipe['method']} ({recipe['scheme']}), {len(texts)} calibration texts")
    started = time.monotonic()
    oneshot(model=model, tokenizer=tokenizer, recipe=_modifiers(recipe), **kwargs)
    seconds = time.monotonic() - started
    progress("save compressed-tensors")
    out = Path(request["out"])
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    return {"versions": versions(), "seconds": seconds, "pin_memory_shim": shim}


def merge(request: dict[str, Any]) -> dict[str, Any]:
    """Merge a LoRA adapter into its base (``merge_and_unload``) and save it as a model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress("merge adapter into base")
    base = AutoModelForCausalLM.from_pretrained(request["model"], dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, request["adapter"]).merge_and_unload()
    out = Path(request["out"])
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(request["model"]).save_pretrained(out)
    return {"versions": versions()}


def _load(model_dir: str, adapter: str | None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in config:
        # Decompressed on load: each weight is exactly what the variant stores (rounded to
        # its grid), held in float32, so PEFT can wrap the layers as it does on the parent.
        from transformers import CompressedTensorsConfig

        kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kwargs)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def _nll(model: Any, ids: list[list[int]], starts: list[int]) -> list[tuple[float, int]]:
    """(summed NLL, token count) of each sequence from its ``start`` position on, in
    right-padded batches."""
    import torch

    out: list[tuple[float, int]] = []
    with torch.inference_mode():
        for at in range(0, len(ids), GENERATE_BATCH):
            batch, first = ids[at : at + GENERATE_BATCH], starts[at : at + GENERATE_BATCH]
            width = max(len(seq) for seq in batch)
            x = torch.tensor([seq + [0] * (width - len(seq)) for seq in batch])
            mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in batch])
            logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
            losses = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), x[:, 1:], reduction="none"
            )
            for row, seq, start in zip(losses, batch, first, strict=True):
                scored = row[max(start - 1, 0) : len(seq) - 1]
                out.append((float(scored.sum()), int(scored.numel())))
    return out


def _generate(model: Any, prompts: list[list[int]], max_new: int, eos: int) -> list[list[int]]:
    """Greedy continuations of every prompt, in left-padded batches."""
    import torch

    outs: list[list[int]] = []
    with torch.inference_mode():
        for at in range(0, len(prompts), GENERATE_BATCH):
            batch = prompts[at : at + GENERATE_BATCH]
            width = max(len(p) for p in batch)
            ids = torch.tensor([[eos] * (width - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            y = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos,
            )
            for row in y[:, width:].tolist():
                cut = row.index(eos) + 1 if eos in row else len(row)
                outs.append([int(t) for t in row[:cut]])
    return outs


def _agreement(model: Any, prompts: list[list[int]], refs: list[list[int]]) -> tuple[int, int]:
    """Teacher-forced: positions of the reference's greedy tokens the model's argmax matches."""
    import torch

    same = total = 0
    with torch.inference_mode():
        for prompt, ref in zip(prompts, refs, strict=True):
            if not ref:
                continue
            x = torch.tensor([prompt + ref])
            logits = model(input_ids=x).logits[0, len(prompt) - 1 : -1]
            pred = logits.argmax(-1).tolist()
            same += sum(int(a == b) for a, b in zip(pred, ref, strict=True))
            total += len(ref)
    return same, total


def evaluate(request: dict[str, Any]) -> dict[str, Any]:
    """Reference vs candidate, alone and with each adapter (see the module docstring).

    Each job: ``key``, ``adapter`` (dir or None), ``prompts`` (chat messages), ``answers``
    (one reference answer per prompt, or None: scored given the prompt) and ``texts``
    (plain held-out texts, scored whole).
    """
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(request["reference"])
    eos = int(tokenizer.eos_token_id)
    max_new = int(request["max_new_tokens"])
    jobs: list[dict[str, Any]] = request["jobs"]
    results: dict[str, Any] = {}
    for i, job in enumerate(jobs, 1):
        rendered = [
            tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
            for m in job["prompts"]
        ]
        prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in rendered]
        scored: list[list[int]] = []
        starts: list[int] = []
        for prompt, answer in zip(prompts, job.get("answers") or [], strict=False):
            if answer is not None:
                ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
                scored.append(prompt + ids + [eos])
                starts.append(len(prompt))
        texts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in job["texts"]]
        figures: dict[str, Any] = {}
        for k, side in enumerate(("reference", "candidate")):
            progress(f"eval {job['key']} on the {side}", 2 * (i - 1) + k + 1, 2 * len(jobs))
            model = _load(request[side], job.get(f"{side}_adapter", job.get("adapter")))
            figures[side] = {
                "answer_nll": _nll(model, scored, starts),
                "text_nll": _nll(model, texts, [1] * len(texts)),
                "generated": _generate(model, prompts, max_new, eos),
            }
            if side == "candidate":
                same, total = _agreement(model, prompts, figures["reference"]["generated"])
                figures["agreement"] = [same, total]
            del model
        for side in ("reference", "candidate"):
            figures[side]["text"] = [
                tokenizer.decode(g, skip_special_tokens=True) for g in figures[side]["generated"]
            ]
        results[job["key"]] = figures
    return {"versions": versions(), "results": results}


def main(argv: list[str]) -> int:
    verb, request_path, result_path = argv
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    run = {"quantize": quantize, "eval": evaluate, "merge": merge}[verb]
    result = run(request)
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
