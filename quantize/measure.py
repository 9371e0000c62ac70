"""Measuring a candidate model against its reference with the worker, and the figures
every stage records the same way (eval set lineage, weights size and its ratio)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantize.fidelity import Verdict, judge
from quantize.inputs import read_eval_rows
from quantize.recipes import Recipe
from quantize.settings import QuantizeSettings
from quantize.worker_process import run_worker
from registry import AdapterVersion, PairInput

Echo = Callable[[str], None]


def eval_set_lineage(path: Path) -> dict[str, str]:
    """The eval set a measurement used: its file name and content digest."""
    return {"file": path.name, "digest": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()}


def weights_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def size_ratio(candidate: int, reference: int) -> float | None:
    """candidate / reference bytes, rounded; None when the reference has no weights."""
    return round(candidate / reference, 4) if reference else None


def scored(job: dict[str, Any]) -> tuple[str, ...]:
    """The perplexities a job asks for: ``eval`` (reference answers), ``heldout`` (texts)."""
    asked = ("eval",) if any(a is not None for a in job["answers"]) else ()
    return asked + (("heldout",) if job["texts"] else ())


def _jobs(
    eval_rows: list[dict[str, Any]], adapters: dict[str, tuple[AdapterVersion, Path]]
) -> list[dict[str, Any]]:
    prompts = [row["messages"] for row in eval_rows]
    refs = [row.get("reference", {}) for row in eval_rows]
    heldout = sorted({text for r in refs for key, text in r.items() if key != "base"})
    jobs = [
        {
            "key": "base",
            "adapter": None,
            "prompts": prompts,
            "answers": [r.get("base") for r in refs],
            "texts": heldout,
        }
    ]
    for ref, (adapter, path) in adapters.items():
        answers = [r.get(adapter.name) for r in refs]
        jobs.append(
            {"key": ref, "adapter": str(path), "prompts": prompts, "answers": answers, "texts": []}
        )
    return jobs


def evaluate(
    settings: QuantizeSettings,
    recipe: Recipe,
    reference: Path,
    candidate: Path,
    adapters: dict[str, tuple[AdapterVersion, Path]],
    work: Path,
    echo: Echo,
) -> tuple[Verdict, list[PairInput], dict[str, Any]]:
    """Gate the candidate against the reference, alone and under each adapter."""
    eval_rows = read_eval_rows(settings.eval_file)
    assert settings.eval_file is not None  # read_eval_rows refuses None
    job_list = _jobs(eval_rows, adapters)
    request = {
        "reference": str(reference),
        "candidate": str(candidate),
        "max_new_tokens": settings.max_new_tokens,
        "jobs": job_list,
    }
    jobs = {job["key"]: job for job in job_list}
    raw = run_worker(settings.python, "eval", request, work, echo)["results"]
    base = judge(raw["base"], recipe.gate, scored=scored(jobs["base"]))
    pairs = []
    for ref, (adapter, _) in adapters.items():
        verdict = judge(
            raw[ref],
            recipe.gate,
            task=settings.task_of(adapter.name),
            eval_rows=eval_rows,
            schema=adapter.schema,
            scored=scored(jobs[ref]),
        )
        pairs.append(PairInput(ref, verdict.passed, verdict.failed, verdict.figures))
    size = {"parent": weights_bytes(reference), "variant": weights_bytes(candidate)}
    fidelity = {
        "eval_set": eval_set_lineage(settings.eval_file),
        "base": base.figures,
        "weights_bytes": size,
        "size_ratio": size_ratio(size["variant"], size["parent"]),
        "gate": recipe.gate.model_dump(),
        "failed_gates": list(base.failed),
        "pairs_failed": [p.adapter for p in pairs if not p.passed],
    }
    return base, pairs, fidelity
