"""`deploy` on bad input: each a clear message and exit status, nothing written; and the
read and hand-driven verbs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import registry
from deploy.cli import main
from registry.local import LocalRegistry
from server.supervisor import free_port
from tests.deploy.loopback import Chat
from tests.support.synthetic import write_adapter, write_base


def run(reg: LocalRegistry, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--registry", str(reg.root), *args])
    return result.exit_code, result.output


FAST = ["--interval", "50ms", "--lease-ttl", "1s"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--to", "9"], 3, "has no version 9"),
        (["--to", "1"], 31, "already production"),
        (["--to", "2", "--steps", "0,50"], 31, "outside 0-100"),
        (["--to", "2", "--steps", "10,150"], 31, "outside 0-100"),
        (["--to", "2", "--steps", "50,25"], 31, "must increase"),
        (["--to", "2", "--steps", "ten"], 2, "comma-separated"),
        (["--to", "2", "--interval", "soon"], 2, "not a duration"),
        (["--to", "2", "--max-error-rate", "2"], 2, "--max-error-rate"),
        (["--to", "2", "--min-requests", "0"], 2, "--min-requests"),
        (["--to", "2", "--max-degenerate-rate", "1.5"], 2, "--max-degenerate-rate"),
        (["--to", "2", "--max-degenerate-rate", "-0.1"], 2, "--max-degenerate-rate"),
        (["--to", "2", "--max-degenerate-rate", "nan"], 2, "--max-degenerate-rate"),
        (["--to", "2", "--max-degenerate-rate", "often"], 2, "--max-degenerate-rate"),
    ],
)
def test_bad_rollouts_are_refused(
    support_registry: LocalRegistry, args: list[str], code: int, message: str
) -> None:
    status, output = run(support_registry, "canary", "support", *args, "--gateway", "http://x")
    assert status == code, output
    assert message in output
    assert support_registry.rollouts("support") == []


def test_figures_must_come_from_somewhere(support_registry: LocalRegistry) -> None:
    status, output = run(support_registry, "canary", "support", "--to", "2")
    assert status == 2 and "--prometheus URL or --gateway URL" in output
    status, output = run(
        support_registry, "canary", "support", "--to", "2", "--prometheus", "http://p",
        "--gateway", "http://g",
    )  # fmt: skip
    assert status == 2 and "not both" in output


def test_a_canary_on_another_base_is_refused(
    support_registry: LocalRegistry, tmp_path: Path
) -> None:
    support_registry.add_base(write_base(tmp_path / "other", random=True), name="other-base")
    support_registry.push_adapter(
        write_adapter(tmp_path / "o" / "support", seed=9), base="other-base",
        allow_unknown_dataset=True,
    )  # fmt: skip
    status, output = run(support_registry, "canary", "support", "--to", "4", "--gateway", "x")
    assert status == registry.BaseMismatchError.exit_code == 35 and "other-base" in output


def test_a_second_rollout_while_one_is_active(support_registry: LocalRegistry) -> None:
    support_registry.start_rollout("support", 2, steps=[10])
    status, output = run(support_registry, "canary", "support", "--to", "3", "--gateway", "x")
    assert status == 30 and "already has an active rollout" in output


def test_a_dead_prometheus_holds_and_never_promotes(support_registry: LocalRegistry) -> None:
    """The controller runs against a Prometheus that is down: every analysis holds, and
    a person's abort ends it (the CLI exits 1: not promoted)."""
    support_registry.start_rollout(
        "support", 2, steps=[50, 100], plan={"interval_s": 0.05, "min_requests": 1}
    )
    support_registry.claim_rollout("support", 1, "someone-else", ttl_s=0.01)
    url = f"http://127.0.0.1:{free_port()}"

    def abort_soon() -> None:
        threading.Event().wait(1.0)
        support_registry.end_rollout("support", None, "aborted", reason="test over")

    threading.Thread(target=abort_soon).start()
    status, output = run(support_registry, "canary", "support", "--to", "2", "--prometheus", url,
                         *FAST)  # fmt: skip
    assert status == 1, output
    assert "resuming rollout #1" in output and "aborted: test over" in output
    [done] = support_registry.rollouts("support")
    assert done.analyses and {a.verdict for a in done.analyses} == {"hold"}
    assert all("unreachable" in a.reason for a in done.analyses)
    assert support_registry.resolve("support").version == 1


def test_status_history_promote_abort(support_registry: LocalRegistry) -> None:
    status, output = run(support_registry, "status", "support")
    assert status == 0 and "no rollout yet" in output
    support_registry.start_rollout("support", 2, steps=[10, 50], who="ann")
    status, output = run(support_registry, "status", "support", "--json")
    found = json.loads(output)
    assert found["production"] == 1 and found["rollout"]["weight"] == 10
    status, output = run(support_registry, "promote", "support")
    assert status == 0 and "production -> support@2" in output
    assert support_registry.resolve("support").version == 2
    status, output = run(support_registry, "abort", "support")
    assert status == 3 and "no active rollout" in output
    support_registry.start_rollout("support", 3, steps=[10])
    status, output = run(support_registry, "abort", "support", "--reason", "wrong data")
    assert status == 0 and "production stays support@2" in output
    status, output = run(support_registry, "history", "support")
    assert "promoted by hand" in output and "wrong data" in output
    rows = json.loads(run(support_registry, "history", "support", "--json")[1])
    assert [r["state"] for r in rows] == ["promoted", "aborted"]


