"""bench/scaleout.py's pure parts (the Zipf mix, the cold-load share, the order of the
configurations), table-tested; and its `--help`, which must work without starting anything.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from types import ModuleType

import pytest

from tests.support.bench import BENCH, bench_module


@pytest.fixture(scope="module")
def scaleout() -> ModuleType:
    return bench_module("scaleout")


@pytest.mark.parametrize(
    ("n", "s", "first", "ratio_1_2"),
    [
        (1, 1.1, 1.0, None),
        (4, 0.0, 0.25, 1.0),  # s = 0: uniform
        (2, 1.0, 2 / 3, 2.0),
        (16, 1.1, 0.330, 2**1.1),
    ],
)
def test_zipf_weights(
    scaleout: ModuleType, n: int, s: float, first: float, ratio_1_2: float | None
) -> None:
    w = scaleout.zipf_weights(n, s)
    assert len(w) == n and math.isclose(sum(w), 1.0)
    assert math.isclose(w[0], first, rel_tol=1e-2)
    assert w == sorted(w, reverse=True)
    if ratio_1_2 is not None:
        assert math.isclose(w[0] / w[1], ratio_1_2)


def test_zipf_sequence_is_seeded_and_skewed(scaleout: ModuleType) -> None:
    names = [f"a{i}" for i in range(16)]
    seq = scaleout.zipf_sequence(names, 4000, 1.1, seed=7)
    assert seq == scaleout.zipf_sequence(names, 4000, 1.1, seed=7)
    assert seq != scaleout.zipf_sequence(names, 4000, 1.1, seed=8)
    counts = Counter(seq)
    # rank 1 about 33%, the top four about 65%, every name drawn at least once
    assert 0.30 < counts["a0"] / 4000 < 0.36
    assert 0.62 < sum(counts[f"a{i}"] for i in range(4)) / 4000 < 0.68
    assert set(counts) == set(names)


@pytest.mark.parametrize(
    ("waits", "answered", "share"),
    [(0, 10, 0.0), (3, 12, 0.25), (12, 12, 1.0), (0, 0, math.nan)],
)
def test_cold_share(scaleout: ModuleType, waits: float, answered: int, share: float) -> None:
    got = scaleout.cold_share(waits, answered)
    assert (math.isnan(got) and math.isnan(share)) or got == share


@pytest.mark.parametrize(
    ("rates", "stalled"),
    [([], 0), ([10.0, 10.0, 10.0], 0), ([10.0, 9.0, 4.0], 1), ([10.0, 11.0, 4.9, 12.0], 1)],
)
def test_stalled_rounds(scaleout: ModuleType, rates: list[float], stalled: int) -> None:
    assert scaleout.stalled(rates) == stalled


def test_each_round_rotates_the_order_of_the_configurations(scaleout: ModuleType) -> None:
    configs = ["1a", "1l", "2a", "2l"]
    firsts = [scaleout.rotated(configs, r)[0] for r in range(4)]
    assert firsts == configs
    assert scaleout.rotated(configs, 5) == ["1l", "2a", "2l", "1a"]


def test_percentile_by_rank(scaleout: ModuleType) -> None:
    xs = [float(i) for i in range(1, 101)]
    assert scaleout.percentile(xs, 0.5) == 51.0
    assert scaleout.percentile(xs, 0.99) == 100.0
    assert math.isnan(scaleout.percentile([], 0.5))


def test_help_starts_nothing() -> None:
    r = subprocess.run(
        [sys.executable, str(BENCH / "scaleout.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "--quick" in r.stdout and "--json" in r.stdout


@pytest.mark.parametrize(
    ("text", "configs"),
    [
        ("1:affinity", [(1, "affinity")]),
        ("2:least-loaded, 1:affinity", [(2, "least-loaded"), (1, "affinity")]),
        ("3:affinity", None),
        ("1:random", None),
        ("affinity", None),
    ],
)
def test_parse_configs(
    scaleout: ModuleType, text: str, configs: list[tuple[int, str]] | None
) -> None:
    if configs is None:
        with pytest.raises(ValueError):
            scaleout.parse_configs(text)
    else:
        assert scaleout.parse_configs(text) == configs
    assert len(scaleout.parse_configs(",".join(scaleout.DEFAULT_CONFIGS))) == 4
