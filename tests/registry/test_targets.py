"""The live-version rule: one decision, one message, for every write that targets NAME@N."""

import pytest

import registry
from registry.targets import dead_version


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        (True, None),
        (None, "support has no version 3; see `registry ls`"),
        (False, "support@3 was removed; see `registry ls` for the live versions"),
    ],
)
def test_dead_version(live, expected):
    problem = dead_version("support", 3, live)
    if expected is None:
        assert problem is None
    else:
        assert isinstance(problem, registry.RefNotFoundError)
        assert str(problem) == expected


def test_every_target_of_a_removed_version_says_so(reg, make_adapter):
    """Resolution, alias moves, a rollout's canary and a quarantine give the same answer."""
    for seed in (1, 2):
        reg.push_adapter(make_adapter("support", seed=seed), dataset="support-data")
    reg.remove("support@2")
    expected = "support@2 was removed; see `registry ls` for the live versions"
    attempts = [
        lambda: reg.resolve("support@2"),
        lambda: reg.set_alias("support", "staging", 2),
        lambda: reg.start_rollout("support", 2, steps=[50, 100]),
        lambda: reg.quarantine("support@2", reason="bad"),
    ]
    for attempt in attempts:
        with pytest.raises(registry.RefNotFoundError) as info:
            attempt()
        assert str(info.value) == expected