def test_every_command_has_help_with_an_example() -> None:
    for name, command in main.commands.items():
        assert command.help and "Example:" in command.help, name


def _eval_set(tmp_path: Path, *expected: str) -> Path:
    path = tmp_path / "canary-set.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}], "expected": e}
            for i, e in enumerate(expected)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("make", "answers", "code", "message", "asked"),
    [
        # the file: a usage error (2), not 1 ("rolled back"); nobody is asked
        (lambda p: p / "missing.jsonl", {}, 2, "cannot read the eval set", set()),
        (lambda p: p, {}, 2, "cannot read the eval set", set()),  # a directory
        (lambda p: _eval_set(p, "", " "), {}, 40, "have no word", set()),
        # unusable: stable scores 0, so no canary could fail (the canary is not asked)
        (lambda p: _eval_set(p, "dear tomas", "dear ann"), {"support@1": "zzz"}, 40,
         "stable version scores 0", {"support@1"}),
        # a regression: its own code, both asked
        (lambda p: _eval_set(p, "dear tomas", "dear ann"),
         {"support@1": "dear tomas ann", "support@2": "hello"}, 41, "eval gate failed",
         {"support@1", "support@2"}),
    ],
)  # fmt: skip
def test_the_eval_gate_refuses_before_anything_is_written(
    support_registry: LocalRegistry, tmp_path: Path, make: Callable[[Path], Path],
    answers: dict[str, str], code: int, message: str, asked: set[str],
) -> None:  # fmt: skip
    chat = Chat()
    chat.answers = answers
    try:
        status, output = run(support_registry, "canary", "support", "--to", "2", "--eval",
                             str(make(tmp_path)), "--gateway", chat.url, *FAST)  # fmt: skip
    finally:
        chat.server.shutdown()
        chat.server.server_close()
    assert status == code, output
    assert message in output
    assert {a["model"] for a in chat.asked} == asked
    assert support_registry.rollouts("support") == []


def test_an_eval_gateway_that_is_down_is_its_own_exit(
    support_registry: LocalRegistry, tmp_path: Path
) -> None:
    status, output = run(support_registry, "canary", "support", "--to", "2", "--eval",
                         str(_eval_set(tmp_path, "dear tomas")), "--gateway",
                         f"http://127.0.0.1:{free_port()}", *FAST)  # fmt: skip
    assert status == 42 and "could not be asked" in output
    assert support_registry.rollouts("support") == []


def test_the_degenerate_limit_is_stored_in_the_plan(support_registry: LocalRegistry) -> None:
    """The flag reaches the stored plan (a resumed controller judges by it); a person's
    abort ends the rollout, which held on the dead Prometheus meanwhile."""

    def abort_soon() -> None:
        threading.Event().wait(1.0)
        support_registry.end_rollout("support", None, "aborted", reason="test over")

    threading.Thread(target=abort_soon).start()
    status, output = run(support_registry, "canary", "support", "--to", "2",
                         "--max-degenerate-rate", "0.2", "--prometheus",
                         f"http://127.0.0.1:{free_port()}", *FAST)  # fmt: skip
    assert status == 1 and "aborted: test over" in output, output
    [done] = support_registry.rollouts("support")
    assert done.plan["max_degenerate_rate"] == 0.2


def test_a_canary_already_quarantined_is_refused_at_start(
    support_registry: LocalRegistry,
) -> None:
    """A rollout onto a quarantined version is refused before it starts (one rule with
    `registry alias set NAME production N`, registry.quarantine.refuse_quarantined); a
    canary quarantined once its rollout runs is rolled back at the next poll."""
    support_registry.quarantine("support@2", reason="corrupted the engine", who="gw-1")
    status, output = run(support_registry, "canary", "support", "--to", "2", "--interval", "1h",
                         "--prometheus", f"http://127.0.0.1:{free_port()}")  # fmt: skip
    assert status == registry.QuarantinedError.exit_code == 36, output
    assert "support@2 is quarantined (corrupted the engine" in output
    assert "registry quarantine rm support@2" in output
    assert support_registry.rollouts("support") == []
    assert support_registry.resolve("support").version == 1


def test_detach_records_the_rollout_without_a_source_and_returns(
    support_registry: LocalRegistry,
) -> None:
    status, output = run(support_registry, "canary", "support", "--to", "2", "--detach",
                         "--steps", "10,100", "--interval", "2m")  # fmt: skip
    assert status == 0, output
    assert "deploy run" in output
    active = support_registry.rollout("support")
    assert active is not None and active.holder is None and active.steps == (10.0, 100.0)
    assert active.plan["interval_s"] == 120 and not active.analyses


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--prometheus URL or --gateway URL"),
        (["--prometheus", "http://p", "--gateway", "http://g"], "not both"),
        (["--prometheus", "http://p", "--scan", "soon"], "not a duration"),
        (["--prometheus", "http://p", "--lease-ttl", "0s"], "--lease-ttl"),
        (["--prometheus", "http://p", "--metrics-port", "0"], "--metrics-port"),
    ],
)
def test_deploy_run_refuses_bad_options_before_starting(
    support_registry: LocalRegistry, args: list[str], message: str
) -> None:
    status, output = run(support_registry, "run", *args)
    assert status == 2 and message in output, output


def test_deploy_run_on_a_missing_registry_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--registry", str(tmp_path / "none"), "run",
                                       "--prometheus", "http://p"])  # fmt: skip
    assert result.exit_code not in (0, 2) and "registry" in result.output.lower(), result.output
    assert not (tmp_path / "none").exists()
