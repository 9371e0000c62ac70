"""docs/gateway.md lists every setting the gateway reads, under its real variable name;
a variable that names no setting is caught."""

from __future__ import annotations

import re
from pathlib import Path

from server.settings import GatewaySettings, LocalVllm, unknown_variables

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def documented() -> set[str]:
    return set(re.findall(r"`(GATEWAY_[A-Z_]+)`", DOC.read_text()))


def test_every_setting_is_documented() -> None:
    expected = {f"GATEWAY_{name.upper()}" for name in GatewaySettings.model_fields}
    expected -= {"GATEWAY_LOCAL"}
    expected |= {f"GATEWAY_LOCAL__{name.upper()}" for name in LocalVllm.model_fields}
    names = documented()
    assert expected <= names, sorted(expected - names)
    assert names <= expected, f"documented but not a setting: {sorted(names - expected)}"


def default_cells() -> dict[str, str]:
    """Each table row's variable and its default cell (tables: var | flag | default | meaning,
    or var | default | meaning)."""
    out = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) in (3, 4) and cells[0].startswith("`GATEWAY_"):
            out[cells[0].split("`")[1]] = cells[-2]
    return out


def test_documented_defaults_are_the_real_ones() -> None:
    """Where the doc shows a default as a literal, it is the code's default."""
    settings, local = GatewaySettings(), LocalVllm()
    checked = 0
    for var, cell in default_cells().items():
        if not re.fullmatch(r"`[^`]+`(: .*)?", cell):
            continue  # described in words ("none: ...", "the registry's only base model")
        shown = cell.split("`")[1]
        name = var.removeprefix("GATEWAY_").lower()
        owner: object = settings
        if name.startswith("local__"):
            owner, name = local, name.removeprefix("local__")
        value = getattr(owner, name)
        if isinstance(value, bool):
            assert shown == str(value).lower(), var
        elif isinstance(value, int | float):
            assert float(shown) == value, var
        elif isinstance(value, str | Path):
            assert shown == str(value), var
        elif isinstance(value, tuple):
            assert shown == "[]" and value == (), var
        checked += 1
    assert checked >= 20


def test_a_misspelt_variable_is_named_with_the_real_one() -> None:
    env = {
        "GATEWAY_MAX_INFLIGHT": "4",
        "GATEWAY_MAX_IN_FLIGHT": "4",
        "gateway_port": "9000",
        "GATEWAY_LOCAL__DTYPES": "float32",
        "HOME": "/root",
    }
    problems = unknown_variables(env)
    assert len(problems) == 2, problems
    assert "GATEWAY_LOCAL__DTYPES" in problems[0] and "GATEWAY_LOCAL__DTYPE?" in problems[0]
    assert "GATEWAY_MAX_INFLIGHT" in problems[1] and "GATEWAY_MAX_IN_FLIGHT?" in problems[1]
    assert (
        unknown_variables({f"GATEWAY_{n.upper()}": "" for n in GatewaySettings.model_fields}) == []
    )
