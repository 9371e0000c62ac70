"""`registry push` and the pairs it leaves: on a registry service (a real `registry serve`)
the after-push hook does not run and the push says which pairs wait for `quantize eval
--pending` (`--json`: "pending_pairs"); on a directory the hook runs as before."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import registry
from registry.local import LocalRegistry
from tests.registry.conftest import ON_A_DIRECTORY
from tests.support.registry_service import REGISTRY, registry_service
from tests.support.synthetic import write_base

TOKEN = "test-push-pending-token"


def with_variant(reg: LocalRegistry, tmp_path: Path) -> None:
    """Variant ``tiny-base-fp8`` of ``tiny-base`` (random weights) and one merged
    deployment (which takes no adapters)."""
    for name, method in (("tiny-base-fp8", "fp8"), ("tiny-base-merged", "merge")):
        reg.add_variant(
            write_base(tmp_path / name, random=True),
            name=name,
            parent="tiny-base",
            quantization={"method": method},
            fidelity={},
            passed=True,
            forced=False,
            pairs=[],
        )
    reg.close()


def push(adapter: Path, location: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "QUANTIZE_"))}
    env["REGISTRY_TOKEN"] = TOKEN
    env["QUANTIZE_EVAL_FILE"] = str(adapter.parent / "no-such-eval.jsonl")  # a hook fails fast
    return subprocess.run(
        [REGISTRY, "push", str(adapter), "--base", "tiny-base", "--allow-unknown-dataset",
         "--registry", location, *extra],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@ON_A_DIRECTORY
def test_a_push_over_http_leaves_its_pairs_and_says_so(
    reg: LocalRegistry, reg_path: Path, tmp_path: Path, make_adapter: Callable[..., Path]
) -> None:
    with_variant(reg, tmp_path)
    with registry_service(reg_path, tmp_path / "serve.log", token=TOKEN) as service:
        text = push(make_adapter("support"), service.url)
        assert text.returncode == 0, text.stderr
        assert text.stdout.startswith("support@1 sha256:")
        assert "after-push step" not in text.stderr  # the hook did not run here
        assert (
            "registry: 1 pair(s) left for `quantize eval --pending`: support@1 on "
            "tiny-base-fp8 (the gateway refuses support@1 there until they are measured)"
        ) in text.stderr

        as_json = push(make_adapter("extract", seed=1), service.url, "--json")
        assert as_json.returncode == 0, as_json.stderr
        out = json.loads(as_json.stdout)
        assert out["ref"] == "extract@1" and out["created"] is True
        assert out["digest"].startswith("sha256:")
        assert out["pending_pairs"] == [{"adapter": "extract@1", "variant": "tiny-base-fp8"}]
    with registry.open(reg_path, create=False) as local:
        assert local.pairs_on("tiny-base-fp8") == []  # nothing was measured or recorded


@ON_A_DIRECTORY
def test_a_push_to_a_directory_runs_the_hook_as_before(
    reg: LocalRegistry, reg_path: Path, tmp_path: Path, make_adapter: Callable[..., Path]
) -> None:
    with_variant(reg, tmp_path)
    ran = push(make_adapter("support"), str(reg_path), "--json")
    assert ran.returncode == 0, ran.stderr
    assert "evaluating support@1 on variant tiny-base-fp8 (quantize eval)" in ran.stderr
    assert "after-push step 'variant-pairs' failed" in ran.stderr  # no eval set: it says so
    assert "left for `quantize eval --pending`" not in ran.stderr  # the warning said it
    assert json.loads(ran.stdout)["pending_pairs"] == [
        {"adapter": "support@1", "variant": "tiny-base-fp8"}
    ]

    skipped = push(make_adapter("extract", seed=1), str(reg_path), "--no-eval")
    assert skipped.returncode == 0, skipped.stderr
    assert "evaluating" not in skipped.stderr
    assert "1 pair(s) left for `quantize eval --pending`: extract@1" in skipped.stderr
