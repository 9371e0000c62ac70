"""Issue 17: an adapter whose numbers blank the engine was recorded `passed: true` on the
fp8 variant (no perplexity, token agreement 1.0). Pushed with the registry's magnitude
bounds relaxed on purpose, such an adapter is measured on the variant by the real worker
and recorded as failed, with the reason naming the figure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from tests.quantize.conftest import REGISTRY, quantize_env, show
from tests.support.zoo import adapter_dir


def engine_blanking_adapter(path: Path) -> Path:
    """support-v1 with every weight 6e4 and scaling 1: each value (and lora_B x scaling)
    fits float16, yet the update is ~10^10 times a layer's, and tiny-llama answers with
    all-zero logits (every RMSNorm sees an infinite variance)."""
    src = adapter_dir("support-v1")
    path.mkdir(parents=True)
    config = json.loads((src / "adapter_config.json").read_text())
    config["lora_alpha"] = config["r"]
    (path / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(str(src / "adapter_model.safetensors"))
    save_file({n: np.full(t.shape, 6e4, np.float32) for n, t in tensors.items()},
              str(path / "adapter_model.safetensors"))  # fmt: skip
    return path


def test_an_engine_blanking_adapter_fails_its_pair_on_the_fp8_variant(
    q_registry: Path, fp8_variant: dict[str, object], tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(q_registry, registry)
    evil = engine_blanking_adapter(tmp_path / "blank")
    push = [REGISTRY, "push", str(evil), "--base", "tiny-llama", "--allow-unknown-dataset",
            "--registry", str(registry)]  # fmt: skip
    env = quantize_env(tmp_path)

    refused = subprocess.run(push, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 6, refused.stderr  # the default bounds refuse it
    assert "REGISTRY_MAX_WEIGHT_ABS" in refused.stderr

    relaxed = {**env, "REGISTRY_MAX_WEIGHT_ABS": "1e5", "REGISTRY_MAX_UPDATE_RATIO": "1e30"}
    pushed = subprocess.run(push, env=relaxed, capture_output=True, text=True, timeout=600)
    assert pushed.returncode == 0, pushed.stderr
    assert "evaluating blank@1 on variant tiny-llama-fp8" in pushed.stderr
    assert "blank@1 on tiny-llama-fp8: FAILED" in pushed.stderr

    (pair,) = show(registry, "blank@1")["variant_evals"]  # type: ignore[misc]
    assert pair["variant"] == "tiny-llama-fp8"
    assert pair["passed"] is False
    assert "token_agreement" in pair["failed_gates"]
    reasons = " ".join(pair["figures"]["gate_reasons"])
    assert "token_agreement is missing" in reasons and "one token repeated" in reasons
