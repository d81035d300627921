"""hoptrace's in-process histograms against the SDK's own: same points, exemplars, temporalities, one scope, every reader.

The SDK histogram is the reference: the same values are recorded into an SDK histogram (with
hoptrace's seconds buckets, read by an ``InMemoryMetricReader``) and into a ``LocalHistogram``
that ``metric_producer`` attached to another provider; what that provider's readers collect
must be equal. Views that select a hoptrace histogram make it an SDK one. End-to-end export
over OTLP is covered by ``test_orders_metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, ExemplarFilter, MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from hoptrace.pipeline.instruments import SECONDS_BUCKETS, Instruments
from hoptrace.pipeline.telemetry.histograms import LocalHistogram, LocalHistograms
from hoptrace.pipeline.telemetry.metric_producer import SCOPE, local_histograms

RESOURCE = Resource({"service.name": "histogram-test"})
STAGE = {"hoptrace.pipeline": "orders", "hoptrace.stage": "charge", "messaging.system": "celery", "messaging.destination.name": "payments"}
FAILED = {**STAGE, "error.type": "OrderRejected"}
# On, just under and just over bucket boundaries, zero, and beyond the last boundary.
VALUES = (0.0, 0.001, 0.0010001, 0.0025, 0.004, 0.3, 1.0, 2.5, 59.9, 3600.0, 3600.5, 7200.0)


class CapturingExporter(MetricExporter):
    """Keeps every ``MetricsData`` it is asked to export."""

    def __init__(self, temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> None:
        super().__init__(preferred_temporality={HistogramInstrument: temporality})
        self.exported: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def metrics_of(data: MetricsData) -> dict[str, tuple[Any, Metric]]:
    """Every metric in DATA by name, with the scope it came under."""
    return {
        metric.name: (scope_metrics.scope, metric)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }


def points_by_attributes(metric: Metric) -> dict[frozenset[tuple[str, Any]], HistogramDataPoint]:
    return {frozenset(point.attributes.items()): point for point in metric.data.data_points}


def comparable(point: HistogramDataPoint) -> tuple[Any, ...]:
    return (point.count, point.sum, tuple(point.bucket_counts), tuple(point.explicit_bounds), point.min, point.max)


@pytest.fixture(autouse=True)
def no_exemplars_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local histograms read their exemplar filter from the environment, as the SDK does."""
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")


