"""Test helpers for code that hoptrace instruments: capture spans and metric points as plain records.

::

    from hoptrace.testing import capture_telemetry

    with capture_telemetry() as telemetry:
        processor.process(delivery)          # anything using the global providers, or telemetry.tracer_provider
    [span] = telemetry.spans
    assert span.parent_span_id == publish.span_id
    assert telemetry.points("messaging.process.duration")[0].count == 1

For the duration, an in-memory span exporter and metric reader sit behind fresh SDK providers,
which are also made the global ones (the OpenTelemetry API allows that once per process, so
the previous globals are put back by hand afterwards, as OpenTelemetry's own test utilities
do). Instruments and tracers fetched through the globals before the block keep what they had.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry import trace as trace_api
from opentelemetry.metrics import _internal as metrics_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, Histogram, HistogramDataPoint, InMemoryMetricReader, Metric, NumberDataPoint, Sum
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from hoptrace.pipeline.instruments import set_aside_before_global


@dataclass(frozen=True)
class CapturedSpan:
    """A finished span: ids as lower-case hex, kind and status as names."""

    name: str
    kind: str
    """``INTERNAL``, ``PRODUCER``, ``CONSUMER``, ``CLIENT`` or ``SERVER``."""
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    status: str
    """``UNSET``, ``OK`` or ``ERROR``."""
    status_message: str
    """The status description ("" when none)."""
    events: tuple[tuple[str, dict[str, Any]], ...]
    """``(name, attributes)`` of its events (``exception`` for a recorded error, with ``exception.type``)."""
    links: tuple[tuple[str, str], ...]
    """``(trace_id, span_id)`` of each linked span."""
    scope_name: str
    """The name of the instrumentation scope (the tracer) that made it."""


@dataclass(frozen=True)
class CapturedPoint:
    """One metric point as the reader collected it (cumulative)."""

    name: str
    unit: str
    attributes: dict[str, Any]
    value: float | None
    """A counter's or gauge's value; None for a histogram."""
    count: int | None = None
    """A histogram's count; None for the others."""
    total: float | None = None
    """A histogram's sum."""
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    kind: Literal["sum", "gauge", "histogram"] = field(kw_only=True)
    """The metric's kind, named as in OTLP: counters are sums, histograms (of explicit buckets) histograms."""
    monotonic: bool | None = field(kw_only=True)
    """Whether a sum only grows (a counter); None for the others."""


class CapturedTelemetry:
    """What ``capture_telemetry`` yields: the providers to inject, and what they recorded so far."""

    def __init__(self, resource: Resource) -> None:
        """Fresh tracer and meter providers with RESOURCE, recording into memory."""
        self._spans = InMemorySpanExporter()
        self._reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self._spans))
        self.meter_provider = MeterProvider([self._reader], resource=resource)

    @property
    def spans(self) -> list[CapturedSpan]:
        """Every span ended so far, in the order they ended."""
        return [_span(span) for span in self._spans.get_finished_spans()]

    def points(self, name: str | None = None) -> list[CapturedPoint]:
        """The metric points collected now, of the metric NAME (of every metric when None)."""
        data = self._reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if name is None or metric.name == name:
                        found += [_point(metric, point) for point in metric.data.data_points]
        return found

    def clear(self) -> None:
        """Forget the spans ended so far (metric points are cumulative and stay)."""
        self._spans.clear()

    def shutdown(self) -> None:
        """Shut both providers down."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@contextmanager
def capture_telemetry(resource: Resource | None = None, *, set_global: bool = True) -> Iterator[CapturedTelemetry]:
    """Record spans and metrics in memory for the duration; with SET_GLOBAL, through the global providers too."""
    captured = CapturedTelemetry(resource or Resource.create({"service.name": "hoptrace-test"}))
    try:
        if set_global:
            with _as_global(captured.tracer_provider, captured.meter_provider):
                yield captured
        else:
            yield captured
    finally:
        captured.shutdown()


@contextmanager
def _as_global(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    """Make the providers the global ones for the duration, then put back what was there (private API state)."""
    saved = (
        trace_api._TRACER_PROVIDER,  # noqa: SLF001
        trace_api._TRACER_PROVIDER_SET_ONCE._done,  # noqa: SLF001
        metrics_api._METER_PROVIDER,  # noqa: SLF001
        metrics_api._METER_PROVIDER_SET_ONCE._done,  # noqa: SLF001
    )
    trace_api._TRACER_PROVIDER_SET_ONCE._done = False  # noqa: SLF001
    trace_api.set_tracer_provider(tracer_provider)
    # Set directly, not with set_meter_provider: that would also hand the API's proxy instruments
    # (made before any provider was set) to this provider, where they would run on from block to block.
    metrics_api._METER_PROVIDER, metrics_api._METER_PROVIDER_SET_ONCE._done = meter_provider, True  # noqa: SLF001
    try:
        with set_aside_before_global():
            yield
    finally:
        trace_api._TRACER_PROVIDER, trace_api._TRACER_PROVIDER_SET_ONCE._done = saved[:2]  # noqa: SLF001
        metrics_api._METER_PROVIDER, metrics_api._METER_PROVIDER_SET_ONCE._done = saved[2:]  # noqa: SLF001


def _span(span: ReadableSpan) -> CapturedSpan:
    context = span.get_span_context()
    return CapturedSpan(
        name=span.name,
        kind=span.kind.name,
        trace_id=format_trace_id(context.trace_id),
        span_id=format_span_id(context.span_id),
        parent_span_id=format_span_id(span.parent.span_id) if span.parent is not None else None,
        attributes=dict(span.attributes or {}),
        status=span.status.status_code.name,
        status_message=span.status.description or "",
        events=tuple((event.name, dict(event.attributes or {})) for event in span.events),
        links=tuple((format_trace_id(link.context.trace_id), format_span_id(link.context.span_id)) for link in span.links),
        scope_name=span.instrumentation_scope.name if span.instrumentation_scope is not None else "",
    )


def _point(metric: Metric, point: Any) -> CapturedPoint:
    name, unit, data, attributes = metric.name, metric.unit or "", metric.data, dict(point.attributes or {})
    if isinstance(point, HistogramDataPoint):
        assert isinstance(data, Histogram), f"unexpected data type {type(data).__name__}"
        buckets = (tuple(point.bucket_counts), tuple(point.explicit_bounds))
        return CapturedPoint(name, unit, attributes, None, point.count, point.sum, *buckets, kind="histogram", monotonic=None)
    assert isinstance(point, NumberDataPoint), f"unexpected point type {type(point).__name__}"
    if isinstance(data, Sum):
        return CapturedPoint(name, unit, attributes, point.value, kind="sum", monotonic=data.is_monotonic)
    assert isinstance(data, Gauge), f"unexpected data type {type(data).__name__}"
    return CapturedPoint(name, unit, attributes, point.value, kind="gauge", monotonic=None)
