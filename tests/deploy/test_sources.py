"""The two metrics sources on their failure paths (a real HTTP server answering what we
tell it): down, error statuses and garbage are MetricsUnavailable, never figures; and the
scrape source's arithmetic (deltas, counter resets, histogram_quantile)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from deploy.gateway_scrape import GatewayScrapeSource, quantile
from deploy.prometheus import PrometheusSource, queries
from deploy.source import ArmRef, MetricsUnavailable
from server.supervisor import free_port
from tests.deploy.loopback import Canned

ARMS = [ArmRef("support", 1, "stable"), ArmRef("support", 2, "canary")]


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.server.shutdown()
    server.server.server_close()


def vector(value: str | None) -> dict[str, object]:
    result = [] if value is None else [{"metric": {}, "value": [1.0, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (200, b"<html>hello</html>", "not PromQL"),
        (200, b"", "not PromQL"),
        (200, {"status": "error", "error": "parse error"}, "refused the query"),
        (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix"),
        (
            200,
            {"status": "success", "data": {"resultType": "vector", "result": [1, 2]}},
            "2 series",
        ),
        (200, vector("not a number"), "not PromQL"),
        (200, {"status": "success"}, "not PromQL"),
        (503, b"overloaded", "HTTP 503"),
    ],
)
def test_prometheus_garbage_is_unavailable(
    canned: Canned, status: int, body: object, match: str
) -> None:
    canned.answer(body, status)
    with pytest.raises(MetricsUnavailable, match=match):
        PrometheusSource(canned.url).figures(ARMS, 10)


def test_prometheus_down_is_unavailable() -> None:
    with pytest.raises(MetricsUnavailable, match="unreachable"):
        PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout_s=2).figures(ARMS, 10)


def test_prometheus_empty_vectors_are_zero_counts_and_unknown_latency(canned: Canned) -> None:
    canned.answer(vector(None))
    _, canary = PrometheusSource(canned.url).figures(ARMS, 10)
    assert canary is not None and canary.requests == 0 and math.isnan(canary.p95_s)
    assert math.isnan(canary.degenerate)  # no count is unknown, not 0


@pytest.mark.parametrize(
    ("degenerate", "uncounted", "expected"),
    [
        ("3", None, 3.0),
        ("0", None, 0.0),
        (None, None, math.nan),  # no gateway counts them
        ("3", "1", math.nan),  # one scraped instance has requests but no count
        ("NaN", None, math.nan),
    ],
)
def test_prometheus_degenerate_answers(
    canned: Canned, degenerate: str | None, uncounted: str | None, expected: float
) -> None:
    def answer(query: str) -> object:
        if query.startswith("count(count by (instance)"):
            return vector(uncounted)
        if "loraport_degenerate_answers_total" in query:
            return vector(degenerate)
        return vector("40")

    canned.by_query = answer
    _, canary = PrometheusSource(canned.url).figures(ARMS, 10)
    assert canary is not None and canary.requests == 40
    assert canary.degenerate == expected or (math.isnan(expected) and math.isnan(canary.degenerate))


def test_prometheus_nan_stays_nan(canned: Canned) -> None:
    canned.answer(vector("NaN"))
    _, canary = PrometheusSource(canned.url).figures(ARMS, 10)
    assert canary is not None and math.isnan(canary.requests) and not canary.finite()


def test_promql_selects_one_arm_over_the_window() -> None:
    q = queries(ArmRef("support", 2, "canary"), 2.5)
    sel = 'loraport_requests_total{adapter="support",version="2",arm="canary"}'
    assert q["requests"] == (
        f"clamp_min(sum ({sel}) - (sum ({sel} offset 2500ms) or sum ({sel}) * 0), 0)"
    )
    assert 'status=~"5.."' in q["errors"] and "histogram_quantile(0.95" in q["p95_s"]
    assert "sum by (le)" in q["p95_s"]


def _line(name: str, version: int, arm: str, extra: str, value: float) -> str:
    labels = f'adapter="support",version="{version}",arm="{arm}"{extra}'
    return f"{name}{{{labels}}} {value}"


def expose(degenerate: bool = True, **v: float) -> bytes:
    """A gateway's exposition of the series the sources read, with these values (without
    the degenerate-answer counts: a gateway older than them)."""
    req, dur = "loraport_requests_total", "loraport_request_duration_seconds"
    chat = ',endpoint="chat"'
    lines = [
        f"# TYPE {req} counter",
        _line(req, 1, "stable", chat + ',status="200"', v["s_ok"]),
        _line(req, 2, "canary", chat + ',status="200"', v["c_ok"]),
        _line(req, 2, "canary", chat + ',status="502"', v["c_bad"]),
        "# TYPE loraport_structured_output_failures_total counter",
        _line("loraport_structured_output_failures_total", 2, "canary", ',reason="x"', v["c_json"]),
        "# TYPE loraport_degenerate_answers_total counter",
        *(
            [
                _line("loraport_degenerate_answers_total", 1, "stable", "", v.get("s_deg", 0)),
                _line("loraport_degenerate_answers_total", 2, "canary", "", v.get("c_deg", 0)),
            ]
            if degenerate
            else []
        ),
        f"# TYPE {dur} histogram",
        _line(dur + "_bucket", 2, "canary", chat + ',le="0.1"', v["c_fast"]),
        _line(dur + "_bucket", 2, "canary", chat + ',le="1.0"', v["c_all"]),
        _line(dur + "_bucket", 2, "canary", chat + ',le="+Inf"', v["c_all"]),
        _line(dur + "_count", 2, "canary", chat, v["c_all"]),
        _line(dur + "_sum", 2, "canary", chat, 1.0),
    ]
    return ("\n".join(lines) + "\n").encode()


def test_scrape_answers_deltas_between_calls(canned: Canned) -> None:
    source = GatewayScrapeSource([canned.url, canned.url])  # two replicas, summed
    canned.answer(expose(s_ok=10, c_ok=5, c_bad=1, c_json=0, c_deg=1, c_fast=6, c_all=6))
    assert source.figures(ARMS, 0) == [None, None]  # the baseline
    canned.answer(expose(s_ok=60, c_ok=25, c_bad=3, c_json=4, c_deg=4, c_fast=6, c_all=28))
    stable, canary = source.figures(ARMS, 10)
    assert stable is not None and canary is not None
    assert stable.requests == 100 and math.isnan(stable.p95_s) and stable.degenerate == 0
    assert (canary.requests, canary.errors, canary.json_violations) == (44, 4, 8)
    assert canary.degenerate == 6
    # 44 new observations, all between 0.1 and 1.0 s: p95 interpolated in that bucket
    assert canary.p95_s == pytest.approx(0.1 + 0.9 * 0.95)


def test_scrape_counts_a_restarted_gateway_from_zero(canned: Canned) -> None:
    source = GatewayScrapeSource([canned.url])
    canned.answer(expose(s_ok=500, c_ok=50, c_bad=0, c_json=0, c_fast=50, c_all=50))
    source.figures(ARMS, 0)
    canned.answer(expose(s_ok=7, c_ok=3, c_bad=0, c_json=0, c_fast=3, c_all=3))
    stable, canary = source.figures(ARMS, 10)
    assert stable is not None and canary is not None
    assert (stable.requests, canary.requests) == (7, 3)


def test_scrape_degenerate_answers_uncounted_are_unknown(canned: Canned) -> None:
    """A gateway with requests but no degenerate count does not count them: unknown, even
    when the other gateway does (a sum over some replicas only would undercount)."""
    counts = dict(s_ok=10, c_ok=10, c_bad=0, c_json=0, c_fast=10, c_all=10)
    old = Canned()
    try:
        for urls, with_counts in (([canned.url], False), ([canned.url, old.url], True)):
            source = GatewayScrapeSource(urls)
            canned.answer(expose(degenerate=with_counts, **counts))
            old.answer(expose(degenerate=False, **counts))
            source.figures(ARMS, 0)
            counts = {k: v + 10 for k, v in counts.items()}
            canned.answer(expose(degenerate=with_counts, c_deg=5, **counts))
            old.answer(expose(degenerate=False, **counts))
            stable, canary = source.figures(ARMS, 10)
            assert stable is not None and canary is not None
            assert canary.requests > 0 and math.isnan(canary.degenerate), urls
            assert math.isnan(stable.degenerate) and not canary.finite()
    finally:
        old.server.shutdown()
        old.server.server_close()


def test_scrape_a_count_born_inside_the_window_counts_from_zero(canned: Canned) -> None:
    source = GatewayScrapeSource([canned.url])
    counts = dict(s_ok=0, c_ok=0, c_bad=0, c_json=0, c_fast=0, c_all=0)
    canned.answer(expose(degenerate=False, **counts))
    source.figures(ARMS, 0)
    canned.answer(expose(**{**counts, "c_ok": 9, "c_deg": 3}))
    _, canary = source.figures(ARMS, 10)
    assert canary is not None and (canary.requests, canary.degenerate) == (9, 3)


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [(200, b"this is {not the text format", "not Prometheus text"), (500, b"", "could not")],
)
def test_scrape_garbage_or_down_is_unavailable(
    canned: Canned, status: int, body: bytes, match: str
) -> None:
    canned.answer(body, status)
    with pytest.raises(MetricsUnavailable, match=match):
        GatewayScrapeSource([canned.url]).figures(ARMS, 0)


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({0.1: 0, 1.0: 0, math.inf: 0}, math.nan),
        ({0.1: 100, 1.0: 100, math.inf: 100}, 0.095),
        ({0.1: 50, 1.0: 100, math.inf: 100}, 0.1 + 0.9 * 0.9),
        ({0.1: 0, 1.0: 0, math.inf: 10}, 1.0),  # above the top finite bucket
        ({0.1: 5}, math.nan),  # no +Inf bucket: not a histogram
    ],
)
def test_quantile(buckets: dict[float, float], expected: float) -> None:
    got = quantile(0.95, buckets)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
