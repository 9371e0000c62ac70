"""Lineage is base model + dataset version + the training code's git commit."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import registry
from registry.protocol import Registry

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "training"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "train.py").write_text("print('train')\n")
    _git(root, "add", "train.py")
    _git(root, "commit", "-q", "-m", "train")
    return root


def test_adapter_inside_a_work_tree_records_its_commit(
    reg: Registry, repo: Path, make_adapter: Callable[..., Path]
) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    adapter = make_adapter("support")
    inside = repo / "out" / "support"
    shutil.copytree(adapter, inside)  # untracked output: the tree is still clean
    v1 = reg.push_adapter(inside, dataset="support-data").adapter
    assert v1.code == registry.CodeLineage(head, False)
    (repo / "train.py").write_text("print('edited')\n")
    v2 = reg.push_adapter(make_adapter(seed=1), code=repo, dataset="support-data").adapter
    assert v2.code == registry.CodeLineage(head, True)
    push_events = [e for e in reg.events("support") if e.action == "push"]
    assert [e.detail["code"] for e in push_events] == [head, head]
    assert [e.detail["code_dirty"] for e in push_events] == [False, True]


def test_code_outside_git_and_no_code(
    reg: Registry, tmp_path: Path, make_adapter: Callable[..., Path]
) -> None:
    (tmp_path / "not-git").mkdir()
    with pytest.raises(registry.InvalidAdapterError, match="not inside a git work tree"):
        reg.push_adapter(make_adapter(), code=tmp_path / "not-git", dataset="support-data")
    plain = reg.push_adapter(make_adapter(), dataset="support-data").adapter
    assert plain.code is None  # outside any work tree, nothing given: recorded as unknown
