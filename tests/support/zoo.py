"""The committed demo zoo, and a registry that holds it as `make demo` registers it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BASE_DIR = EXAMPLES / "models" / "tiny-llama"
BASE_NAME = "tiny-llama"
ADAPTERS = ("support-v1", "support-v2", "extract", "triage")


def adapter_dir(name: str) -> Path:
    return EXAMPLES / "adapters" / name


def fill_registry(location: Path, copies: int = 0) -> list[str]:
    """A new registry at `location` with the base, the four adapters (each with its
    dataset, each version 1 and `production`), and `copies` renamed copies of the adapters
    (for many-adapter mixes; no dataset). Returns the adapter names."""
    names = list(ADAPTERS)
    with registry.open(location) as reg:
        reg.add_base(BASE_DIR, name=BASE_NAME, license="apache-2.0")
        for name in ADAPTERS:
            reg.add_dataset(EXAMPLES / "data" / f"{name}.jsonl", name=f"{name}-data")
            reg.push_adapter(adapter_dir(name), name=name, base=BASE_NAME, dataset=f"{name}-data")
        tmp = Path(tempfile.mkdtemp())
        for i in range(copies):
            src = ADAPTERS[i % len(ADAPTERS)]
            dst = tmp / f"{src}-copy{i}"
            shutil.copytree(adapter_dir(src), dst)
            reg.push_adapter(dst, base=BASE_NAME, allow_unknown_dataset=True)
            names.append(dst.name)
        shutil.rmtree(tmp)
    return names
