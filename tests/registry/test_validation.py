"""Every push validation rule refuses with its reason, and nothing is written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import registry
from registry.errors import AdapterProblem as P
from registry.local import LocalRegistry
from registry.protocol import Registry
from tests.support.refusals import assert_nothing_kept

from .conftest import write_base

Mutator = Callable[[Path], None]


def _config(path: Path, **changes: object) -> None:
    config = json.loads((path / "adapter_config.json").read_text())
    config.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(config))


def _tensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    save_file(tensors, str(path / "adapter_model.safetensors"))


A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
CASES: dict[str, tuple[P, Mutator]] = {
    "no_config": (P.NOT_PEFT, lambda p: (p / "adapter_config.json").unlink()),
    "not_lora": (P.NOT_LORA, lambda p: _config(p, peft_type="PREFIX_TUNING")),
    "dora": (P.UNSUPPORTED, lambda p: _config(p, use_dora=True)),
    "pickled": (P.PICKLED_WEIGHTS, lambda p: (p / "adapter_model.bin").write_bytes(b"\x80\x04")),
    "no_weights": (P.NO_WEIGHTS, lambda p: (p / "adapter_model.safetensors").unlink()),
    "garbage_weights": (
        P.BAD_SAFETENSORS,
        lambda p: (p / "adapter_model.safetensors").write_bytes(b"\xff" * 64),
    ),
    "unknown_module": (
        P.TENSOR_MISMATCH,
        lambda p: _tensors(
            p,
            {
                "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight": np.zeros((4, 32)),
                "base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight": np.zeros((32, 4)),
            },
        ),
    ),
    "wrong_shape": (
        P.TENSOR_MISMATCH,
        lambda p: _tensors(p, {A: np.zeros((4, 48)), B: np.zeros((32, 4))}),
    ),
    "rank_mismatch": (
        P.TENSOR_MISMATCH,
        lambda p: _tensors(p, {A: np.zeros((4, 32)), B: np.zeros((32, 2))}),
    ),
    "stray_tensor": (
        P.TENSOR_MISMATCH,
        lambda p: _tensors(p, {A: np.zeros((4, 32)), B: np.zeros((32, 4)), "x": np.zeros(2)}),
    ),
    "rank_too_high": (
        P.RANK_TOO_HIGH,
        lambda p: (_config(p, r=32), _tensors(p, {A: np.zeros((32, 32)), B: np.zeros((32, 32))})),
    ),
    "unknown_target": (P.UNKNOWN_TARGET, lambda p: _config(p, target_modules=["c_attn"])),
    "template_differs": (
        P.CHAT_TEMPLATE_MISMATCH,
        lambda p: (p / "chat_template.jinja").write_text("{{ messages }}"),
    ),
    "symlink": (P.UNSAFE_PATH, lambda p: os.symlink("/etc/hostname", p / "link.txt")),
    "bad_schema": (P.BAD_SCHEMA, lambda p: (p / "schema.json").write_text('{"type": 5}')),
    # Rough edges a new user hit: each of these was accepted and failed only when served,
    # or crashed the push (NaN: sqlite3.IntegrityError and an orphan blob; nesting:
    # RecursionError).
    "r_zero": (P.BAD_CONFIG, lambda p: _config(p, r=0)),
    "r_negative": (P.BAD_CONFIG, lambda p: _config(p, r=-4)),
    "r_string": (P.BAD_CONFIG, lambda p: _config(p, r="4")),
    "r_bool": (P.BAD_CONFIG, lambda p: _config(p, r=True)),
    "alpha_string": (P.BAD_CONFIG, lambda p: _config(p, lora_alpha="16")),
    "dropout_one": (P.BAD_CONFIG, lambda p: _config(p, lora_dropout=1.5)),
    "rank_pattern_string": (P.BAD_CONFIG, lambda p: _config(p, rank_pattern={"q_proj": "4"})),
    "modules_to_save": (P.UNSUPPORTED, lambda p: _config(p, modules_to_save=["lm_head"])),
    "alpha_nan": (P.BAD_CONFIG, lambda p: _raw_config(p, '"lora_alpha": NaN')),
    "alpha_infinity": (P.BAD_CONFIG, lambda p: _raw_config(p, '"lora_alpha": Infinity')),
    "alpha_overflow": (P.BAD_CONFIG, lambda p: _raw_config(p, '"lora_alpha": 1e999')),
    "nan_deep_inside": (P.BAD_CONFIG, lambda p: _raw_config(p, '"extra": {"x": [1, -Infinity]}')),
    "deep_nesting": (P.BAD_CONFIG, lambda p: _raw_config(p, '"x": ' + "[" * 5000 + "]" * 5000)),
    "deeper_than_allowed": (P.BAD_CONFIG, lambda p: _raw_config(p, '"x": ' + "[" * 70 + "]" * 70)),
    "schema_deep": (
        P.BAD_SCHEMA,
        lambda p: (p / "schema.json").write_text('{"items": ' * 3000 + "{}" + "}" * 3000),
    ),
    "training_args_nan": (
        P.BAD_META,
        lambda p: (p / "training_args.json").write_text('{"lr": NaN}'),
    ),
    "dot_env": (P.UNEXPECTED_FILE, lambda p: (p / ".env").write_text("OPENAI_API_KEY=sk-x\n")),
    "nested_file": (
        P.UNEXPECTED_FILE,
        lambda p: ((p / "sub").mkdir(), (p / "sub" / "x.json").write_text("{}")),
    ),
    "checkpoint_dir": (
        P.UNEXPECTED_FILE,
        lambda p: (p / "optimizer.safetensors").write_bytes(b"x"),
    ),
    # Issue 10, section 2: non-finite weights corrupted the engine for every tenant.
    "lora_b_all_nan": (
        P.NON_FINITE,
        lambda p: _tensors(
            p, {A: np.ones((4, 32), np.float32), B: np.full((32, 4), np.nan, np.float32)}
        ),
    ),
    "one_inf_f16": (
        P.NON_FINITE,
        lambda p: _tensors(p, {A: np.ones((4, 32), np.float16), B: _one(np.float16, np.inf)}),
    ),
    "one_nan_f64": (
        P.NON_FINITE,
        lambda p: _tensors(p, {A: np.ones((4, 32)), B: _one(np.float64, np.nan)}),
    ),
    "nan_bf16": (P.NON_FINITE, lambda p: _bf16(p, 0x7FC0)),
    "inf_bf16": (P.NON_FINITE, lambda p: _bf16(p, 0xFF80)),
    "truncated_tensor": (P.BAD_SAFETENSORS, lambda p: _shrink_tensor(p)),
    "integer_lora": (
        P.BAD_SAFETENSORS,
        lambda p: _tensors(p, {A: np.ones((4, 32), np.int32), B: np.ones((32, 4), np.int32)}),
    ),
}


def _one(dtype: type[np.floating], value: float) -> np.ndarray:
    out = np.zeros((32, 4), dtype)
    out[7, 3] = value
    return out


def _raw_config(path: Path, member: str) -> None:
    text = (path / "adapter_config.json").read_text()
    (path / "adapter_config.json").write_text(text.rstrip().rstrip("}") + ", " + member + "}")


def _bf16(path: Path, bits: int) -> None:
    """A/B pair stored as BF16 (numpy has no bfloat16: write the header by hand)."""
    a = np.full((4, 32), 0x3F80, np.uint16)  # 1.0
    b = np.full((32, 4), 0x3F80, np.uint16)
    b[5, 1] = bits
    header = {
        A: {"dtype": "BF16", "shape": [4, 32], "data_offsets": [0, a.nbytes]},
        B: {"dtype": "BF16", "shape": [32, 4], "data_offsets": [a.nbytes, a.nbytes + b.nbytes]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    blob = len(raw).to_bytes(8, "little") + raw + a.tobytes() + b.tobytes()
    (path / "adapter_model.safetensors").write_bytes(blob)


def _shrink_tensor(path: Path) -> None:
    """A header that claims more bytes for a tensor than its shape needs."""
    a, b = np.ones((4, 32), np.float32), np.ones((32, 4), np.float32)
    header = {
        A: {"dtype": "F32", "shape": [4, 32], "data_offsets": [0, a.nbytes]},
        B: {"dtype": "F32", "shape": [32, 2], "data_offsets": [a.nbytes, a.nbytes + b.nbytes]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    blob = len(raw).to_bytes(8, "little") + raw + a.tobytes() + b.tobytes()
    (path / "adapter_model.safetensors").write_bytes(blob)


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_before_writing(
    reg: Registry,
    backing_reg: LocalRegistry,
    reg_kind: str,
    make_adapter: Callable[..., Path],
    case: str,
) -> None:
    reason, mutate = CASES[case]
    path = make_adapter("support")
    mutate(path)
    blobs_before = sorted(backing_reg.blobs.digests())
    token = reg.change_token()
    with pytest.raises(registry.InvalidAdapterError) as info:
        reg.push_adapter(path, dataset="support-data")
    assert info.value.reason == reason, str(info.value)
    assert str(info.value)
    assert_nothing_kept(reg, backing_reg, reg_kind, blobs_before)
    assert reg.change_token() == token and reg.list_adapters() == []


def test_matching_template_is_accepted(reg: Registry, make_adapter: Callable[..., Path]) -> None:
    from .conftest import CHAT_TEMPLATE

    path = make_adapter()
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    assert reg.push_adapter(path, dataset="support-data").created


def test_empty_dir_and_missing_base(
    reg: Registry, tmp_path: Path, make_adapter: Callable[..., Path]
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(registry.InvalidAdapterError) as info:
        reg.push_adapter(tmp_path / "empty", dataset="support-data")
    assert info.value.reason == P.EMPTY
    with pytest.raises(registry.InvalidAdapterError) as info:
        reg.push_adapter(make_adapter(), base="llama-70b", dataset="support-data")
    assert info.value.reason == P.BASE_MODEL_UNKNOWN


def test_file_too_large(reg_path: Path, base_dir: Path, make_adapter: Callable[..., Path]) -> None:
    tight = registry.RegistrySettings(max_file_bytes=1000)
    with (
        registry.open(reg_path, settings=tight) as reg,
        pytest.raises(registry.InvalidBaseModelError, match="REGISTRY_MAX_FILE_BYTES"),
    ):
        reg.add_base(base_dir, name="tiny-base")
    with registry.open(reg_path) as reg:
        reg.add_base(base_dir, name="tiny-base")
    with registry.open(reg_path, settings=tight) as reg:
        with pytest.raises(registry.InvalidAdapterError) as info:
            reg.push_adapter(make_adapter(), allow_unknown_dataset=True)
        assert info.value.reason == P.FILE_TOO_LARGE


def test_rank_limit_is_a_setting(
    reg_path: Path, base_dir: Path, make_adapter: Callable[..., Path]
) -> None:
    with registry.open(reg_path, settings=registry.RegistrySettings(max_lora_rank=2)) as reg:
        reg.add_base(base_dir, name="tiny-base")
        with pytest.raises(registry.InvalidAdapterError, match="serving limit 2"):
            reg.push_adapter(make_adapter(r=4), allow_unknown_dataset=True)
        assert reg.push_adapter(make_adapter(r=2), allow_unknown_dataset=True).created


def test_base_choice(reg: Registry, tmp_path: Path, make_adapter: Callable[..., Path]) -> None:
    reg.add_base(write_base(tmp_path / "other-base", template="x"), name="other-base")
    with pytest.raises(registry.InvalidAdapterError, match="pass --base"):
        reg.push_adapter(
            make_adapter(config={"base_model_name_or_path": "?"}), dataset="support-data"
        )
    v = reg.push_adapter(make_adapter(), dataset="support-data").adapter  # hint: tiny-base
    assert v.base_model.name == "tiny-base"
    v2 = reg.push_adapter(make_adapter("x"), base="other-base", dataset="support-data").adapter
    assert v2.base_model.name == "other-base"


def test_bad_base_models(reg: Registry, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(registry.InvalidBaseModelError, match="safetensors"):
        reg.add_base(pickled, name="pickled")
    with pytest.raises(registry.InvalidBaseModelError, match=r"config\.json"):
        reg.add_base(tmp_path, name="nothing")


def test_messages_name_the_field_and_the_tensor(
    reg: Registry, make_adapter: Callable[..., Path]
) -> None:
    path = make_adapter()
    _raw_config(path, '"alpha_pattern": {"q_proj": NaN}')
    with pytest.raises(registry.InvalidAdapterError, match=r"alpha_pattern\.q_proj is nan"):
        reg.push_adapter(path, dataset="support-data")
    path = make_adapter()
    _tensors(path, {A: np.ones((4, 32), np.float32), B: _one(np.float32, np.nan)})
    with pytest.raises(registry.InvalidAdapterError, match=r"lora_B.weight' .* 1 NaN"):
        reg.push_adapter(path, dataset="support-data")
    path = make_adapter()
    (path / ".env").write_text("SECRET=1\n")
    with pytest.raises(registry.InvalidAdapterError, match=r"holds \.env"):
        reg.push_adapter(path, dataset="support-data")


def test_files_an_adapter_needs_are_accepted(
    reg: Registry, make_adapter: Callable[..., Path]
) -> None:
    path = make_adapter()
    (path / "README.md").write_text("# support\n")
    (path / "training_args.json").write_text('{"lr": 0.0002}')
    (path / "special_tokens_map.json").write_text("{}")
    assert reg.push_adapter(path, dataset="support-data").created
