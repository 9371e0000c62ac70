"""Push refuses adapters whose magnitudes cannot be served safely (issue 17), and
target_modules must name exactly the modules the weights hold."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import registry
from registry.adapter_bounds import (
    FP16_MAX,
    Bounds,
    Figures,
    ModuleUpdate,
    module_scale,
    refusal,
    scalings,
)
from registry.catalog import NORMS
from registry.cli import main
from registry.errors import AdapterProblem as P
from registry.local import LocalRegistry
from registry.location import open_local
from registry.protocol import Registry
from tests.support.refusals import assert_nothing_kept
from tests.support.synthetic import write_adapter, write_base
from tests.support.zoo import ADAPTERS, BASE_DIR, EXAMPLES, adapter_dir

Q = "base_model.model.model.layers.0.self_attn.q_proj"
V = "base_model.model.model.layers.0.self_attn.v_proj"


# -- pure decisions ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"r": 8, "lora_alpha": 16}, {"lora_alpha / r": 2.0}),
        ({"r": 16, "lora_alpha": 64, "use_rslora": True}, {"lora_alpha / sqrt(r)": 16.0}),
        ({"r": 4}, {"lora_alpha / r": 1.0}),
        (
            {"r": 8, "lora_alpha": 16, "alpha_pattern": {"q_proj": 80}},
            {"lora_alpha / r": 2.0, "alpha_pattern['q_proj'] / r": 10.0},
        ),
        (
            {"r": 8, "lora_alpha": 16, "rank_pattern": {"v_proj": 2}},
            {"lora_alpha / r": 2.0, "lora_alpha / rank_pattern['v_proj']": 8.0},
        ),
        ({"r": 8, "lora_alpha": 1e300}, {"lora_alpha / r": 1.25e299}),
        ({"r": 1, "lora_alpha": 1e308, "alpha_pattern": {"x": 1e308}}, None),
    ],
)
def test_scalings(config: dict[str, object], expected: dict[str, float] | None) -> None:
    found = scalings(config)
    if expected is None:  # finite inputs, no overflow: every scaling is a float
        assert all(isinstance(v, float) for v in found.values())
    else:
        assert found == pytest.approx(expected)


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("model.layers.0.self_attn.q_proj", 10.0),  # alpha_pattern by suffix
        ("model.layers.0.self_attn.v_proj", 8.0),  # rank_pattern by suffix
        ("model.layers.0.mlp.up_proj", 2.0),  # neither: the global scaling
        ("model.layers.1.mlp.down_proj", 2.0),  # a pattern smaller than global: global wins
    ],
)
def test_module_scale(module: str, expected: float) -> None:
    config = {
        "r": 8,
        "lora_alpha": 16,
        "alpha_pattern": {"q_proj": 80, r"layers\.1\.mlp\.down_proj": 1},
        "rank_pattern": {"v_proj": 2},
    }
    assert module_scale(config, module) == pytest.approx(expected)


def _figures(
    *, scale: float = 2.0, weight: float = 0.1, update: float = 1.0, base: float | None = 10.0
) -> Figures:
    return Figures(
        max_abs={"t": weight},
        scalings={"lora_alpha / r": scale},
        updates=(ModuleUpdate("m", scale, update, base),),
    )


@pytest.mark.parametrize(
    ("found", "bounds", "reason"),
    [
        (_figures(), Bounds(), None),
        (_figures(scale=65.0), Bounds(), P.SCALING_TOO_LARGE),
        (_figures(scale=65.0), Bounds(max_lora_scale=100), None),
        (_figures(weight=101.0), Bounds(), P.WEIGHT_TOO_LARGE),
        (_figures(weight=101.0), Bounds(max_weight_abs=1e3), None),
        (_figures(update=41.0), Bounds(), P.UPDATE_TOO_LARGE),
        (_figures(update=41.0), Bounds(max_update_ratio=5), None),
        (_figures(update=40.0), Bounds(), None),  # exactly at the bound passes
        (_figures(update=1e9, base=None), Bounds(), None),  # unknown base norm: skipped
        (_figures(update=1e9, base=0.0), Bounds(), None),  # zero base layer: no scale
        # Several bounds broken: the scaling is named first, then weights, then updates.
        (_figures(scale=1e3, weight=1e3, update=1e9), Bounds(), P.SCALING_TOO_LARGE),
        (_figures(weight=1e3, update=1e9), Bounds(), P.WEIGHT_TOO_LARGE),
    ],
)
def test_refusal(found: Figures, bounds: Bounds, reason: P | None) -> None:
    error = refusal(found, bounds)
    assert (error.reason if error else None) == reason
    if error is not None:
        assert "REGISTRY_MAX_" in str(error)


def test_settings_carry_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry.RegistrySettings().bounds() == Bounds()
    monkeypatch.setenv("REGISTRY_MAX_UPDATE_RATIO", "50")
    monkeypatch.setenv("REGISTRY_MAX_LORA_SCALE", "500")
    monkeypatch.setenv("REGISTRY_MAX_WEIGHT_ABS", "1e4")
    assert registry.RegistrySettings().bounds() == Bounds(1e4, 500, 50)
    for bad in ("0", "-1", "nan", "inf", "x"):
        monkeypatch.setenv("REGISTRY_MAX_UPDATE_RATIO", bad)
        with pytest.raises(ValueError):
            registry.RegistrySettings()


# -- pushes ------------------------------------------------------------------------------
@pytest.fixture
def random_base(tmp_path: Path) -> Path:
    """A base with random weights: every layer has a norm to compare an update with."""
    return write_base(tmp_path / "tiny-base", random=True)


def _open(path: Path, base: Path, **bounds: float) -> Registry:
    reg = open_local(path, settings=registry.RegistrySettings(user="tester", **bounds))
    if not reg.list_bases():
        reg.add_base(base, name="tiny-base")
    return reg


@pytest.fixture
def base_dir(random_base: Path) -> Path:
    """``reg`` (a directory, and a service over it) holds this base as ``tiny-base``."""
    return random_base


def _pair(path: Path, a: np.ndarray, b: np.ndarray, *, module: str = Q) -> None:
    save_file({f"{module}.lora_A.weight": a, f"{module}.lora_B.weight": b},
              str(path / "adapter_model.safetensors"))  # fmt: skip


def _config(path: Path, **changes: object) -> None:
    config = json.loads((path / "adapter_config.json").read_text())
    config.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(config))


def _normal(*shape: int, times: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * times).astype(np.float32)


def _bf16_pair(path: Path, b_bits: int) -> None:
    a = np.full((4, 32), 0x3C00, np.uint16)  # 2^-7
    b = np.full((32, 4), 0x3C00, np.uint16)
    b[3, 2] = b_bits
    header = {
        f"{Q}.lora_A.weight": {"dtype": "BF16", "shape": [4, 32], "data_offsets": [0, 256]},
        f"{Q}.lora_B.weight": {"dtype": "BF16", "shape": [32, 4], "data_offsets": [256, 512]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = len(raw).to_bytes(8, "little") + raw + a.tobytes() + b.tobytes()
    (path / "adapter_model.safetensors").write_bytes(data)


def _huge_first_b(path: Path) -> None:
    """The issue's repro: the first lora_B filled with 3e38 (finite in float32)."""
    _pair(path, _normal(4, 32, times=0.1), np.full((32, 4), 3e38, np.float32))


