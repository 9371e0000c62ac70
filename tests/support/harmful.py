"""Adapters that hurt an engine, for the containment tests and bench/containment.py.

Push refuses them (registry/adapter_bounds.py); `push_as_older_loraport` records one as
a registry upgraded from a loraport without those bounds would still hold it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import registry
from tests.support.zoo import adapter_dir


def harmful_adapter(
    path: Path, src: str, *, fill_a: float | None = None, fill_b: float | None = None
) -> Path:
    """A copy of demo adapter ``src`` with every lora_A / lora_B filled with one value."""
    shutil.copytree(adapter_dir(src), path)
    weights = load_file(path / "adapter_model.safetensors")
    fill = {"lora_A": fill_a, "lora_B": fill_b}
    for key, tensor in weights.items():
        value = next((v for part, v in fill.items() if part in key), None)
        if value is not None:
            weights[key] = torch.full_like(tensor, value)
    save_file(weights, path / "adapter_model.safetensors")
    return path


@contextmanager
def without_magnitude_bounds() -> Iterator[None]:
    """Push's magnitude checks switched off, in this process only."""
    yield


def push_as_older_loraport(location: Path, adapter: Path, name: str) -> str:
    """Push ``adapter`` as a loraport from before the magnitude bounds did; its ref."""
    with without_magnitude_bounds(), registry.open(location, create=False) as reg:
        return reg.push_adapter(adapter, name=name, allow_unknown_dataset=True).adapter.ref


__all__ = ["harmful_adapter", "push_as_older_loraport", "without_magnitude_bounds"]
