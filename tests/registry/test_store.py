"""The library API against a real SQLite file: push, resolve, aliases, removal, events."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import registry
from registry.local import LocalRegistry
from registry.protocol import Registry
from registry.push import DatasetFile, dataset_argument
from tests.registry.conftest import KINDS, reopen

MakeAdapter = Callable[..., Path]


@pytest.fixture(params=[*KINDS, "postgresql"])
def reg_kind(request: pytest.FixtureRequest) -> str:
    """Every test here also runs on PostgreSQL records with blobs in SeaweedFS (S3)."""
    return str(request.param)


def test_push_records_lineage(reg: Registry, make_adapter: MakeAdapter) -> None:
    path = make_adapter("support")
    (path / "training_args.json").write_text(json.dumps({"epochs": 3}))
    result = reg.push_adapter(path, dataset="support-data", meta={"owner": "ops"}, who="alice")
    assert result.created
    v = result.adapter
    assert (v.name, v.version, v.ref) == ("support", 1, "support@1")
    assert v.digest.startswith("sha256:") and len(v.digest) == 71
    assert v.base_model == registry.Lineage("tiny-base", reg.base("tiny-base").digest)
    assert v.dataset.name == "support-data"
    assert v.peft == registry.PeftSummary(4, 8.0, ("q_proj", "v_proj"), 0.05)
    assert v.meta == {"owner": "ops", "training_args": {"epochs": 3}}
    assert v.created_by == "alice" and v.created_at.endswith("Z")
    assert v.chat_template_digest == reg.base("tiny-base").chat_template_digest
    assert reg.resolve("support") == registry.Resolved("adapter", "support", 1, v.digest)
    assert reg.resolve(v.digest).version == 1


def test_identical_push_returns_existing(reg: Registry, make_adapter: MakeAdapter) -> None:
    path = make_adapter("support")
    first = reg.push_adapter(path, dataset="support-data")
    again = reg.push_adapter(path, dataset="support-data", alias="production")
    assert not again.created and again.adapter.version == 1
    assert again.adapter.aliases == ("production",)
    other = reg.push_adapter(make_adapter("support", seed=1), dataset="support-data")
    assert other.created and other.adapter.version == 2
    assert first.adapter.digest != other.adapter.digest
    assert [e.action for e in reg.events("support")] == ["push", "alias.set", "push"]


def test_unknown_dataset_needs_flag(reg: Registry, make_adapter: MakeAdapter) -> None:
    path = make_adapter()
    with pytest.raises(registry.InvalidAdapterError, match="allow-unknown-dataset"):
        reg.push_adapter(path)
    v = reg.push_adapter(path, allow_unknown_dataset=True).adapter
    assert v.dataset == registry.Lineage(None, None)


def test_dataset_file_is_added(reg: Registry, make_adapter: MakeAdapter, tmp_path: Path) -> None:
    data = tmp_path / "triage-data.jsonl"
    data.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    v = reg.push_adapter(make_adapter("triage"), dataset=str(data)).adapter
    assert v.dataset.name == "triage-data"
    assert reg.dataset("triage-data").records == 3
    assert reg.resolve("triage-data").kind == "dataset"
    again = reg.push_adapter(make_adapter("triage", seed=1), dataset=str(data)).adapter
    assert again.dataset == v.dataset  # same bytes, same dataset


def test_dataset_file_named_after_the_task(
    reg: Registry, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    """Rough edge: `push adapter/ --name extract --dataset data/extract.jsonl` was refused
    ("would be recorded as 'extract', a name already taken")."""
    data = tmp_path / "data" / "extract.jsonl"
    data.parent.mkdir()
    data.write_text('{"text": "a"}\n')
    first = reg.push_adapter(make_adapter("adapter"), name="extract", dataset=data).adapter
    assert first.ref == "extract@1"
    assert first.dataset.name is not None and first.dataset.name.startswith("extract-")
    assert first.dataset.digest == reg.dataset(first.dataset.name).digest
    assert reg.resolve("extract").kind == "adapter"
    second = reg.push_adapter(make_adapter("adapter", seed=1), name="extract", dataset=data)
    assert second.adapter.dataset == first.dataset  # recorded by content, once
    other = tmp_path / "other" / "extract.jsonl"
    other.parent.mkdir()
    other.write_text('{"text": "b"}\n')
    third = reg.push_adapter(make_adapter("adapter", seed=2), name="extract", dataset=other)
    assert third.adapter.dataset.name not in (None, first.dataset.name, "extract")
    named = tmp_path / "tiny-base.jsonl"  # the stem names a base model: not taken over
    named.write_text('{"text": "c"}\n')
    fourth = reg.push_adapter(make_adapter("x"), name="x", dataset=named).adapter
    assert fourth.dataset.name is not None and fourth.dataset.name.startswith("tiny-base-")


def test_resolve_rules(reg: Registry, make_adapter: MakeAdapter) -> None:
    for seed in range(3):
        reg.push_adapter(make_adapter(seed=seed), dataset="support-data")
    assert reg.resolve("support").version == 1  # the first version took production
    reg.set_alias("support", "production", 2)
    reg.set_alias("support", "canary", 3)
    assert reg.resolve("support").version == 2
    assert reg.resolve("support@canary").version == 3
    assert reg.resolve("support@1").version == 1
    assert reg.aliases("support") == {"canary": 3, "production": 2}
    assert reg.adapter("support@production").aliases == ("production",)
    with pytest.raises(registry.RefNotFoundError, match="no alias 'staging'"):
        reg.resolve("support@staging")
    with pytest.raises(registry.RefNotFoundError):
        reg.resolve("support@9")
    with pytest.raises(registry.RefNotFoundError):
        reg.resolve("nothing")
    with pytest.raises(registry.RefNotFoundError):
        reg.resolve("sha256:" + "0" * 64)
    with pytest.raises(registry.InvalidRefError):
        reg.resolve("tiny-base@1")
    assert reg.resolve("tiny-base").kind == "base"
    with pytest.raises(registry.RefNotFoundError):
        reg.set_alias("support", "production", 7)


def test_remove_is_soft_and_refused_while_aliased(reg: Registry, make_adapter: MakeAdapter) -> None:
    reg.push_adapter(make_adapter(seed=0), dataset="support-data", alias="production")
    reg.push_adapter(make_adapter(seed=1), dataset="support-data")
    with pytest.raises(registry.AliasInUseError, match="production"):
        reg.remove("support@1")
    reg.set_alias("support", "production", 2)
    token = reg.change_token()
    reg.remove("support@1", who="bob")
    assert reg.change_token() > token
    assert [v.version for v in reg.list_adapters()] == [2]
    with pytest.raises(registry.RefNotFoundError, match="removed"):
        reg.resolve("support@1")
    reg.remove_alias("support", "production")
    with pytest.raises(registry.RefNotFoundError, match="alias set support production 2"):
        reg.resolve("support")
    v3 = reg.push_adapter(make_adapter(seed=0), dataset="support-data").adapter
    assert v3.version == 3  # numbers are never reused
    with pytest.raises(registry.InUseError):
        reg.remove("tiny-base")
    assert reg.events("support")[-1].action == "push"
    assert any(e.action == "remove" and e.who == "bob" for e in reg.events())


def test_shared_namespace(reg: Registry, make_adapter: MakeAdapter, base_dir: Path) -> None:
    with pytest.raises(registry.NameConflictError, match="base"):
        reg.push_adapter(make_adapter("tiny-base"), dataset="support-data")
    with pytest.raises(registry.NameConflictError):
        reg.add_dataset(base_dir / "config.json", name="tiny-base")
    assert reg.add_base(base_dir, name="tiny-base").name == "tiny-base"  # idempotent


def test_base_record(reg: Registry) -> None:
    base = reg.base("tiny-base")
    assert base.license == "apache-2.0" and base.parent is None and base.quantization is None
    assert base.architecture["architectures"] == ["LlamaForCausalLM"]
    assert base.architecture["modules"]["model.layers.1.mlp.down_proj"] == [32, 64]
    assert "q_proj" in base.architecture["target_modules"]
    assert reg.list_bases() == [base]
    assert reg.resolve(base.digest).kind == "base"


def test_schema_from_dir_and_argument(reg: Registry, make_adapter: MakeAdapter) -> None:
    path = make_adapter("extract")
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    (path / "schema.json").write_text(json.dumps(schema))
    v = reg.push_adapter(path, dataset="support-data").adapter
    assert v.schema == schema
    other = {"type": "object", "required": ["x"]}
    v2 = reg.push_adapter(path, dataset="support-data", schema=other).adapter
    assert v2.version == 2 and v2.schema == other  # a different schema is a new version


def test_reopen_and_change_token(
    backing_reg: LocalRegistry,
    reg: Registry,
    make_adapter: MakeAdapter,
    settings: registry.RegistrySettings,
) -> None:
    reg.push_adapter(make_adapter(), dataset="support-data")
    token = reg.change_token()
    with reopen(backing_reg, settings) as again:  # the records' home, opened anew
        assert again.change_token() == token
        assert [v.ref for v in again.list_adapters()] == ["support@1"]
        assert again.list_adapters()[0] == reg.adapter("support@1")


def test_events_are_append_only(local_reg: LocalRegistry) -> None:
    import sqlite3

    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        local_reg.store.conn.execute("DELETE FROM events")


def test_a_push_never_changes_what_the_name_serves(
    reg: Registry, make_adapter: MakeAdapter
) -> None:
    """Rough edge: pushing mine@2 without an alias turned plain `mine` ambiguous (400)."""
    first = reg.push_adapter(make_adapter("mine"), dataset="support-data").adapter
    assert first.aliases == ("production",)
    assert reg.resolve("mine").version == 1
    second = reg.push_adapter(make_adapter("mine", seed=1), dataset="support-data").adapter
    assert second.aliases == () and reg.resolve("mine").version == 1
    canary = reg.push_adapter(make_adapter("mine", seed=2), dataset="support-data", alias="canary")
    assert canary.adapter.aliases == ("canary",) and reg.resolve("mine").version == 1
    reg.set_alias("mine", "production", 3)
    assert reg.resolve("mine").version == 3


def test_kind_messages_have_the_right_article(reg: Registry, make_adapter: MakeAdapter) -> None:
    """Was "extract is a adapter, not a dataset"."""
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: reg.push_adapter(make_adapter("x"), dataset="support"), "is an adapter, not"),
        (lambda: reg.dataset("tiny-base"), "tiny-base is a base model, not a dataset"),
        (lambda: reg.adapter("support-data"), "support-data is a dataset, not an adapter"),
        (lambda: reg.base("support"), "support is an adapter, not a base model"),
        (lambda: reg.resolve("tiny-base@1"), "tiny-base is a base model: it has no versions"),
    ]
    for call, message in cases:
        with pytest.raises(registry.RegistryError, match=message):
            call()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("support-data", "support-data"),
        ("support-v1-data", "support-v1-data"),
        ("data.jsonl", "data.jsonl"),  # a bare name is a ref, even with a suffix
        ("sha256:" + "a" * 64, "sha256:" + "a" * 64),
        ("./support-data", DatasetFile(Path("support-data"))),
        ("../data/x.jsonl", DatasetFile(Path("../data/x.jsonl"))),
        ("data/x.jsonl", DatasetFile(Path("data/x.jsonl"))),
        ("/srv/data/x.jsonl", DatasetFile(Path("/srv/data/x.jsonl"))),
        (".hidden", DatasetFile(Path(".hidden"))),
        ("~/x.jsonl", DatasetFile(Path("~/x.jsonl").expanduser())),
        # was a traceback (exit 1): an unknown user's home is left as written, to be refused
        # as a file that does not exist
        ("~no-such-user-q9/x.jsonl", DatasetFile(Path("~no-such-user-q9/x.jsonl"))),
        (Path("support-data"), DatasetFile(Path("support-data"))),  # a path object: a file
    ],
)
def test_dataset_argument_is_decided_by_its_spelling(
    value: str | Path, expected: str | DatasetFile
) -> None:
    assert dataset_argument(value) == expected


@pytest.mark.parametrize("value", ["", "~no-such-user-q9/x.jsonl", ".", "/dev/zero"])
def test_odd_dataset_spellings_are_refused_with_a_message(
    reg: Registry, make_adapter: MakeAdapter, value: str
) -> None:
    """Was: `~unknown-user/...` a traceback; `''` suggested writing `./` (the current
    directory exists, but only a file can be recorded)."""
    with pytest.raises(registry.InvalidAdapterError) as caught:
        reg.push_adapter(make_adapter(seed=1), dataset=value)
    assert caught.value.reason == registry.AdapterProblem.DATASET_REQUIRED
    assert "write ./;" not in str(caught.value) and "a file is taken only as a path" in str(
        caught.value
    )


def test_a_bare_dataset_name_is_never_taken_for_a_file(
    reg: Registry, make_adapter: MakeAdapter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: `--dataset support-data` recorded a file of that name in the current directory
    instead of the registered dataset."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "support-data").write_text('{"text": "not the registered one"}\n')
    registered = reg.dataset("support-data")
    by_name = reg.push_adapter(make_adapter(seed=1), dataset="support-data").adapter
    assert by_name.dataset == registry.Lineage("support-data", registered.digest)
    by_path = reg.push_adapter(make_adapter(seed=2), dataset="./support-data").adapter
    assert by_path.dataset.digest not in (None, registered.digest)
    (work / "only-a-file.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(registry.InvalidAdapterError, match=r"write \./only-a-file\.jsonl"):
        reg.push_adapter(make_adapter(seed=3), dataset="only-a-file.jsonl")
    with pytest.raises(registry.InvalidAdapterError, match="does not exist or is not a file"):
        reg.push_adapter(make_adapter(seed=4), dataset="./missing.jsonl")
    with pytest.raises(registry.InvalidAdapterError, match="is not a file"):
        reg.push_adapter(make_adapter(seed=5), dataset=str(work))
