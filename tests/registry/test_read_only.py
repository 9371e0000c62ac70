"""A registry on a read-only mount: every read works, every write says why it cannot.

Rough edge: every verb, `ls` and `show` included, crashed with sqlite3.OperationalError.
The mount is real: a private mount namespace (`unshare -m`) bind-mounts the registry
read-only for one child process, so the test runs as root too (where file modes alone
would not stop a write). Without `unshare` (or its privilege) the test uses file modes
when not root, and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.local import LocalRegistry

READER = r"""
import json, sys
import registry
from click.testing import CliRunner
from registry.cli import main

location, dest = sys.argv[1], sys.argv[2]
out = {}
with registry.open(location, create=False) as reg:
    out["read_only"] = reg.read_only
    out["adapters"] = [v.ref for v in reg.list_adapters()]
    out["resolve"] = reg.resolve("support").version
    out["pull"] = sorted(p.name for p in reg.pull("support", dest).iterdir())
    out["verify_ok"] = reg.verify().ok
    for label, write in (
        ("push", lambda: reg.push_adapter(sys.argv[3], dataset="support-data")),
        ("alias", lambda: reg.set_alias("support", "canary", 1)),
        ("dataset", lambda: reg.add_dataset(sys.argv[3] + "/adapter_config.json", name="d")),
    ):
        try:
            write()
            out[label] = "written"
        except registry.RegistryError as exc:
            out[label] = [type(exc).__name__, str(exc)]
runner = CliRunner()
verbs = (["ls"], ["show", "support"], ["log"], ["verify"], ["alias", "set", "support", "x", "1"])
for verb in verbs:
    result = runner.invoke(main, [*verb, "--registry", location])
    out[" ".join(verb)] = [result.exit_code, result.output[-300:]]
print(json.dumps(out))
"""


def _mount_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --bind -o ro / / 2>/dev/null || exit 1"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _run_read_only(location: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", READER, str(location), *args]
    if _mount_works():
        quoted = " ".join(f"'{a}'" for a in command)
        shell = f"mount --bind -o ro '{location}' '{location}' && exec {quoted}"
        command = ["unshare", "-m", "sh", "-c", shell]
    elif os.geteuid() != 0:
        for path in [location, *location.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    else:
        pytest.skip("needs unshare -m (or a non-root user) to make a read-only registry")
    env = {**os.environ, "REGISTRY_URL": ""}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_reads_work_and_writes_refuse_on_a_read_only_mount(
    local_reg: LocalRegistry, reg_path: Path, make_adapter: Callable[..., Path], tmp_path: Path
) -> None:
    local_reg.push_adapter(make_adapter("support"), dataset="support-data")
    local_reg.close()  # the last writer leaves: no -wal/-shm files stay behind
    proc = _run_read_only(reg_path, str(tmp_path / "pulled"), str(make_adapter(seed=2)))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["read_only"] is True
    assert out["adapters"] == ["support@1"] and out["resolve"] == 1
    assert "adapter_model.safetensors" in out["pull"] and out["verify_ok"] is True
    for label in ("push", "alias", "dataset"):
        assert out[label][0] == "ReadOnlyRegistryError", out[label]
        assert "read-only" in out[label][1]
    for verb in ("ls", "show support", "log", "verify"):
        assert out[verb][0] == 0, out[verb]
    assert out["alias set support x 1"][0] == 18
    assert "Traceback" not in json.dumps(out)
