"""The registry's health as the gateway sees it: one object owns the transitions; stale
seconds, back-off and /ready's detail are pure functions of it (times passed in)."""

from __future__ import annotations

import pytest

from server.registry_health import RETRY_MAX_S, RegistryHealth


def run(events: list[tuple[float, str | None]]) -> RegistryHealth:
    """Apply (time, None = answered | reason = failed) in order."""
    h = RegistryHealth()
    for now, reason in events:
        if reason is None:
            h.answered(now)
        else:
            h.failed(now, reason)
    return h


@pytest.mark.parametrize(
    ("events", "now", "up", "stale", "error"),
    [
        ([], 5.0, False, 0.0, None),  # nothing asked yet: down, nothing to be stale about
        ([(1.0, None)], 9.0, True, 0.0, None),
        ([(1.0, None), (3.0, "registry_unavailable")], 10.0, False, 9.0, "registry_unavailable"),
        # stale since the last answer, however many failures follow
        (
            [(1.0, None), (3.0, "timeout"), (6.0, "registry_unavailable")],
            10.0,
            False,
            9.0,
            "registry_unavailable",
        ),
        # never answered (a gateway started with the registry down): since the first failure
        (
            [(2.0, "registry_unavailable"), (4.0, "registry_unavailable")],
            10.0,
            False,
            8.0,
            "registry_unavailable",
        ),
        # back up: 0 again; the last error is kept for the record
        ([(1.0, None), (3.0, "timeout"), (8.0, None)], 10.0, True, 0.0, "timeout"),
        # down again later: stale from the newer answer
        (
            [(1.0, None), (3.0, "timeout"), (8.0, None), (9.0, "timeout")],
            10.0,
            False,
            2.0,
            "timeout",
        ),
    ],
)
def test_transitions(
    events: list[tuple[float, str | None]], now: float, up: bool, stale: float, error: str | None
) -> None:
    h = run(events)
    assert h.up is up
    assert h.stale_s(now) == pytest.approx(stale)
    assert h.detail(now) == {
        "state": "up" if up else "down",
        "stale_s": pytest.approx(stale),
        "last_error": error,
    }


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(0, 0.0), (1, 0.2), (2, 0.4), (3, 0.8), (4, RETRY_MAX_S), (50, RETRY_MAX_S)],
)
def test_retry_backs_off_to_about_a_second(failures: int, wait: float) -> None:
    h = run([(float(i), "registry_unavailable") for i in range(failures)])
    assert h.retry_in_s() == pytest.approx(wait)
    h.answered(100.0)
    assert h.retry_in_s() == 0.0
