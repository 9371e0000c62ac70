"""A push killed with SIGKILL at any step leaves no visible version and a clean verify."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import registry
from registry.local import LocalRegistry
from registry.push import PUSH_STEPS

# The kill is the test's own: the library only reports steps to a hook it is given.
PUSHER = """
import os, signal, sys
from registry.location import open_local

def die_at(step):
    if step == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

reg = open_local(sys.argv[1], create=False, on_step=die_at)
reg.push_adapter(sys.argv[2], dataset="support-data", alias="production")
"""


@pytest.mark.parametrize("step", PUSH_STEPS)
def test_killed_push_leaves_nothing(
    local_reg: LocalRegistry, reg_path: Path, make_adapter: Callable[..., Path], step: str
) -> None:
    path = make_adapter("support")
    token = local_reg.change_token()
    env = {**os.environ, "REGISTRY_URL": ""}
    proc = subprocess.run(
        [sys.executable, "-c", PUSHER, str(reg_path), str(path), step],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with registry.open(reg_path) as after:
        assert after.list_adapters() == []
        assert after.change_token() == token
        assert after.aliases("support") == {}
        report = after.verify()
        assert report.ok, report.errors
        if step != "validated":
            assert report.orphans  # harmless leftovers, collected by gc
        after.verify(gc=True, gc_grace_s=0)
        assert after.verify().orphans == ()
        result = after.push_adapter(path, dataset="support-data")
        assert result.created and result.adapter.version == 1


def test_nothing_in_the_environment_can_make_the_library_kill_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review finding: a test-only setting that SIGKILLs was settable from the environment."""
    monkeypatch.setenv("REGISTRY_CRASH_AFTER_STEP", "validated")
    settings = registry.RegistrySettings()
    assert not any("crash" in name for name in type(settings).model_fields)
