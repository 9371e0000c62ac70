"""A small, real disk for out-of-space tests: a size-limited tmpfs mounted in a private
mount namespace (`unshare -m`, or `unshare -rm` where not root) for one shell script, so
nothing outside that script sees it and it vanishes with it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path


@cache
def unshare_prefix() -> tuple[str, ...] | None:
    """The `unshare` invocation that may mount a tmpfs here, or None where none can."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (("unshare", "-m"), ("unshare", "-rm")):
        probe = subprocess.run(
            [*prefix, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return prefix
    return None


def on_small_disk(
    mountpoint: Path, size: str, script: str, env: dict[str, str], timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run shell ``script`` with a ``size`` tmpfs (e.g. "6m") at ``mountpoint``."""
    prefix = unshare_prefix()
    assert prefix is not None, "check unshare_prefix() first and skip where it is None"
    mountpoint.mkdir(parents=True, exist_ok=True)
    mount = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mountpoint))}"
    return subprocess.run(
        [*prefix, "sh", "-c", f"{mount} && {script}"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
