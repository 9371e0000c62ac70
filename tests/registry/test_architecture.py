from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry.architecture import (
    is_canonical_base_file,
    read_safetensors_header,
    summarize,
    template_digest,
)
from registry.dirscan import scan_directory


def test_header_only(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a.weight": np.zeros((3, 5), np.float16)}, str(path), metadata={"k": "v"})
    info = read_safetensors_header(path)
    assert info["a.weight"].shape == (3, 5) and info["a.weight"].dtype == "F16"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00",
        struct.pack("<Q", 10**9) + b"{}",
        struct.pack("<Q", 2) + b"[]",
        struct.pack("<Q", 2) + b"\xff\xfe",
        struct.pack("<Q", 60)
        + json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})
        .encode()
        .ljust(60),
    ],
)
def test_malformed_headers(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        read_safetensors_header(path)


def test_summary(base_dir: Path) -> None:
    files = [f for f in scan_directory(base_dir, 2**30) if is_canonical_base_file(f.relpath)]
    assert "README.md" not in {f.relpath for f in files}
    summary = summarize(files)
    assert summary["hidden_size"] == 32 and summary["num_hidden_layers"] == 2
    assert summary["modules"]["model.layers.0.self_attn.q_proj"] == [32, 32]
    assert summary["modules"]["model.layers.0.mlp.gate_proj"] == [64, 32]
    assert "model.norm" not in summary["modules"]  # 1-D weights are not LoRA targets
    assert summary["target_modules"] == sorted(
        [
            "down_proj",
            "embed_tokens",
            "gate_proj",
            "k_proj",
            "lm_head",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj",
        ]
    )


def test_template_digest() -> None:
    assert template_digest(None) is None
    assert template_digest("a") != template_digest("b")
    assert template_digest([{"name": "default", "template": "a"}]) is not None
