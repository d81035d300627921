"""``hoptrace.stage.critical.time`` as the monitor counts it from Jaeger: every finished job once, its path's seconds per stage and cause.

Jaeger is a local HTTP server answering with recorded JSON (``test_jaeger.FakeJaeger``); the real
Jaeger and Prometheus are in ``test_observability``, which checks the dashboard panel on them.
"""

from __future__ import annotations

import logging

import pytest

from hoptrace.critical_times import SETTLE_S, CriticalTimes
from hoptrace.examples.orders import pipeline as orders
from hoptrace.testing import CapturedTelemetry
from hoptrace.view.critical_path import critical_path
from hoptrace.view.jaeger import JaegerQuery
from tests.test_jaeger import START_US, FakeJaeger, _answer, _expected_spans, _orders_trace, _second_trace


def _totals(captured: CapturedTelemetry) -> dict[tuple[str, str, str], float]:
    """(pipeline, stage, cause) -> seconds, as the counter reports them now."""
    found: dict[tuple[str, str, str], float] = {}
    for point in captured.points("hoptrace.stage.critical.time"):
        assert (point.unit, point.kind, point.monotonic) == ("s", "sum", True) and point.value is not None
        key = (point.attributes["hoptrace.pipeline"], point.attributes["hoptrace.stage"], point.attributes["hoptrace.cause"])
        found[tuple(map(str, key))] = point.value  # type: ignore[index]
    return found


def test_each_finished_job_of_the_pipeline_is_counted_once(jaeger: FakeJaeger, captured: CapturedTelemetry) -> None:
    other = _second_trace("1" * 32, START_US, "refunds-worker")  # no span of the orders pipeline
    jaeger.route("/api/services", _answer(["orders-worker"]))
    jaeger.route("/api/traces", _answer([_orders_trace(), other]))
    times = CriticalTimes(JaegerQuery(jaeger.url), orders, captured.meter_provider)

    assert times.read_once() and times.read_once()  # the second read finds the same job: not counted again
    expected: dict[tuple[str, str, str], float] = {}
    for segment in critical_path(_expected_spans()):
        key = ("orders", segment.stage, segment.cause)
        expected[key] = expected.get(key, 0.0) + segment.duration_s
    assert _totals(captured) == pytest.approx(expected)
    assert {stage for _, stage, _ in expected} <= {"validate", "?"}
    searches = [query for path, query in jaeger.requests if path == "/api/traces"]
    assert [(query["service"], query["limit"], query["lookback"]) for query in searches] == [(["orders-worker"], ["200"], ["10m"])] * 2


def test_a_job_still_settling_waits_for_a_later_read(jaeger: FakeJaeger, captured: CapturedTelemetry) -> None:
    spans = _expected_spans()
    ended = max(span.end_ns for span in spans)
    times = CriticalTimes(JaegerQuery(jaeger.url), orders, captured.meter_provider)
    assert times.count({spans[0].trace_id: spans}, now_ns=ended + round(SETTLE_S * 1e9) - 1) == 0
    assert times.count({spans[0].trace_id: spans}, now_ns=ended + round(SETTLE_S * 1e9)) == 1
    assert times.count({spans[0].trace_id: spans}, now_ns=ended + round(SETTLE_S * 1e9) * 2) == 0


def test_a_jaeger_that_does_not_answer_is_said_once_and_read_again_later(
    jaeger: FakeJaeger, caplog: pytest.LogCaptureFixture, captured: CapturedTelemetry
) -> None:
    times = CriticalTimes(JaegerQuery(jaeger.url), orders, captured.meter_provider)
    with caplog.at_level(logging.INFO, logger="hoptrace.critical_times"):
        assert not times.read_once() and not times.read_once()  # no route: 404 for /api/services
        jaeger.route("/api/services", _answer(["orders-worker"]))
        jaeger.route("/api/traces", _answer([_orders_trace()]))
        assert times.read_once()
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2 and "they are read again when it answers" in said[0] and said[1] == "critical path times: Jaeger answers again"
    assert _totals(captured) != {}
