"""The eval gate: the canary set's format, token F1, the verdict (table-driven), asking
a gateway over HTTP (a loopback server answering what the test sets), and that the
module runs in the product's environment (no httpx there)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.errors import (
    DeployError,
    EvalGatewayError,
    EvalRegressionError,
    EvalSetError,
    EvalSetUnusableError,
    error_classes,
)
from deploy.evaluation import GateResult, ask, f1, load, score
from registry.errors import error_classes as registry_error_classes
from server.supervisor import free_port
from tests.deploy.loopback import Chat

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def chat() -> Iterator[Chat]:
    server = Chat()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.parametrize(
    ("answer", "expected", "score"),
    [
        ("Dear Tomas, thank you.", "dear tomas thank you", 1.0),
        ("", "", 1.0),
        ("", "something", 0.0),
        ("nothing alike", "something else", 0.0),
        ("a b c d", "a b", 2 * 0.5 * 1.0 / 1.5),
        ("a a", "a", 2 * 0.5 * 1.0 / 1.5),  # repeated words count once per occurrence
    ],
)
def test_f1(answer: str, expected: str, score: float) -> None:
    assert f1(answer, expected) == pytest.approx(score)


def write(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_load_both_shapes(tmp_path: Path) -> None:
    chat = [*USER, {"role": "assistant", "content": "yo"}]
    path = write(tmp_path, {"messages": chat}, "", {"messages": USER, "expected": "hello"})
    examples = load(path)
    assert [(e.messages, e.expected) for e in examples] == [(USER, "yo"), (USER, "hello")]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (["not json"], ":1 is not an eval example"),
        ([{"messages": USER}], "no expected answer"),
        ([{"expected": "x"}], "messages"),
        ([{"messages": ["hi"], "expected": "x"}], "messages must be objects"),
        ([{"messages": USER, "expected": 7}], "no expected answer"),
        (["", ""], "holds 0 examples"),
        (["[" * 100_000], ":1 is not an eval example"),  # nesting past the parser's depth
        ([{"messages": USER, "expected": "x"}] * 1001, "holds 1001 examples"),
    ],
)
def test_bad_sets_are_a_usage_error(tmp_path: Path, rows: list[object], match: str) -> None:
    with pytest.raises(EvalSetError, match=match):
        load(write(tmp_path, *rows))


def test_missing_or_unreadable_set(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="cannot read"):
        load(tmp_path / "nope.jsonl")
    with pytest.raises(EvalSetError, match="cannot read"):
        load(tmp_path)  # a directory
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EvalSetError, match="cannot read"):
        load(binary)


def test_a_huge_set_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.truncate(1 << 40)  # 1 TiB, sparse
    with pytest.raises(EvalSetError, match="larger than 16 MiB"):
        load(path)


@pytest.mark.parametrize(
    ("expected", "match"),
    [
        (["", "", ""], "3 of 3 expected answers have no word"),
        (["a real answer", "", "another"], r"1 of 3 .*\(line 2\)"),
        (["...", "  ", "?!"], "3 of 3"),  # punctuation is not a word
    ],
)
def test_wordless_expected_answers_make_the_set_unusable(
    tmp_path: Path, expected: list[str], match: str
) -> None:
    path = write(tmp_path, *({"messages": USER, "expected": e} for e in expected))
    with pytest.raises(EvalSetUnusableError, match=match) as refused:
        load(path)
    assert "answers nothing would pass" in str(refused.value)


@pytest.mark.parametrize(
    ("stable", "canary", "outcome", "error", "reason"),
    [
        (0.80, 0.80, "passed", None, "eval gate passed"),
        (0.80, 0.761, "passed", None, "-4.9%"),
        (0.80, 0.90, "passed", None, "+12.5%"),
        (0.80, 0.759, "regressed", EvalRegressionError, "eval gate failed"),
        (0.80, 0.0, "regressed", EvalRegressionError, "-100.0%"),
        # a set that cannot fail, or a score that is not a number: never a pass
        (0.0, 0.0, "unusable", EvalSetUnusableError, "stable version scores 0"),
        (0.0, 0.5, "unusable", EvalSetUnusableError, "stable version scores 0"),
        (math.nan, 0.5, "unusable", EvalSetUnusableError, "not a number"),
        (0.5, math.nan, "unusable", EvalSetUnusableError, "canary's score is not a number"),
        (math.inf, 0.5, "unusable", EvalSetUnusableError, "not a number"),
    ],
)
def test_the_verdict(
    stable: float, canary: float, outcome: str, error: type[DeployError] | None, reason: str
) -> None:
    result = GateResult(stable, canary, 0.05)
    assert result.outcome == outcome and result.passed is (outcome == "passed")
    assert reason in result.reason()
    if error is None:
        result.check()
    else:
        with pytest.raises(error, match=reason.replace("+", r"\+")):
            result.check()


def test_score_asks_each_example_greedy_on_the_pinned_ref(chat: Chat, tmp_path: Path) -> None:
    chat.answers = {"support@1": "Dear Tomas, thank you", "support@2": None}
    examples = load(write(tmp_path, {"messages": USER, "expected": "dear tomas"}))
    assert score(chat.url, "support@1", examples) == pytest.approx(2 * 0.5 / 1.5)
    assert score(chat.url, "support@2", examples) == 0.0  # content null: an empty answer
    assert [(a["model"], a["temperature"]) for a in chat.asked] == [
        ("support@1", 0), ("support@2", 0)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "raw", "match"),
    [
        (404, b'{"error": {"code": "ref_not_found"}}', "HTTP 404: .*ref_not_found"),
        (503, b"", "HTTP 503"),
        (200, b"<html>hi</html>", "not a chat completion"),
        (200, b'{"choices": []}', "not a chat completion"),
        (200, b'{"choices": [{"message": {"content": 7}}]}', "content is int"),
    ],
)
def test_a_gateway_that_cannot_answer_is_its_own_error(
    chat: Chat, status: int, raw: bytes, match: str
) -> None:
    chat.raw = (status, raw)
    with pytest.raises(EvalGatewayError, match=match):
        ask(chat.url, "support@1", USER, max_tokens=4, timeout_s=5)


def test_a_gateway_that_is_down_is_its_own_error() -> None:
    with pytest.raises(EvalGatewayError, match="could not be asked"):
        ask(f"http://127.0.0.1:{free_port()}", "support@1", USER, max_tokens=4, timeout_s=5)


def test_the_error_table_is_complete_and_apart_from_the_registrys() -> None:
    import deploy.errors as errors

    classes = {
        c for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, DeployError) and c is not DeployError
    }  # fmt: skip
    assert set(error_classes()) == classes
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes), "two classes share an exit code"
    assert 0 not in codes and 1 not in codes  # promoted; rolled back or aborted
    assert not set(codes) & {c.exit_code for c in registry_error_classes()}
    for cls in classes:
        assert "exit_code" in vars(cls)
        assert f"``{cls.__name__}``" in (errors.__doc__ or "")


def test_the_module_runs_without_httpx() -> None:
    """The eval gate and the CLI import without httpx (loaded only to open an http://
    registry)."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import deploy.evaluation, deploy.cli\n"
        "assert 'httpx' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
