"""`quantize run` end to end on the committed tiny model, and its bad input: each is a
clear error with its own exit code and nothing registered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.quantize.conftest import QUANTIZE, REGISTRY, quantize_env, show
from tests.support.synthetic import write_base
from tests.support.zoo import adapter_dir


def quantize(registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QUANTIZE, *args, "--registry", str(registry)],
        env=quantize_env(registry.parent), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_fp8_variant_is_registered_with_lineage_and_fidelity(
    q_registry: Path, fp8_variant: dict[str, object]
) -> None:
    assert fp8_variant["name"] == "tiny-llama-fp8"
    assert "quantize: oneshot fp8" in str(fp8_variant["stderr"])  # progress, as it happens
    variant = show(q_registry, "tiny-llama-fp8")
    parent = show(q_registry, "tiny-llama")
    assert variant["parent"] == "tiny-llama" and variant["parent_digest"] == parent["digest"]
    quant = variant["quantization"]
    assert isinstance(quant, dict)
    assert quant["method"] == "fp8" and quant["scheme"] == "FP8_DYNAMIC"
    assert quant["recipe_digest"].startswith("sha256:") and quant["calibration"] is None
    assert quant["versions"]["llmcompressor"] == "0.14.0.1"
    assert quant["format"] == "compressed-tensors"
    fidelity = variant["fidelity"]
    assert isinstance(fidelity, dict)
    assert 0.2 < fidelity["size_ratio"] < 0.5  # fp8 linears, fp32 embeddings
    assert fidelity["base"]["token_agreement"] > 0.97
    listed = parent["variants"]  # other tests' variants may be listed beside it
    assert isinstance(listed, list)
    assert [v for v in listed if v["name"] == "tiny-llama-fp8"] == [
        {"name": "tiny-llama-fp8", "digest": variant["digest"], "method": "fp8",
         "passed": True, "forced": False}
    ]  # fmt: skip
    evals = show(q_registry, "support-v1")["variant_evals"]
    assert isinstance(evals, list) and evals[0]["variant"] == "tiny-llama-fp8"
    assert {"token_agreement", "perplexity_ratio", "task_score"} <= set(evals[0]["figures"])


def test_a_taken_name_is_refused_before_any_work(
    q_registry: Path, fp8_variant: dict[str, object]
) -> None:
    started = time.monotonic()
    proc = quantize(q_registry, "run", "tiny-llama", "--method", "fp8")
    assert proc.returncode == 9, proc.stderr
    assert "'tiny-llama-fp8' is taken" in proc.stderr and "--name" in proc.stderr
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--method", "int3"], 2, "'int3' is not one of 'awq', 'gptq', 'fp8'"),
        (["--method", "awq"], 21, "awq needs calibration data: pass --calibration"),
        (["--method", "gptq", "--calibration", "short"], 21, "needs at least 16"),
        (["--method", "gptq", "--calibration", "support-v1-data"], 21, 'no non-empty "text"'),
    ],
)
def test_bad_input(q_registry: Path, args: list[str], code: int, message: str) -> None:
    short = q_registry.parent / "short.jsonl"
    if not short.exists():
        short.write_text('{"text": "hello there"}\n' * 3)
        subprocess.run(
            [REGISTRY, "dataset", "add", str(short), "--name", "short", "--registry",
             str(q_registry)], check=True, capture_output=True,
        )  # fmt: skip
    proc = quantize(q_registry, "run", "tiny-llama", *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "tiny-llama-awq" not in json.dumps(show(q_registry, "tiny-llama"))


def test_an_architecture_the_recipes_do_not_handle(q_registry: Path, tmp_path: Path) -> None:
    base = write_base(tmp_path / "gpt")
    config = json.loads((base / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (base / "config.json").write_text(json.dumps(config))
    subprocess.run(
        [REGISTRY, "base", "add", str(base), "--name", "gpt-base", "--registry", str(q_registry)],
        check=True, capture_output=True,
    )  # fmt: skip
    proc = quantize(q_registry, "run", "gpt-base", "--method", "fp8")
    assert proc.returncode == 20, proc.stderr
    assert "gpt-base is GPT2LMHeadModel; the fp8 recipe handles LlamaForCausalLM" in proc.stderr


def test_a_variant_is_not_quantized_again(q_registry: Path, fp8_variant: dict[str, object]) -> None:
    proc = quantize(q_registry, "run", "tiny-llama-fp8", "--method", "gptq")
    assert proc.returncode == 20 and "already quantized" in proc.stderr


def test_a_merged_deployment_is_neither_quantized_again_nor_given_pairs(
    q_registry: Path, merged_variant: str
) -> None:
    again = quantize(q_registry, "run", merged_variant, "--method", "fp8")
    assert again.returncode == 20, again.stderr
    assert "is a merged deployment of support-v1@1" in again.stderr
    assert "`quantize merge support-v1@1 --method fp8`" in again.stderr
    pairs = quantize(q_registry, "eval", merged_variant)
    assert pairs.returncode == 20, pairs.stderr
    assert "serves no other adapter, so it has no pairs to evaluate" in pairs.stderr


def test_an_adapter_pushed_against_a_variant_is_not_merged(
    q_registry: Path, fp8_variant: dict[str, object]
) -> None:
    subprocess.run(
        [REGISTRY, "push", str(adapter_dir("support-v1")), "--name", "on-fp8", "--base",
         "tiny-llama-fp8", "--allow-unknown-dataset", "--no-eval", "--registry",
         str(q_registry)], check=True, capture_output=True,
    )  # fmt: skip
    proc = quantize(q_registry, "merge", "on-fp8")
    assert proc.returncode == 20, proc.stderr
    assert "pushed against tiny-llama-fp8, a variant of tiny-llama" in proc.stderr
    assert "on-fp8-1-merged" not in json.dumps(show(q_registry, "tiny-llama"))


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(c) for c in text}
    return found


def test_kill_9_midway_registers_nothing_and_leaves_no_worker(q_registry: Path) -> None:
    proc = subprocess.Popen(
        [QUANTIZE, "run", "tiny-llama", "--method", "gptq", "--calibration", "calibration",
         "--name", "killed-gptq", "--registry", str(q_registry)],
        env=quantize_env(q_registry.parent), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if "oneshot gptq" in line:  # the worker is quantizing now
            break
    workers = _children(proc.pid)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)  # died with its parent
    listed = subprocess.run(
        [REGISTRY, "ls", "--json", "--registry", str(q_registry)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "killed-gptq" not in listed.stdout
    log = subprocess.run(
        [REGISTRY, "log", "--registry", str(q_registry)], capture_output=True, text=True
    )
    assert "killed-gptq" not in log.stdout


def strict_fp8(registry: Path, directory: Path, *replacements: tuple[str, str]) -> dict[str, str]:
    """The environment that makes `quantize` read an fp8 recipe with stricter gates."""
    from quantize.recipes import recipe_path

    text = recipe_path("fp8").read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    (directory / "fp8.toml").write_text(text)
    return {**quantize_env(registry.parent), "QUANTIZE_RECIPES_DIR": str(directory)}


def test_a_variant_that_misses_its_gate_is_not_registered(
    q_registry: Path, fp8_variant: dict[str, object], tmp_path: Path
) -> None:
    env = strict_fp8(
        q_registry, tmp_path, ("min_token_agreement = 0.99", "min_token_agreement = 1.0")
    )
    proc = subprocess.run(
        [QUANTIZE, "run", "tiny-llama", "--method", "fp8", "--name", "strict-fp8",
         "--registry", str(q_registry)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 22, proc.stderr
    assert "missed its fidelity gate (token_agreement" in proc.stderr
    assert "nothing was registered" in proc.stderr and "--force" in proc.stderr
    listed = subprocess.run(
        [REGISTRY, "ls", "--registry", str(q_registry)], capture_output=True, text=True
    )
    assert "strict-fp8" not in listed.stdout
    log = subprocess.run(
        [REGISTRY, "log", "strict-fp8", "--registry", str(q_registry)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "variant.refused" in log.stdout and "token_agreement" in log.stdout


def test_merge_registers_a_variant_naming_base_and_adapter(
    q_registry: Path, merged_variant: str
) -> None:
    merged = show(q_registry, merged_variant)
    base, adapter = show(q_registry, "tiny-llama"), show(q_registry, "support-v1@1")
    lineage = merged["quantization"]
    assert isinstance(lineage, dict)
    assert merged["parent"] == "tiny-llama" and lineage["method"] == "merge"
    assert lineage["base_digest"] == base["digest"]
    assert lineage["adapter_digest"] == adapter["digest"] and lineage["adapter"] == "support-v1@1"
    fidelity = merged["fidelity"]
    assert isinstance(fidelity, dict) and fidelity["against"].startswith("adapter mode")
    assert fidelity["merged"]["token_agreement"] >= 0.995  # float32 merge: near exact


def test_eval_records_a_failed_pair_and_force_overrides_it(
    q_registry: Path, fp8_variant: dict[str, object], tmp_path: Path
) -> None:
    env = strict_fp8(  # nothing short of identical passes (FP8 moves every weight a little)
        q_registry,
        tmp_path,
        ("min_token_agreement = 0.99", "min_token_agreement = 1.0"),
        ("max_perplexity_ratio = 1.02", "max_perplexity_ratio = 1.0"),
    )

    def evaluate(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [QUANTIZE, "eval", "tiny-llama-fp8", "support-v1@1", *extra,
             "--registry", str(q_registry)],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    def pair() -> dict[str, object]:
        evals = show(q_registry, "support-v1@1")["variant_evals"]
        assert isinstance(evals, list)
        found: dict[str, object] = next(e for e in evals if e["variant"] == "tiny-llama-fp8")
        return found

    failed = evaluate()
    assert failed.returncode == 0, failed.stderr
    assert "support-v1@1 on tiny-llama-fp8: FAILED" in failed.stdout
    first = pair()
    assert first["passed"] is False and first["failed_gates"]
    forced = evaluate("--force")
    assert "(forced: served anyway)" in forced.stdout
    result = pair()
    assert result["passed"] is True and result["failed_gates"] == first["failed_gates"]
    assert isinstance(result["figures"], dict) and result["figures"]["forced"] is True
    restored = subprocess.run(
        [QUANTIZE, "eval", "tiny-llama-fp8", "support-v1@1", "--registry", str(q_registry)],
        env=quantize_env(q_registry.parent), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "support-v1@1 on tiny-llama-fp8: ok" in restored.stdout, restored.stderr
