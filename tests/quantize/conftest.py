"""One quantization per session: the zoo registry plus the calibration set, and its FP8
variant made by the real `quantize run` (llm-compressor in .venv-quantize), measured on
a 14-prompt slice of the eval set to keep the suite short. bench/quantize.py measures on
the whole set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.zoo import EXAMPLES, fill_registry

#: The zoo's scored adapters: quantize has no default tasks, the demo names them.
DEMO_TASKS = {"QUANTIZE_TASKS": json.dumps({"extract": "fields", "triage": "label"})}
QUANTIZE = str(Path(sys.executable).with_name("quantize"))
REGISTRY = str(Path(sys.executable).with_name("registry"))


def quantize_env(tmp: Path) -> dict[str, str]:
    rows = (EXAMPLES / "data" / "eval.jsonl").read_text().splitlines()
    small = tmp / "eval-small.jsonl"
    if not small.exists():
        small.write_text("\n".join(rows[::7] + rows[1::7]) + "\n")  # 2 per issue kind
    return {**os.environ, "REGISTRY_URL": "", "QUANTIZE_EVAL_FILE": str(small), **DEMO_TASKS}


def show(registry: Path, ref: str) -> dict[str, object]:
    """`registry show REF --json` on ``registry``."""
    out = subprocess.run(
        [REGISTRY, "show", ref, "--json", "--registry", str(registry)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data: dict[str, object] = json.loads(out.stdout)
    return data


@pytest.fixture(scope="session")
def q_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    location = tmp_path_factory.mktemp("quantize") / "registry"
    fill_registry(location)
    subprocess.run(
        [REGISTRY, "dataset", "add", str(EXAMPLES / "data" / "calibration.jsonl"),
         "--name", "calibration", "--registry", str(location)],
        check=True, capture_output=True,
    )  # fmt: skip
    return location


@pytest.fixture(scope="session")
def fp8_variant(q_registry: Path) -> dict[str, object]:
    """`quantize run tiny-llama --method fp8 --json`: the outcome it printed."""
    proc = subprocess.run(
        [QUANTIZE, "run", "tiny-llama", "--method", "fp8", "--json",
         "--registry", str(q_registry)],
        env=quantize_env(q_registry.parent), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome: dict[str, object] = json.loads(proc.stdout)
    outcome["stderr"] = proc.stderr
    return outcome


@pytest.fixture(scope="session")
def merged_variant(q_registry: Path) -> str:
    """`quantize merge support-v1@1`: the merged deployment's name."""
    proc = subprocess.run(
        [QUANTIZE, "merge", "support-v1@1", "--registry", str(q_registry)],
        env=quantize_env(q_registry.parent), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("support-v1-1-merged sha256:"), proc.stdout
    return "support-v1-1-merged"


@pytest.fixture(scope="session")
def gptq_variant(q_registry: Path) -> str:
    """`quantize run tiny-llama --method gptq`: an int4 (W4A16) variant's name."""
    proc = subprocess.run(
        [QUANTIZE, "run", "tiny-llama", "--method", "gptq", "--calibration", "calibration",
         "--registry", str(q_registry)],
        env=quantize_env(q_registry.parent), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return "tiny-llama-gptq"
