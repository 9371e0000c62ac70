"""The training code's git commit, for an adapter's lineage (base + dataset + code).

Recorded at push from, in order: ``--git-sha`` (taken as given, dirtiness unknown),
``--code DIR`` (must sit in a git work tree), else the adapter directory itself when it
sits in one. "Dirty" means tracked files differ from the commit (``git status
--untracked-files=no``): an adapter written into an untracked folder of the training
repository does not make it dirty; an edited training script does.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from registry.errors import AdapterProblem, InvalidAdapterError
from registry.records import CodeLineage

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_GIT_TIMEOUT_S = 10.0


def _git(directory: Path, *args: str) -> str | None:
    """stdout of ``git -C directory args`` or None when git fails or is missing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def from_work_tree(directory: Path) -> CodeLineage | None:
    """HEAD and dirtiness of the git work tree holding ``directory`` (None outside one)."""
    if not directory.is_dir():
        return None
    head = _git(directory, "rev-parse", "--verify", "--quiet", "HEAD")
    if head is None or not _SHA.fullmatch(head.strip()):
        return None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return CodeLineage(head.strip(), None if status is None else bool(status.strip()))


def code_lineage(adapter_dir: Path, code: Path | None, git_sha: str | None) -> CodeLineage | None:
    """What to record as the training code (see the module docstring for the order)."""
    if git_sha is not None:
        sha = git_sha.strip().lower()
        if not _SHA.fullmatch(sha):
            raise InvalidAdapterError(
                AdapterProblem.BAD_CODE,
                f"--git-sha {git_sha!r} is not a full commit id (40 or 64 hex digits); "
                "use `git rev-parse HEAD` in the training repository",
            )
        return CodeLineage(sha, None)
    if code is not None:
        found = from_work_tree(code)
        if found is None:
            raise InvalidAdapterError(
                AdapterProblem.BAD_CODE,
                f"--code {code} is not inside a git work tree with a commit; point it at "
                "the training code's checkout, or pass --git-sha",
            )
        return found
    return from_work_tree(adapter_dir)