def exporting(temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> tuple[MeterProvider, CapturingExporter, LocalHistograms]:
    """A meter provider whose periodic reader exports to a capturing exporter, and the local histograms attached to it."""
    captured = CapturingExporter(temporality)
    provider = MeterProvider([PeriodicExportingMetricReader(captured, export_interval_millis=3_600_000)], resource=RESOURCE)
    provider.get_meter("hoptrace").create_counter("messaging.client.consumed.messages", "{message}").add(1, STAGE)
    histograms = local_histograms(provider, SECONDS_BUCKETS)
    assert histograms is not None
    return provider, captured, histograms


def record_all(record: Any, values: Sequence[float]) -> None:
    for value in values:
        record(value, STAGE)
    record(0.02, FAILED)


def test_points_equal_the_sdk_histograms_points() -> None:
    reference = InMemoryMetricReader()
    views = [View(instrument_type=HistogramInstrument, aggregation=ExplicitBucketHistogramAggregation(SECONDS_BUCKETS))]
    sdk = MeterProvider([reference], views=views).get_meter("hoptrace").create_histogram("hoptrace.queue.wait", "s", "Queue time.")
    provider, captured, histograms = exporting()
    local = histograms.create("hoptrace.queue.wait", "s", "Queue time.")
    record_all(sdk.record, VALUES)
    record_all(local.record, VALUES)
    provider.force_flush()
    expected_data = reference.get_metrics_data()
    assert expected_data is not None
    _, expected = metrics_of(expected_data)["hoptrace.queue.wait"]
    scope, exported = metrics_of(captured.exported[-1])["hoptrace.queue.wait"]
    assert scope == SCOPE
    assert (exported.unit, exported.description) == ("s", "Queue time.")
    assert exported.data.aggregation_temporality == AggregationTemporality.CUMULATIVE
    want, got = points_by_attributes(expected), points_by_attributes(exported)
    assert want.keys() == got.keys() and len(got) == 2
    for attributes, point in want.items():
        assert comparable(got[attributes]) == comparable(point)
    assert got[frozenset(STAGE.items())].bucket_counts[0] == 2  # 0 and exactly 1 ms are in the first bucket, as the SDK counts them
    assert got[frozenset(STAGE.items())].bucket_counts[-1] == 2  # beyond one hour
    provider.shutdown()


def test_cumulative_points_keep_growing_and_share_the_hoptrace_scope_with_the_counters() -> None:
    provider, captured, histograms = exporting()
    local = histograms.create("messaging.process.duration", "s", "Handler time.")
    local.record(0.1, STAGE)
    provider.force_flush()
    local.record(0.2, STAGE)
    provider.force_flush()
    first, second = (metrics_of(data)["messaging.process.duration"][1].data.data_points[0] for data in captured.exported[-2:])
    assert (first.count, second.count) == (1, 2)
    assert second.sum == pytest.approx(0.3) and second.start_time_unix_nano == first.start_time_unix_nano
    scopes = [scope.scope for resource in captured.exported[-1].resource_metrics for scope in resource.scope_metrics]
    assert scopes == [SCOPE]
    assert set(metrics_of(captured.exported[-1])) == {"messaging.process.duration", "messaging.client.consumed.messages"}
    provider.shutdown()


def test_delta_points_hold_only_the_interval_and_leave_out_empty_intervals() -> None:
    provider, captured, histograms = exporting(AggregationTemporality.DELTA)
    local = histograms.create("hoptrace.job.latency", "s", "Job latency.")
    local.record(0.1, STAGE)
    local.record(0.1, FAILED)
    provider.force_flush()
    local.record(0.2, STAGE)
    local.record(5.0, STAGE)
    provider.force_flush()
    provider.force_flush()
    first, second = (points_by_attributes(metrics_of(data)["hoptrace.job.latency"][1]) for data in captured.exported[-3:-1])
    assert "hoptrace.job.latency" not in metrics_of(captured.exported[-1])  # nothing recorded in the third interval
    assert metrics_of(captured.exported[-2])["hoptrace.job.latency"][1].data.aggregation_temporality == AggregationTemporality.DELTA
    stage = frozenset(STAGE.items())
    assert (first[stage].count, first[stage].sum) == (1, 0.1)
    assert (second[stage].count, second[stage].sum) == (2, pytest.approx(5.2)) and set(second) == {stage}
    assert sum(second[stage].bucket_counts) == 2 and second[stage].start_time_unix_nano >= first[stage].time_unix_nano
    assert (second[stage].min, second[stage].max) == (None, None)
    provider.shutdown()


def test_exemplars_name_the_sampled_span_they_were_recorded_in_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based")
    provider, captured, histograms = exporting()
    local = histograms.create("messaging.process.duration", "s", "Handler time.")
    sampled = TracerProvider().get_tracer("test")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with sampled.start_as_current_span("process payments") as span:
        local.record(0.3, STAGE)
    with unsampled.start_as_current_span("process payments"):
        local.record(0.004, STAGE)
    local.record(7.0, STAGE)  # no span at all
    provider.force_flush()
    provider.force_flush()
    first, second = (metrics_of(data)["messaging.process.duration"][1].data.data_points[0] for data in captured.exported[-2:])
    assert first.count == 3
    [exemplar] = first.exemplars
    assert exemplar.value == 0.3
    assert (exemplar.trace_id, exemplar.span_id) == (span.get_span_context().trace_id, span.get_span_context().span_id)
    assert exemplar.trace_id != trace.INVALID_TRACE_ID
    assert second.exemplars == []  # handed over with the collection that took it
    provider.shutdown()


class AboveOneSecond(ExemplarFilter):
    """A filter of the user's own: an exemplar for every measurement over one second."""

    def should_sample(self, value: float, time_unix_nano: int, attributes: Any, context: Context) -> bool:
        return value > 1.0


@pytest.mark.parametrize(
    "exemplar_filter", [TraceBasedExemplarFilter(), AlwaysOnExemplarFilter(), AlwaysOffExemplarFilter(), AboveOneSecond()], ids=type
)
def test_a_measurement_gets_an_exemplar_exactly_when_the_filter_says_so(exemplar_filter: ExemplarFilter) -> None:
    sampled = TracerProvider().get_tracer("test").start_span("process payments")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test").start_span("process payments")
    contexts = {
        "sampled span": trace.set_span_in_context(sampled, Context()),
        "unsampled span": trace.set_span_in_context(unsampled, Context()),
        "invalid span": trace.set_span_in_context(trace.INVALID_SPAN, Context()),
        "no span": Context(),
        "current (sampled span)": None,
    }
    token = otel_context.attach(trace.set_span_in_context(sampled, Context()))
    try:
        for name, context in contexts.items():
            for value in (0.5, 2.0):
                histogram = LocalHistogram("messaging.process.duration", "s", "Handler time.", SECONDS_BUCKETS, exemplar_filter)
                histogram.record(value, STAGE, context)
                [point] = histogram.collect()
                wanted = exemplar_filter.should_sample(value, 0, STAGE, context if context is not None else otel_context.get_current())
                assert len(point.exemplars) == (1 if wanted else 0), (name, value)
                span = trace.get_current_span(context).get_span_context()
                ids = (span.span_id, span.trace_id) if span.is_valid else (None, None)
                assert [(each.span_id, each.trace_id) for each in point.exemplars.values()] == ([ids] if wanted else []), (name, value)
    finally:
        otel_context.detach(token)


def test_every_reader_of_the_provider_gets_the_same_points_once_attached() -> None:
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider([first, second], resource=RESOURCE)
    instruments = Instruments(provider)
    assert local_histograms(provider, SECONDS_BUCKETS) is local_histograms(provider, SECONDS_BUCKETS)  # attached once

    for value in VALUES:
        instruments.process_duration.record(value, STAGE)

    collected = [first.get_metrics_data(), second.get_metrics_data()]
    points = [points_by_attributes(metrics_of(data)["messaging.process.duration"][1]) for data in collected if data is not None]
    assert len(points) == 2 and points[0].keys() == points[1].keys() == {frozenset(STAGE.items())}
    assert comparable(points[0][frozenset(STAGE.items())]) == comparable(points[1][frozenset(STAGE.items())])
    assert points[0][frozenset(STAGE.items())].count == len(VALUES)
    provider.shutdown()


def test_views_that_select_a_hoptrace_histogram_apply_in_full() -> None:
    reader = InMemoryMetricReader()
    views = [
        View(instrument_name="messaging.process.duration", name="handler.time", aggregation=ExplicitBucketHistogramAggregation((0.5, 5))),
        View(instrument_name="hoptrace.job.latency", aggregation=DropAggregation()),
    ]
    provider = MeterProvider([reader], resource=RESOURCE, views=views)
    instruments = Instruments(provider)

    for histogram in (instruments.process_duration, instruments.job_latency, instruments.queue_wait):
        histogram.record(1.0, STAGE)

    data = reader.get_metrics_data()
    assert data is not None
    exported = metrics_of(data)
    assert sorted(exported) == ["handler.time", "hoptrace.queue.wait"]  # renamed, dropped, and the local one untouched
    [renamed] = exported["handler.time"][1].data.data_points
    assert (tuple(renamed.explicit_bounds), tuple(renamed.bucket_counts)) == ((0.5, 5), (0, 1, 0))
    [local] = exported["hoptrace.queue.wait"][1].data.data_points
    assert tuple(local.explicit_bounds) == SECONDS_BUCKETS
    provider.shutdown()