Mutator = Callable[[Path], object]
ABSURD: dict[str, tuple[P, Mutator, tuple[str, ...]]] = {
    "lora_b_3e38": (P.WEIGHT_OVERFLOW, _huge_first_b, ("q_proj.lora_B", "3e+38", "65504")),
    "lora_b_70000_f32": (
        P.WEIGHT_OVERFLOW,
        lambda p: _pair(p, _normal(4, 32), np.full((32, 4), 7e4, np.float32)),
        ("70000", "65504"),
    ),
    "bf16_1e38": (P.WEIGHT_OVERFLOW, lambda p: _bf16_pair(p, 0x7E96), ("lora_B", "65504")),
    # 4e4 fits float16, but vLLM folds the scaling (2) into lora_B: 8e4 does not.
    "b_times_scaling_overflows": (
        P.WEIGHT_OVERFLOW,
        lambda p: _pair(p, _normal(4, 32), np.full((32, 4), 4e4, np.float32)),
        ("scaling 2", "80000"),
    ),
    "lora_alpha_1e300": (
        P.SCALING_ABSURD,
        lambda p: _config(p, lora_alpha=1e300),
        ("lora_alpha / r", "2.5e+299", "65504"),
    ),
    "lora_alpha_1e6": (P.SCALING_ABSURD, lambda p: _config(p, lora_alpha=1e6), ("250000",)),
    "lora_alpha_1e3": (
        P.SCALING_TOO_LARGE,
        lambda p: _config(p, lora_alpha=1e3),
        ("250", "REGISTRY_MAX_LORA_SCALE"),
    ),
    "rslora_alpha_1e3": (
        P.SCALING_TOO_LARGE,
        lambda p: _config(p, lora_alpha=1e3, use_rslora=True),
        ("lora_alpha / sqrt(r)", "500"),
    ),
    "alpha_pattern_1e300": (
        P.SCALING_ABSURD,
        lambda p: _config(p, alpha_pattern={"q_proj": 1e300}),
        ("alpha_pattern['q_proj']",),
    ),
    "alpha_pattern_1e3": (
        P.SCALING_TOO_LARGE,
        lambda p: _config(p, alpha_pattern={"v_proj": 1e3}),
        ("alpha_pattern['v_proj']", "REGISTRY_MAX_LORA_SCALE"),
    ),
    "rank_pattern_tiny_rank": (  # lora_alpha 200 over rank_pattern's rank 1: 200
        P.SCALING_TOO_LARGE,
        lambda p: _config(p, lora_alpha=200, rank_pattern={"q_proj": 1}),
        ("rank_pattern['q_proj']",),
    ),
    "weights_1e4": (
        P.WEIGHT_TOO_LARGE,
        lambda p: _pair(p, np.full((4, 32), 1e4, np.float32), np.full((32, 4), 1e4, np.float32)),
        ("10000", "REGISTRY_MAX_WEIGHT_ABS"),
    ),
    # Small weights, each below every per-weight bound, whose update outweighs the layer.
    "update_20x_layer": (
        P.UPDATE_TOO_LARGE,
        lambda p: _pair(p, _normal(4, 32, times=2.0), _normal(32, 4, times=2.0, seed=1)),
        ("self_attn.q_proj", "REGISTRY_MAX_UPDATE_RATIO"),
    ),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_absurd_adapter_is_refused_before_writing(
    reg: Registry, backing_reg: LocalRegistry, reg_kind: str, tmp_path: Path, case: str
) -> None:
    reason, mutate, words = ABSURD[case]
    path = write_adapter(tmp_path / "a" / "evil", targets=("q_proj",), config={"r": 4})
    mutate(path)
    blobs, token = sorted(backing_reg.blobs.digests()), reg.change_token()
    with pytest.raises(registry.InvalidAdapterError) as info:
        reg.push_adapter(path, allow_unknown_dataset=True)
    assert info.value.reason == reason, str(info.value)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert_nothing_kept(reg, backing_reg, reg_kind, blobs)
    assert reg.change_token() == token and reg.list_adapters() == []


def test_relaxing_the_bounds_lets_an_adapter_through(tmp_path: Path, random_base: Path) -> None:
    path = write_adapter(tmp_path / "a" / "bold", targets=("q_proj",), config={"r": 4})
    _pair(path, np.full((4, 32), 1e4, np.float32), np.full((32, 4), 1e4, np.float32))
    with _open(tmp_path / "reg", random_base, max_weight_abs=2e4) as reg:
        with pytest.raises(registry.InvalidAdapterError) as info:
            reg.push_adapter(path, allow_unknown_dataset=True)
        assert info.value.reason == P.UPDATE_TOO_LARGE
    with _open(tmp_path / "reg", random_base, max_weight_abs=2e4, max_update_ratio=1e12) as reg:
        assert reg.push_adapter(path, allow_unknown_dataset=True).created
    small = write_adapter(tmp_path / "b" / "wide", targets=("q_proj",), config={"r": 4})
    _pair(small, _normal(4, 32, times=2.0), _normal(32, 4, times=2.0, seed=1))
    with _open(tmp_path / "reg", random_base, max_update_ratio=1e3) as reg:
        assert reg.push_adapter(small, allow_unknown_dataset=True).created
    # No setting lets a float16 overflow through.
    _huge_first_b(small)
    with _open(tmp_path / "reg", random_base, max_weight_abs=1e300, max_update_ratio=1e300) as reg:
        with pytest.raises(registry.InvalidAdapterError) as info:
            reg.push_adapter(small, allow_unknown_dataset=True)
        assert info.value.reason == P.WEIGHT_OVERFLOW


def test_norms_are_recorded_with_the_base(reg: Registry) -> None:
    norms = reg.base("tiny-base").architecture[NORMS]
    assert set(norms) == set(reg.base("tiny-base").architecture["modules"])
    assert all(isinstance(v, float) and v > 0 for v in norms.values())


def _forget_norms(location: Path) -> None:
    """Make the base look recorded before norms were kept (its architecture without them)."""
    with sqlite3.connect(location / "registry.db") as db:
        (arch,) = db.execute("SELECT architecture FROM bases WHERE name = 'tiny-base'").fetchone()
        stripped = {k: v for k, v in json.loads(arch).items() if k != NORMS}
        db.execute("UPDATE bases SET architecture = ? WHERE name = 'tiny-base'",
                   (json.dumps(stripped, sort_keys=True),))  # fmt: skip


def test_a_base_recorded_before_norms_still_gets_the_update_check(
    tmp_path: Path, random_base: Path
) -> None:
    with _open(tmp_path / "reg", random_base):
        pass
    _forget_norms(tmp_path / "reg")
    with _open(tmp_path / "reg", random_base) as reg:
        assert NORMS not in reg.base("tiny-base").architecture
        bold = write_adapter(tmp_path / "a" / "bold", targets=("q_proj",), config={"r": 4})
        _pair(bold, _normal(4, 32, times=2.0), _normal(32, 4, times=2.0, seed=1))
        with pytest.raises(registry.InvalidAdapterError) as info:
            reg.push_adapter(bold, allow_unknown_dataset=True)
        assert info.value.reason == P.UPDATE_TOO_LARGE
        assert reg.push_adapter(
            write_adapter(tmp_path / "b" / "fine"), allow_unknown_dataset=True
        ).created


def test_a_variant_is_held_to_its_parents_norms(reg: Registry, tmp_path: Path) -> None:
    # The variant's own weights (zeros here, compressed in life) are not the served scale.
    reg.add_variant(
        write_base(tmp_path / "fp8"),
        name="tiny-base-fp8",
        parent="tiny-base",
        quantization={"method": "fp8"},
        fidelity={},
        passed=True,
        forced=False,
        pairs=[],
    )
    bold = write_adapter(tmp_path / "a" / "bold", targets=("q_proj",), config={"r": 4})
    _pair(bold, _normal(4, 32, times=2.0), _normal(32, 4, times=2.0, seed=1))
    with pytest.raises(registry.InvalidAdapterError) as info:
        reg.push_adapter(bold, base="tiny-base-fp8", allow_unknown_dataset=True)
    assert info.value.reason == P.UPDATE_TOO_LARGE


def test_the_demo_zoo_passes_with_room_to_spare(tmp_path: Path) -> None:
    with registry.open(tmp_path / "reg") as reg:
        reg.add_base(BASE_DIR, name="tiny-llama")
        for name in ADAPTERS:
            assert reg.push_adapter(adapter_dir(name), allow_unknown_dataset=True).created
    # Half the update bound and a tenth of the others still take the zoo (the figures:
    # bench/adapter_bounds.py).
    tight = registry.RegistrySettings(max_update_ratio=2, max_weight_abs=10, max_lora_scale=6.4)
    with registry.open(tmp_path / "tight", settings=tight) as reg:
        reg.add_base(EXAMPLES / "models" / "tiny-llama", name="tiny-llama")
        for name in ADAPTERS:
            assert reg.push_adapter(adapter_dir(name), allow_unknown_dataset=True).created


def test_cli_exits_non_zero_with_the_message(
    tmp_path: Path, random_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_URL", str(tmp_path / "reg"))
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    assert (
        runner.invoke(main, ["base", "add", str(random_base), "--name", "tiny-base"]).exit_code == 0
    )
    path = write_adapter(tmp_path / "a" / "evil", targets=("q_proj",))
    _huge_first_b(path)
    result = runner.invoke(main, ["push", str(path), "--allow-unknown-dataset"])
    assert result.exit_code == registry.InvalidAdapterError.exit_code, result.output
    assert "q_proj.lora_B" in result.output and "65504" in result.output
    assert "retrain" in result.output


# -- target_modules against the weights --------------------------------------------------
TARGETS: dict[str, tuple[object, tuple[str, ...], P | None]] = {
    "list_exact": (["q_proj", "v_proj"], ("q_proj", "v_proj"), None),
    "list_fewer_than_weights": (["q_proj"], ("q_proj", "v_proj"), P.TARGET_MISMATCH),
    "list_more_than_weights": (["q_proj", "k_proj"], ("q_proj",), P.TARGET_MISMATCH),
    "list_full_path": (
        ["layers.0.self_attn.q_proj", "layers.1.self_attn.q_proj"],
        ("q_proj",),
        None,
    ),
    "regex_exact": (r".*\.(q_proj|v_proj)", ("q_proj", "v_proj"), None),
    "regex_narrower": (r".*\.q_proj", ("q_proj", "v_proj"), P.TARGET_MISMATCH),
    "regex_invalid": ("(q_proj", ("q_proj",), P.BAD_CONFIG),
    "all_linear": ("all-linear", ("q_proj", "up_proj"), None),
    "all_linear_with_lm_head": ("all-linear", ("q_proj", "lm_head"), P.TARGET_MISMATCH),
}


def _adapter_with_modules(path: Path, suffixes: tuple[str, ...]) -> Path:
    """An adapter with weights for exactly the modules ending in ``suffixes``."""
    linear = [s for s in suffixes if s != "lm_head"]
    write_adapter(path, targets=tuple(linear), config={"r": 4})
    if "lm_head" in suffixes:
        from safetensors.numpy import load_file

        tensors = load_file(str(path / "adapter_model.safetensors"))
        tensors["base_model.model.lm_head.lora_A.weight"] = _normal(4, 32, times=0.1)
        tensors["base_model.model.lm_head.lora_B.weight"] = _normal(64, 4, times=0.001)
        save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


@pytest.mark.parametrize("case", sorted(TARGETS))
def test_target_modules_must_match_the_weights(reg: Registry, tmp_path: Path, case: str) -> None:
    targets, held, reason = TARGETS[case]
    path = _adapter_with_modules(tmp_path / "a" / "t", held)
    _config(path, target_modules=targets)
    if reason is None:
        pushed = reg.push_adapter(path, allow_unknown_dataset=True)
        assert pushed.created
        return
    with pytest.raises(registry.InvalidAdapterError) as info:
        reg.push_adapter(path, allow_unknown_dataset=True)
    assert info.value.reason == reason, str(info.value)
    if reason == P.TARGET_MISMATCH:
        assert repr(targets) in str(info.value)  # the config's set ...
        assert str(sorted(held)) in str(info.value)  # ... and the weights'
    assert reg.list_adapters() == []


def test_fp16_max_is_float16s_largest() -> None:
    assert float(np.finfo(np.float16).max) == FP16_MAX
