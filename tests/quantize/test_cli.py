"""Every `quantize` command has help with an Example:, and the docs name every command;
the error classes' exit codes are distinct and documented."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from quantize import errors
from quantize.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "quantize.md"
EVAL = str(Path(__file__).resolve().parents[2] / "examples" / "data" / "eval.jsonl")


@pytest.mark.parametrize("path", [[], ["run"], ["eval"], ["merge"]])
def test_help_has_an_example(path: list[str]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output, path


def test_docs_name_every_command() -> None:
    text = DOCS.read_text()
    assert isinstance(main, click.Group)
    for name in main.commands:
        assert f"quantize {name}" in text, name


def test_exit_codes_are_distinct_and_documented() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type)]
    base = errors.QuantizeError
    ours = [c for c in classes if issubclass(c, base) and c is not base]
    codes = [c.exit_code for c in ours]
    assert len(set(codes)) == len(codes)
    table = errors.__doc__ or ""
    for cls in ours:
        assert cls.__name__ in table and str(cls.exit_code) in table, cls


@pytest.fixture
def small_registry(tmp_path: Path) -> Path:
    from registry.location import open_local
    from tests.support.synthetic import write_base

    with open_local(tmp_path / "reg") as reg:
        reg.add_base(write_base(tmp_path / "tiny"), name="tiny")
    return tmp_path / "reg"


@pytest.mark.parametrize("value", ["./calibration.jsonl", "data/calibration.jsonl", "c.jsonl"])
def test_a_calibration_path_says_to_register_it(
    small_registry: Path, tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "calibration.jsonl").write_text('{"text": "x"}\n')
    args = ["run", "tiny", "--method", "awq", "--calibration", value, "--eval-set", EVAL]
    result = CliRunner().invoke(main, [*args, "--registry", str(small_registry)])
    assert result.exit_code == errors.CalibrationError.exit_code, result.output
    assert f"registry dataset add {value} --name NAME" in result.output
    assert "invalid name" not in result.output


@pytest.mark.parametrize("value", ["extract", "extract=json", "=label", "extract=LABEL"])
def test_task_takes_adapter_equals_kind(small_registry: Path, value: str) -> None:
    args = ["run", "tiny", "--method", "fp8", "--task", value]
    result = CliRunner().invoke(main, [*args, "--registry", str(small_registry)])
    assert result.exit_code == 2, result.output
    assert "fields, label" in result.output


@pytest.mark.parametrize("command", [["run", "tiny", "--method", "fp8"], ["merge", "x@1"]])
@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no eval set: pass --eval-set FILE"),
        ("", "has no records"),
        ("not json\n", "cannot read the eval set"),
        ('{"reference": {}}\n', "one without messages"),
    ],
)
def test_an_eval_set_is_required_and_read_before_any_work(
    small_registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    content: str | None,
    words: str,
) -> None:
    monkeypatch.delenv("QUANTIZE_EVAL_FILE", raising=False)
    extra: list[str] = []
    if content is not None:
        (tmp_path / "eval.jsonl").write_text(content)
        extra = ["--eval-set", str(tmp_path / "eval.jsonl")]
    result = CliRunner().invoke(main, [*command, *extra, "--registry", str(small_registry)])
    assert result.exit_code == errors.EvalSetError.exit_code, result.output
    assert words in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["eval"], "give VARIANT_REF (and ADAPTER_REFS), or --pending"),
        (["eval", "--pending", "tiny-fp8"], "name no VARIANT_REF or ADAPTER_REFS"),
        (["eval", "--pending", "--force"], "one pair's gate at a time"),
        (["eval", "tiny-fp8", "--variant", "tiny-fp8"], "--variant goes with --pending"),
    ],
)
def test_eval_pending_usage(small_registry: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(main, [*args, "--registry", str(small_registry)])
    assert result.exit_code == 2, result.output
    assert words in result.output


def test_eval_pending_with_nothing_waiting_says_so_and_needs_no_eval_set(
    small_registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUANTIZE_EVAL_FILE", raising=False)
    result = CliRunner().invoke(main, ["eval", "--pending", "--registry", str(small_registry)])
    assert result.exit_code == 0, result.output
    assert result.output == "nothing to measure: every adapter x variant pair has a result\n"
    on_base = ["eval", "--pending", "--variant", "tiny", "--registry", str(small_registry)]
    refused = CliRunner().invoke(main, on_base)
    assert refused.exit_code == errors.UnsupportedArchitectureError.exit_code, refused.output
    assert "tiny is not a variant" in refused.output
