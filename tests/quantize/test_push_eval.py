"""`registry push` to a base that has quantized variants measures the new version on each
of them (the `loraport.after_push` hook that `quantize` installs), so the gateway can
serve it there; `--no-eval` and a missing quantize environment leave the push in place and
the pair unevaluated, and the next push of the same version catches up."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.quantize.conftest import REGISTRY, quantize_env, show
from tests.support.zoo import adapter_dir


def push(registry: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REGISTRY, "push", str(adapter_dir("support-v2")), "--name", "pushed-late", "--base",
         "tiny-llama", "--allow-unknown-dataset", *extra, "--registry", str(registry)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def evaluated_on(registry: Path, ref: str) -> dict[str, dict[str, object]]:
    evals = show(registry, ref).get("variant_evals", [])
    assert isinstance(evals, list)
    return {e["variant"]: e for e in evals}


def test_push_measures_the_version_on_each_quantized_variant_once(
    q_registry: Path, fp8_variant: dict[str, object], merged_variant: str, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(q_registry, registry)  # this test's pushes stay out of the shared one
    env = quantize_env(tmp_path)

    skipped = push(registry, "--no-eval", env=env)
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.startswith("pushed-late@1 sha256:") and "evaluating" not in skipped.stderr
    assert evaluated_on(registry, "pushed-late@1") == {}

    broken = push(registry, env={**env, "QUANTIZE_PYTHON": str(tmp_path / "no-such-python")})
    assert broken.returncode == 0, broken.stderr  # the push stands
    assert "pushed-late@1 is pushed, but after-push step 'variant-pairs' failed" in broken.stderr
    assert "`quantize eval tiny-llama-fp8 pushed-late@1`" in broken.stderr
    assert evaluated_on(registry, "pushed-late@1") == {}

    done = push(registry, env=env)  # same version again: catches up on what is missing
    assert done.returncode == 0, done.stderr
    assert "(already existed)" in done.stdout
    assert "evaluating pushed-late@1 on variant tiny-llama-fp8" in done.stderr
    assert merged_variant not in done.stderr  # a merged deployment takes no adapters
    results = evaluated_on(registry, "pushed-late@1")
    assert set(results) == {"tiny-llama-fp8"}
    pair = results["tiny-llama-fp8"]
    assert pair["passed"] is True and pair["failed_gates"] == []
    figures = pair["figures"]
    assert isinstance(figures, dict) and figures["token_agreement"] >= 0.99
    log = subprocess.run(
        [REGISTRY, "log", "pushed-late", "--registry", str(registry)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "pair.eval" in log.stdout

    again = push(registry, env=env)
    assert again.returncode == 0 and "evaluating" not in again.stderr  # nothing left to do
