"""Running out of disk midway through `quantize run`, on a real small tmpfs
(tests/support/disk.py): when the work directory fills (the variant cannot be saved) and
when the registry's disk fills (its blobs cannot be stored at registration). Each is a
clear error with its own exit code, nothing registered, nothing of ours left on the disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.quantize.conftest import QUANTIZE, REGISTRY, quantize_env
from tests.support.disk import on_small_disk, unshare_prefix
from tests.support.zoo import fill_registry

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk() -> None:
    if unshare_prefix() is None:
        pytest.skip("needs `unshare -m` (or -rm) to mount a small tmpfs")


def registry_names(registry: Path, out: Path) -> str:
    """Shell lines that record every name in ``registry`` and its verify status."""
    return f"""
        {REGISTRY} ls --json --registry {registry} >{out}/ls.json
        {REGISTRY} verify --registry {registry} >{out}/verify.txt 2>&1; echo $? >{out}/verify.rc
    """


def names(out: Path) -> set[str]:
    return {r["name"] for r in json.loads((out / "ls.json").read_text())}


def test_a_full_work_directory_fails_the_worker_and_registers_nothing(
    small_disk: None, tmp_path: Path
) -> None:
    registry, small, out = tmp_path / "registry", tmp_path / "small", tmp_path / "out"
    fill_registry(registry)
    out.mkdir()
    # 6 MB: the parent (3.9 MB) and the four adapters (1.4 MB) are pulled, the FP8 variant
    # (1.4 MB) does not fit when the worker saves it.
    script = f"""
        TMPDIR={small} {QUANTIZE} run tiny-llama --method fp8 --name full-fp8 \
            --registry {registry} 2>{out}/stderr; echo $? >{out}/rc
        ls -A {small} | grep loraport >{out}/left.txt
        {registry_names(registry, out)}
    """
    proc = on_small_disk(small, "6m", script, quantize_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "23", stderr
    assert "No space left on device" in stderr
    assert "The work directory's disk is full (nothing was registered)" in stderr
    assert "TMPDIR" in stderr
    assert "full-fp8" not in names(out)
    assert (out / "left.txt").read_text() == ""  # the work directory went with the error
    assert (out / "verify.rc").read_text().strip() == "0", (out / "verify.txt").read_text()


def test_a_full_registry_disk_at_registration_registers_nothing(
    small_disk: None, tmp_path: Path
) -> None:
    seed, small, out = tmp_path / "seed", tmp_path / "small", tmp_path / "out"
    fill_registry(seed)
    out.mkdir()
    used_kb = sum(p.stat().st_size for p in seed.rglob("*") if p.is_file()) // 1024
    registry = small / "registry"
    # Room for the registry as it is plus 512 KB: the FP8 variant's 1.4 MB does not fit.
    script = f"""
        cp -a {seed} {registry} || exit 99
        {QUANTIZE} run tiny-llama --method fp8 --name full-fp8 \
            --registry {registry} 2>{out}/stderr; echo $? >{out}/rc
        {registry_names(registry, out)}
        ls -A {registry}/blobs/tmp >{out}/tmp.txt 2>/dev/null
    """
    proc = on_small_disk(small, f"{used_kb + 512}k", script, quantize_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "33", stderr
    assert "is full" in stderr and "nothing was recorded" in stderr
    assert "quantize: register full-fp8" in stderr  # it got as far as registering
    assert "full-fp8" not in names(out)
    assert (out / "tmp.txt").read_text() == ""
    assert (out / "verify.rc").read_text().strip() == "0", (out / "verify.txt").read_text()
    shutil.rmtree(seed)
