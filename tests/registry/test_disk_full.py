"""The registry's disk fills up mid-write: a clear error with its own exit code, nothing
recorded, no temp file left, and the registry still verifies. The disk is a real small
tmpfs (tests/support/disk.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.disk import on_small_disk, unshare_prefix
from tests.support.zoo import EXAMPLES

REGISTRY = str(Path(sys.executable).with_name("registry"))


def test_a_full_disk_records_nothing_and_says_what_to_do(tmp_path: Path) -> None:
    if unshare_prefix() is None:
        pytest.skip("needs `unshare -m` (or -rm) to mount a small tmpfs")
    small, out = tmp_path / "small", tmp_path / "out"
    out.mkdir()
    script = f"""
        R={small}/registry
        {REGISTRY} init --registry $R >/dev/null || exit 99
        {REGISTRY} base add {EXAMPLES}/models/tiny-llama --name tiny-llama --registry $R \
            2>{out}/stderr; echo $? >{out}/rc
        {REGISTRY} ls --json --registry $R >{out}/ls.json
        ls -A $R/blobs/tmp >{out}/tmp.txt 2>/dev/null
        {REGISTRY} verify --registry $R >{out}/verify.txt 2>&1; echo $? >{out}/verify.rc
    """
    proc = on_small_disk(small, "2m", script, {"REGISTRY_URL": ""})
    assert proc.returncode == 0, proc.stderr
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "33", stderr
    assert "storage at" in stderr and "is full" in stderr and "nothing was recorded" in stderr
    assert "registry verify --gc" in stderr and "Traceback" not in stderr
    assert json.loads((out / "ls.json").read_text()) == []
    assert (out / "tmp.txt").read_text() == ""  # the half-written blob is gone
    assert (out / "verify.rc").read_text().strip() == "0", (out / "verify.txt").read_text()


def test_a_full_disk_under_the_database_records_nothing(tmp_path: Path) -> None:
    """Blobs fit, then the disk is filled to the last byte: SQLite cannot start its
    write-ahead log, so a metadata-only write (an alias move) is the same typed error
    (it was "cannot be read as a registry database", exit 17), and reads still work."""
    if unshare_prefix() is None:
        pytest.skip("needs `unshare -m` (or -rm) to mount a small tmpfs")
    small, out = tmp_path / "small", tmp_path / "out"
    out.mkdir()
    adapter = EXAMPLES / "adapters" / "support-v1"
    script = f"""
        R={small}/registry
        {REGISTRY} init --registry $R >/dev/null || exit 99
        {REGISTRY} base add {EXAMPLES}/models/tiny-llama --name tiny-llama --registry $R \
            >/dev/null || exit 98
        {REGISTRY} push {adapter} --allow-unknown-dataset --registry $R >/dev/null || exit 97
        dd if=/dev/zero of={small}/filler bs=64k 2>/dev/null
        {REGISTRY} alias set support-v1 canary 1 --registry $R 2>{out}/stderr; echo $? >{out}/rc
        {REGISTRY} show support-v1 --json --registry $R >{out}/show.json  # reads still work
        rm {small}/filler
        {REGISTRY} verify --registry $R >{out}/verify.txt 2>&1; echo $? >{out}/verify.rc
    """
    proc = on_small_disk(small, "8m", script, {"REGISTRY_URL": ""})
    assert proc.returncode == 0, proc.stderr
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "33", stderr
    assert "is full" in stderr and "nothing was recorded" in stderr
    assert "Traceback" not in stderr
    shown = json.loads((out / "show.json").read_text())
    assert "canary" not in shown["aliases"], shown
    assert (out / "verify.rc").read_text().strip() == "0", (out / "verify.txt").read_text()
