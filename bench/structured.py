"""Structured output: tokens/s with and without a JSON schema, per grammar backend, and
how many eval prompts each backend turns into schema-valid JSON (the gateway checks every
result anyway; this measures what vLLM alone delivers).

    .venv/bin/python bench/structured.py [--quick] [--backends xgrammar,guidance,outlines]

For each backend a fresh vLLM is launched with that `--structured-outputs-config`; the
`extract` adapter answers every eval prompt with its schema (the gateway's default for
it) and without (`response_format: text`), at concurrency 1 and 8.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness import EXAMPLES, fill_registry, gateway, load, machine, ms, settings, vllm


def bodies(constrained: bool, n: int) -> list[dict[str, object]]:
    prompts = [
        json.loads(x)["messages"]
        for x in (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    ]
    extra = {} if constrained else {"response_format": {"type": "text"}}
    return [
        {
            "model": "extract",
            "messages": prompts[i % len(prompts)],
            "max_tokens": 128,
            "temperature": 0,
            **extra,
        }
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backends", default="xgrammar,guidance,outlines")
    args = ap.parse_args()
    n_eval = len((EXAMPLES / "data" / "eval.jsonl").read_text().splitlines())
    n = n_eval if args.quick else 2 * n_eval
    rows = []
    for backend in args.backends.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"bench-structured-{backend}-"))
        fill_registry(work / "registry")
        s = settings(local_dtype="bfloat16", structured_backend=backend)
        row: dict[str, object] = {"backend": backend}
        with (
            vllm(s, work / "vllm.log") as v,
            gateway(work / "registry", v.url, work / "cache", work / "gateway.log") as g,
        ):
            load(g.url, bodies(False, 4), 1)
            for c in (1, 8):
                free = load(g.url, bodies(False, n), c)
                con = load(g.url, bodies(True, n), c)
                row[f"tokens_per_s_free_c{c}"] = round(free.tokens_per_s, 1)
                row[f"tokens_per_s_schema_c{c}"] = round(con.tokens_per_s, 1)
                row[f"p50_ms_schema_c{c}"] = ms(con.pct(0.5))
                row[f"schema_ratio_c{c}"] = round(con.tokens_per_s / free.tokens_per_s, 3)
                row[f"valid_c{c}"] = f"{n - con.errors}/{n}"
        rows.append(row)
    print(
        json.dumps(
            {"bench": "structured", "quick": args.quick, "machine": machine(), "backends": rows}
        )
    )


if __name__ == "__main__":
    main()
