"""The worker's progress relayed: counted steps drive one bar on a terminal; every other
line (and every line when there is no terminal) is printed as it is."""

import pytest

from quantize.progress import Relay, counted


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (
            "eval support-v1@1 on the candidate [4/10]",
            ("eval support-v1@1 on the candidate", 4, 10),
        ),
        ("load model", None),
        ("oneshot fp8 (FP8_DYNAMIC), 0 calibration texts", None),
        ("weird [3/0]", None),
        ("no count [x/2]", None),
    ],
)
def test_counted(line, parsed):
    assert counted(line) == parsed


def test_without_a_terminal_every_line_is_printed():
    seen: list[str] = []
    relay = Relay(seen.append, bar=False)
    for line in (
        "load model",
        "eval base on the reference [1/2]",
        "eval base on the candidate [2/2]",
    ):
        relay(line)
    relay.close()
    assert seen == [
        "load model",
        "eval base on the reference [1/2]",
        "eval base on the candidate [2/2]",
    ]


def test_on_a_terminal_counted_steps_drive_one_bar_to_its_end(capsys):
    seen: list[str] = []
    relay = Relay(seen.append, bar=True)
    relay("load model")
    for i in range(1, 5):
        relay(f"eval job on the side [{i}/4]")
    relay("register tiny-llama-fp8")  # closes the bar, printed as a line
    relay.close()
    assert seen == ["load model", "register tiny-llama-fp8"]
    err = capsys.readouterr().err
    assert "4/4" in err and "eval job on the side" in err
