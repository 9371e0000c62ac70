"""Running :mod:`quantize.worker` in ``.venv-quantize``: one subprocess per verb.

The request and the result are JSON files in the caller's work directory. The worker's
``progress:`` lines are relayed to the caller as they come (the long steps: oneshot,
each evaluation); everything else it prints (llm-compressor's and transformers' logs)
goes to ``worker.log`` beside them, whose tail is quoted if the worker fails. The worker
dies with its parent (``PR_SET_PDEATHSIG``), so a ``kill -9`` of ``quantize`` leaves no
orphan still computing.
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantize.errors import QuantizeEnvironmentError, WorkerError

WORKER = Path(__file__).resolve().with_name("worker.py")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the worker may outlive a killed parent; its output is discarded


def run_worker(
    python: Path,
    verb: str,
    request: dict[str, Any],
    work: Path,
    on_progress: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``worker.py VERB`` on ``request`` with ``python``; return its JSON result."""
    if not python.is_file():
        raise QuantizeEnvironmentError(
            f"the quantize environment's python is missing ({python}); run `make setup` "
            "(it builds .venv-quantize) or set QUANTIZE_PYTHON"
        )
    request_path = work / f"{verb}-request.json"
    result_path = work / f"{verb}-result.json"
    log_path = work / "worker.log"
    cmd = [str(python), str(WORKER), verb, str(request_path), str(result_path)]
    try:
        request_path.write_text(json.dumps(request), encoding="utf-8")
        with log_path.open("a", encoding="utf-8") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith("progress: "):
                    on_progress(line.removeprefix("progress: ").rstrip())
                log.write(line)
            rc = proc.wait()
    except OSError as exc:  # the work directory itself cannot be written (a full disk)
        raise WorkerError(
            f"the {verb} step could not write {work}: {exc}{_hint(str(exc))}"
        ) from None
    if rc != 0 or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        text = "\n".join(tail)
        raise WorkerError(f"the {verb} worker failed (exit {rc}):\n{text}{_hint(text)}")
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    return result


def _hint(text: str) -> str:
    """What to do about a failure whose text says the work disk is full."""
    if "No space left on device" not in text and "Disk quota exceeded" not in text:
        return ""
    return (
        "\nThe work directory's disk is full (nothing was registered): free space under "
        f"{tempfile.gettempdir()} or point TMPDIR at a larger disk, and run it again"
    )
