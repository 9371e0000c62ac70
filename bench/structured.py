"""Structured output, per grammar backend: speed with and without a JSON schema, and
coverage of a corpus of real-world-shaped schemas, vLLM alone against the gateway.

    .venv/bin/python bench/structured.py [--quick] [--backends xgrammar,guidance,outlines]
                                         [--parts speed,coverage]

For each backend a fresh vLLM is launched with that `--structured-outputs-config`.
speed: the `extract` adapter answers every eval prompt with its schema (the gateway's
default for it) and without (`response_format: text`), at concurrency 1 and 8; then with
`json_object` (any object), counting the answers the gateway returned as success.
coverage: the base model is asked for one object per schema in `bench/schemas/`
(`response_format: json_schema`, `max_tokens` 256, temperature 0), once straight to
vLLM and once through the gateway. Each answer is sorted into an outcome; an HTTP 200
whose content is not valid JSON for its schema is `invalid_200`, the outcome the
gateway exists to prevent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from harness import EXAMPLES, ROOT, fill_registry, gateway, load, machine, ms, settings, vllm

SCHEMAS = ROOT / "bench" / "schemas"


def bodies(constrained: bool, n: int, json_object: bool = False) -> list[dict[str, object]]:
    prompts = [
        json.loads(x)["messages"]
        for x in (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    ]
    extra: dict[str, object] = {} if constrained else {"response_format": {"type": "text"}}
    if json_object:
        extra = {"response_format": {"type": "json_object"}}
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


def schema_request(model: str, path: Path, schema: dict[str, Any]) -> dict[str, Any]:
    what = schema.get("title") or path.stem
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"Please fill in this {what} for me."}],
        "max_tokens": 256,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": path.stem[:64], "schema": schema, "strict": True},
        },
    }


def outcome(r: httpx.Response, schema: dict[str, Any]) -> str:
    """One answer, sorted: valid, invalid_200, or why it was refused."""
    if r.status_code == 200:
        choice = r.json()["choices"][0]
        try:
            jsonschema.validate(json.loads(choice["message"]["content"] or ""), schema)
        except (ValueError, jsonschema.ValidationError):
            return "invalid_200"
        return "valid"
    try:
        code = r.json()["error"].get("code")
    except (ValueError, KeyError, AttributeError):
        code = None
    return f"{r.status_code} {code or 'error'}"


async def _coverage(url: str, model: str, paths: list[Path], concurrency: int) -> Counter[str]:
    queue = list(paths)
    counts: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def worker() -> None:
            while queue:
                path = queue.pop()
                schema = json.loads(path.read_text())
                r = await client.post(
                    "/v1/chat/completions", json=schema_request(model, path, schema)
                )
                counts[outcome(r, schema)] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def coverage(url: str, model: str, paths: list[Path]) -> dict[str, int]:
    return dict(sorted(asyncio.run(_coverage(url, model, paths, 8)).items()))


def base_model_id(vllm_url: str) -> str:
    data = httpx.get(f"{vllm_url}/v1/models").json()["data"]
    return str(next(m["id"] for m in data if not m.get("parent")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backends", default="xgrammar,guidance,outlines")
    ap.add_argument("--parts", default="speed,coverage", help="speed, coverage or both")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    schemas = sorted(SCHEMAS.glob("*.json"))
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
            gateway(work / "registry", v.url, work / "cache") as g,
        ):
            load(g.url, bodies(False, 4), 1)
            for c in (1, 8) if "speed" in parts else ():
                free = load(g.url, bodies(False, n), c)
                con = load(g.url, bodies(True, n), c)
                row[f"tokens_per_s_free_c{c}"] = round(free.tokens_per_s, 1)
                row[f"tokens_per_s_schema_c{c}"] = round(con.tokens_per_s, 1)
                row[f"p50_ms_schema_c{c}"] = ms(con.pct(0.5))
                row[f"schema_ratio_c{c}"] = round(con.tokens_per_s / free.tokens_per_s, 3)
                row[f"valid_c{c}"] = f"{n - con.errors}/{n}"
            if "speed" in parts:
                # json_object: any object, no schema; failures are the gateway's 422s
                obj = load(g.url, bodies(True, n, json_object=True), 8)
                row["valid_json_object_c8"] = f"{n - obj.errors}/{n}"
            if "coverage" in parts:
                row["schemas"] = len(schemas)
                row["coverage_vllm_alone"] = coverage(v.url, base_model_id(v.url), schemas)
                row["coverage_gateway"] = coverage(g.url, "tiny-llama", schemas)
        rows.append(row)
    print(
        json.dumps(
            {"bench": "structured", "quick": args.quick, "machine": machine(), "backends": rows}
        )
    )


if __name__ == "__main__":
    main()
