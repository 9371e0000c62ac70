"""Degenerate-output detection of the readiness probe (pure function)."""

import pytest

from server.probe import degenerate


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty output"),
        ("   \n", "empty output"),
        ("!!!!!!!!!!", "one short piece repeated"),
        ("boubouboubouboubou", "one short piece repeated"),
        ("the the the the the", "one word repeated"),
        ("Thank you for contacting us.", None),
        ("ok", None),
    ],
)
def test_degenerate(text, problem):
    assert degenerate(text) == problem
