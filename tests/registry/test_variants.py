"""Variants in the registry: recorded in one transaction with their pair results, shown by
`registry show`, and never half-recorded when the writer is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import registry
from registry.cli import main as registry_cli
from registry.local import LocalRegistry
from registry.protocol import Registry

QUANT = {"method": "fp8", "scheme": "FP8_DYNAMIC", "recipe_digest": "sha256:" + "a" * 64}
FIDELITY = {"base": {"token_agreement": 0.99}, "size_ratio": 0.36, "failed_gates": []}


def _add(reg: Registry, base_dir: Path, pairs: list[registry.PairInput], **kw: Any) -> None:
    reg.add_variant(
        base_dir,
        name=kw.pop("name", "tiny-base-fp8"),
        parent="tiny-base",
        quantization=QUANT,
        fidelity=FIDELITY,
        passed=kw.pop("passed", True),
        forced=kw.pop("forced", False),
        pairs=pairs,
    )


def test_variant_lineage_pairs_and_show(
    reg: Registry, base_dir: Path, make_adapter: Callable[..., Path]
) -> None:
    support = reg.push_adapter(make_adapter("support"), dataset="support-data").adapter
    pairs = [registry.PairInput("support@1", False, ("task_score",), {"task_score": {"drop": 0.2}})]
    _add(reg, base_dir, pairs)
    variant = reg.base("tiny-base-fp8")
    assert (variant.parent, variant.quantization) == ("tiny-base", "fp8")
    info = reg.variant("tiny-base-fp8")
    assert info is not None and info.parent_digest == reg.base("tiny-base").digest
    assert [v.name for v in reg.variants_of("tiny-base")] == ["tiny-base-fp8"]
    found = reg.pair(support, "tiny-base-fp8")
    assert found is not None and not found.passed and found.failed_gates == ("task_score",)
    actions = [e.action for e in reg.events()]
    assert actions[-2:] == ["variant.add", "pair.eval"]

    runner = CliRunner()
    loc = ["--registry", reg.location]
    shown = json.loads(
        runner.invoke(registry_cli, ["show", "tiny-base-fp8", "--json", *loc]).output
    )
    assert shown["parent"] == "tiny-base" and shown["parent_digest"] == info.parent_digest
    assert shown["quantization"]["recipe_digest"] == QUANT["recipe_digest"]
    assert shown["fidelity"]["size_ratio"] == 0.36
    base_text = runner.invoke(registry_cli, ["show", "tiny-base", *loc]).output
    assert "variant:      tiny-base-fp8 (fp8)" in base_text
    adapter = json.loads(runner.invoke(registry_cli, ["show", "support", "--json", *loc]).output)
    assert adapter["variant_evals"][0]["variant"] == "tiny-base-fp8"
    assert adapter["variant_evals"][0]["failed_gates"] == ["task_score"]

    reg.record_pairs("tiny-base-fp8", [registry.PairInput("support@1", True, (), {})])
    again = reg.pair(support, "tiny-base-fp8")
    assert again is not None and again.passed  # re-evaluation replaces the result


def test_a_taken_name_is_refused_before_any_work(reg: Registry, base_dir: Path) -> None:
    with pytest.raises(registry.NameConflictError, match="is taken"):
        reg.check_name_free("support-data")
    _add(reg, base_dir, [])
    with pytest.raises(registry.NameConflictError):
        _add(reg, base_dir, [])


KILLER = """
import os, signal, sys
from registry.location import open_local

def die_at(step):
    if step == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

reg = open_local(sys.argv[1], create=False, on_step=die_at)
reg.add_variant(sys.argv[2], name="tiny-base-fp8", parent="tiny-base",
                quantization={"method": "fp8"}, fidelity={}, passed=True, forced=False, pairs=[])
"""


@pytest.mark.parametrize("step", ["variant.blobs", "variant.row"])
def test_killed_registration_leaves_nothing(
    local_reg: LocalRegistry, reg_path: Path, base_dir: Path, step: str
) -> None:
    token = local_reg.change_token()
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(reg_path), str(base_dir), step],
        env={**os.environ, "REGISTRY_URL": ""},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with registry.open(reg_path) as after:
        assert [b.name for b in after.list_bases()] == ["tiny-base"]
        assert after.variants_of("tiny-base") == []
        assert after.change_token() == token
        assert after.verify().ok


def test_a_parent_with_live_variants_is_not_removed(reg: Registry, base_dir: Path) -> None:
    _add(reg, base_dir, [])
    with pytest.raises(registry.InUseError, match="used by variant tiny-base-fp8"):
        reg.remove("tiny-base")
    assert reg.variant("tiny-base-fp8") is not None  # lineage intact
    reg.remove("tiny-base-fp8")
    reg.remove("tiny-base")
    assert [b.name for b in reg.list_bases()] == []


def test_a_base_and_a_variant_scan_their_directory_alike(
    reg: Registry, base_dir: Path, tmp_path: Path
) -> None:
    """One scan (registry.catalog.scan_base): same files, architecture and template for a
    base and a variant of the same directory; the same refusal of a bad one."""
    _add(reg, base_dir, [])
    base, variant = reg.base("tiny-base"), reg.base("tiny-base-fp8")
    assert variant.digest == base.digest
    assert variant.chat_template_digest == base.chat_template_digest
    assert {k: v for k, v in base.architecture.items() if k != "norms"} == variant.architecture
    (tmp_path / "empty").mkdir()
    with pytest.raises(registry.InvalidBaseModelError, match="cannot record base model from"):
        reg.add_base(tmp_path / "empty", name="other")
    with pytest.raises(registry.InvalidBaseModelError, match="cannot record variant from"):
        _add(reg, tmp_path / "empty", [], name="other-fp8")
