"""What a migration must keep, for the migrate tests (tests/registry/test_migrate*.py): a
zoo as a registry in use holds it, and everything a user or a gateway reads of one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import registry
from registry.blobs import FileBlobStore
from registry.cli import main
from registry.location import open_local
from tests.support.zoo import ADAPTERS, adapter_dir, fill_registry

SETTINGS = registry.RegistrySettings(user="migrator")


def used_zoo(root: Path) -> Path:
    """The demo zoo at ``root``, plus what a registry in use holds beyond first pushes: a
    removed version, aliases, a rollout history with an analysis and a held lease, an
    active rollout, a quarantine and an orphan blob."""
    fill_registry(root)
    with open_local(root, settings=SETTINGS, create=False) as reg:
        for version, source in ((2, "support-v2"), (3, "extract")):
            copy = root.parent / f"support-v1-{version}"
            shutil.copytree(adapter_dir(source), copy)
            pushed = reg.push_adapter(
                copy, name="support-v1", base="tiny-llama", dataset="support-v1-data"
            )
            assert pushed.adapter.version == version
        reg.set_alias("support-v1", "staging", 3)
        first = reg.start_rollout("support-v1", 2, steps=[10, 50, 100])
        reg.claim_rollout("support-v1", first.id, "controller-a", ttl_s=3600)
        reg.advance_rollout("support-v1", first.id, 1, holder="controller-a", reason="healthy")
        reg.record_analysis(
            "support-v1",
            first.id,
            step=1,
            verdict="fail",
            reason="error rate 0.2 over 0.05",
            figures={"error_rate": 0.2, "requests": 40},
            holder="controller-a",
        )
        reg.end_rollout(
            "support-v1", first.id, "rolled_back", reason="error rate", holder="controller-a"
        )
        reg.remove("support-v1@2")  # a removed version: the next push is still 4
        second = reg.start_rollout("support-v1", 3, steps=[25, 100])
        reg.claim_rollout("support-v1", second.id, "controller-b", ttl_s=7200)
        reg.quarantine("triage@1", reason="answers in the wrong language")
        assert isinstance(reg.blobs, FileBlobStore)
        orphan = root.parent / "orphan.bin"
        orphan.write_bytes(b"left by a killed push")
        reg.blobs.put_file(orphan)
    return root


def cli_out(location: str | Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--registry", str(location), *args])
    assert result.exit_code == 0, result.output
    return result.output


REFS = (
    *ADAPTERS,
    "support-v1@1",
    "support-v1@3",
    "support-v1@staging",
    "support-v1@production",
    "tiny-llama",
    "support-v1-data",
)


def view(location: str | Path) -> dict[str, Any]:
    """Everything a user or a gateway reads, as the CLI and the protocol give it."""
    view: dict[str, Any] = {
        "ls": cli_out(location, "ls", "--json"),
        "log": cli_out(location, "log", "--json"),
        "quarantine": cli_out(location, "quarantine", "ls", "--json"),
    }
    for ref in REFS:
        view[f"show {ref}"] = cli_out(location, "show", ref, "--json")
    with registry.open(location, settings=SETTINGS, create=False) as reg:
        view["resolve"] = {ref: repr(reg.resolve(ref)) for ref in REFS}
        view["adapters"] = repr(reg.list_adapters())
        view["aliases"] = {name: reg.aliases(name) for name in ADAPTERS}
        view["rollouts"] = repr(reg.rollouts("support-v1"))
        view["active"] = repr(reg.rollout("support-v1"))
        view["events"] = repr(reg.events())
        view["bases"] = repr(reg.list_bases())
        view["datasets"] = repr(reg.list_datasets())
        view["token"] = reg.change_token()
    return view


def pulled(location: str | Path, ref: str, dest: Path) -> dict[str, bytes]:
    with registry.open(location, settings=SETTINGS, create=False) as reg:
        out = reg.pull(ref, dest)
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
