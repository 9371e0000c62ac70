"""Build the demo zoo deterministically: data, tokenizer + base model, adapters, evaluation.

Usage:
    python examples/build.py                      # everything (about 4-5 minutes on 2 cores)
    python examples/build.py --only data --only base
    python examples/build.py --only adapters --adapter extract

Stages read what earlier stages wrote under examples/, so ``--only adapters`` trains on
the committed base model and data files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))

import torch  # noqa: E402
from adapters import build_adapter, write_extract_schema  # noqa: E402
from base_model import build_base  # noqa: E402
from data_files import write_data  # noqa: E402
from evaluate import ADAPTERS, load_eval, load_schema, load_zoo, run_eval, table  # noqa: E402
from transformers.utils.logging import disable_progress_bar  # noqa: E402

DATA = EXAMPLES / "data"
BASE = EXAMPLES / "models" / "tiny-llama"
ADAPTERS_DIR = EXAMPLES / "adapters"
RESULTS = EXAMPLES / "eval_results.json"
STAGES: tuple[str, ...] = ("data", "base", "adapters", "eval")


def stage_data(_: argparse.Namespace) -> None:
    for name, count in write_data(DATA).items():
        print(f"  {name}: {count} records")


def stage_base(_: argparse.Namespace) -> None:
    loss = build_base(DATA, BASE)
    print(f"  base final loss {loss:.4f} -> {BASE.relative_to(EXAMPLES.parent)}")


def stage_adapters(args: argparse.Namespace) -> None:
    for task in args.adapter or ADAPTERS:
        out = ADAPTERS_DIR / task
        loss = build_adapter(task, BASE, DATA, out)
        if task == "extract":
            write_extract_schema(out)
        print(f"  {task} final loss {loss:.4f} -> {out.relative_to(EXAMPLES.parent)}")


def stage_eval(_: argparse.Namespace) -> None:
    records = load_eval()
    outputs, figures = run_eval(load_zoo(), records, load_schema())
    print(table(figures))
    result = {
        "prompts": len(records),
        "figures": {k: asdict(v) for k, v in figures.items()},
        "outputs": outputs,
    }
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


RUNNERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "data": stage_data,
    "base": stage_base,
    "adapters": stage_adapters,
    "eval": stage_eval,
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=STAGES,
        help="run only this stage (repeatable); default: all, in order",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        choices=ADAPTERS,
        help="with the adapters stage: train only this adapter (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    disable_progress_bar()
    chosen = [s for s in STAGES if not args.only or s in args.only]
    print(
        f"building {', '.join(chosen)} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}"
    )
    total = time.monotonic()
    for stage in chosen:
        start = time.monotonic()
        print(f"== {stage}", flush=True)
        RUNNERS[stage](args)
        print(f"== {stage} done in {time.monotonic() - start:.0f}s", flush=True)
    print(f"build finished in {time.monotonic() - total:.0f}s")


if __name__ == "__main__":
    main()
