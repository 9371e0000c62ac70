"""The real zoo (examples/): a trained tiny Llama and its PEFT adapters round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import registry

from .test_transfer import _digest_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE = EXAMPLES / "models" / "tiny-llama"
ADAPTERS = sorted(p for p in (EXAMPLES / "adapters").glob("*") if p.is_dir())


def test_the_zoo_is_committed() -> None:
    assert (BASE / "config.json").exists()
    assert [p.name for p in ADAPTERS] == ["extract", "support-v1", "support-v2", "triage"]


def test_zoo_round_trip(tmp_path: Path) -> None:
    with registry.open(tmp_path / "reg") as reg:
        base = reg.add_base(BASE, name="tiny-llama", license="apache-2.0")
        assert base.architecture["architectures"]
        for adapter in ADAPTERS:
            args = json.loads((adapter / "training_args.json").read_text())
            data = EXAMPLES.parent / args["data_file"]
            dataset = reg.add_dataset(data, name=f"{adapter.name}-data").name
            pushed = reg.push_adapter(adapter, base="tiny-llama", dataset=dataset)
            version = pushed.adapter
            assert pushed.created and version.ref == f"{adapter.name}@1"
            assert version.base_model.digest == base.digest
            assert version.meta["training_args"]["task"] == args["task"]
            assert (version.schema is not None) == (adapter / "schema.json").exists()
            if (EXAMPLES.parent / ".git").exists():  # the zoo sits in this repo's work tree
                assert version.code is not None and len(version.code.commit) == 40
            out = reg.pull(version.ref, tmp_path / "pulled" / adapter.name)
            assert _digest_of(out) == _digest_of(adapter) == version.digest
            assert not reg.push_adapter(adapter, base="tiny-llama", dataset=dataset).created
        assert reg.verify().ok
        assert len(reg.list_adapters()) == len(ADAPTERS)
