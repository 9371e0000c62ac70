"""The controller on a real `registry serve`: killed -9 under a running rollout and
started again on the same port, the controller waits it out and finishes the rollout;
the lease and the step's timing are the server's, not this process's."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import registry
from deploy.backoff import Backoff
from deploy.controller import Controller
from deploy.plan import Plan
from registry.local import LocalRegistry
from server.supervisor import free_port
from tests.deploy.test_controller import GOOD, Scripted
from tests.support.registry_service import registry_service

PLAN = Plan.checked(interval_s=0.3, min_requests=10).model_dump()
PATIENT = Backoff(first_s=0.05, factor=2, cap_s=0.5, deadline_s=60.0)


def test_the_registry_killed_under_a_rollout_is_waited_out(
    support_registry: LocalRegistry, tmp_path: Path
) -> None:
    location = Path(support_registry.location)
    rollout = support_registry.start_rollout("support", 2, steps=[10, 50, 100], plan=PLAN)
    support_registry.close()
    port = free_port()
    said: list[str] = []
    outcome: dict[str, object] = {}
    with registry_service(location, tmp_path / "serve-1.log", port=port) as first:
        remote = registry.open(first.url, settings=registry.RegistrySettings(timeout_s=2))

        def run() -> None:
            try:
                ctl = Controller(remote, Scripted([(GOOD, GOOD)]), "support",
                                 lease_ttl_s=5.0, backoff=PATIENT, say=said.append)  # fmt: skip
                outcome["final"] = ctl.run(rollout.id)
            except Exception as exc:  # the test below says what went wrong
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not any(a.step >= 0 for a in (remote.rollout("support") or rollout).analyses):
            assert time.monotonic() < deadline, said
            time.sleep(0.05)
        os.kill(first.popen.pid, signal.SIGKILL)  # mid-rollout, no goodbye
        first.popen.wait()
    time.sleep(1.0)  # the controller meets a dead registry for a while
    with registry_service(location, tmp_path / "serve-2.log", port=port):
        thread.join(60)
        assert not thread.is_alive(), said
    remote.close()
    assert "error" not in outcome, outcome
    final = outcome["final"]
    assert isinstance(final, registry.Rollout) and final.state == "promoted", said
    assert any("registry unavailable" in line for line in said), said
    with registry.open(location, create=False) as reg:
        assert reg.resolve("support").version == 2
        assert reg.verify().ok
        steps = [(a.step, a.verdict) for a in reg.rollouts("support")[-1].analyses]
    assert steps == [(0, "advance"), (1, "advance"), (2, "promote")], steps
