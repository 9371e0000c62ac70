"""The two metrics sources on their failure paths (a real HTTP server answering what we
tell it): down, error statuses and garbage are MetricsUnavailable, never figures; and the
scrape source's arithmetic (deltas, counter resets, histogram_quantile)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deploy.gateway_scrape import GatewayScrapeSource, quantile
from deploy.prometheus import PrometheusSource, queries
from deploy.source import ArmRef, MetricsUnavailable
from server.supervisor import free_port

ARMS = [ArmRef("support", 1, "stable"), ArmRef("support", 2, "canary")]


class Canned:
    """A loopback HTTP server whose answer (status, body) the test sets."""

    def __init__(self) -> None:
        self.status, self.body = 200, b""
        self.paths: list[str] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                canned.paths.append(self.path)
                self.send_response(canned.status)
                self.end_headers()
                self.wfile.write(canned.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, body: object, status: int = 200) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()


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


def expose(**v: float) -> bytes:
    """A gateway's exposition of the series the sources read, with these values."""
    req, dur = "loraport_requests_total", "loraport_request_duration_seconds"
    chat = ',endpoint="chat"'
    lines = [
        f"# TYPE {req} counter",
        _line(req, 1, "stable", chat + ',status="200"', v["s_ok"]),
        _line(req, 2, "canary", chat + ',status="200"', v["c_ok"]),
        _line(req, 2, "canary", chat + ',status="502"', v["c_bad"]),
        "# TYPE loraport_structured_output_failures_total counter",
        _line("loraport_structured_output_failures_total", 2, "canary", ',reason="x"', v["c_json"]),
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
    canned.answer(expose(s_ok=10, c_ok=5, c_bad=1, c_json=0, c_fast=6, c_all=6))
    assert source.figures(ARMS, 0) == [None, None]  # the baseline
    canned.answer(expose(s_ok=60, c_ok=25, c_bad=3, c_json=4, c_fast=6, c_all=28))
    stable, canary = source.figures(ARMS, 10)
    assert stable is not None and canary is not None
    assert stable.requests == 100 and math.isnan(stable.p95_s)
    assert (canary.requests, canary.errors, canary.json_violations) == (44, 4, 8)
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
