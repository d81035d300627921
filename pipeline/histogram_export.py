"""A metric exporter that adds hoptrace's in-process histograms to every export of the SDK's metrics.

``MergingMetricExporter`` wraps the exporter a ``PeriodicExportingMetricReader`` drives
(OTLP, console, anything): on each export it collects the ``LocalHistograms`` and puts them
into the SDK's ``MetricsData`` under the ``hoptrace`` instrumentation scope, next to the
counters, as ``Histogram`` metrics in the temporality the wrapped exporter prefers.

The SDK's reader calls the exporter only when the SDK itself collected something; hoptrace's
counters count every message whose durations it records, so they always come along.

Cumulative points run from each attribute set's first measurement. Delta points are the
difference from this exporter's previous export; the SDK would also report the interval's
minimum and maximum, which a difference of cumulative counts cannot know, so delta points
carry none (both are optional in OTLP).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from hoptrace.pipeline.histograms import AttributeKey, LocalHistograms, PointState

SCOPE = InstrumentationScope("hoptrace")
"""The instrumentation scope of hoptrace's instruments (the meter name ``Instruments`` uses)."""


class MergingMetricExporter(MetricExporter):
    """Exports through EXPORTER what the SDK collected plus the current state of HISTOGRAMS."""

    def __init__(self, exporter: MetricExporter, histograms: LocalHistograms, resource: Resource) -> None:
        """Wrap EXPORTER; RESOURCE is the meter provider's (used when the SDK collected nothing)."""
        # A reader asks its exporter for these two; they are the wrapped exporter's own choice.
        super().__init__(preferred_temporality=exporter._preferred_temporality, preferred_aggregation=exporter._preferred_aggregation)
        self.exporter = exporter
        self._histograms = histograms
        self._resource = resource
        self._delta = (exporter._preferred_temporality or {}).get(HistogramInstrument) == AggregationTemporality.DELTA
        self._previous: dict[tuple[str, AttributeKey], PointState] = {}
        self._previous_time_ns = time.time_ns()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Export METRICS_DATA with the local histograms added."""
        return self.exporter.export(self._merged(metrics_data), timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)

    def _merged(self, metrics_data: MetricsData) -> MetricsData:
        own = self._collect()
        if not own:
            return metrics_data
        resources = list(metrics_data.resource_metrics) or [ResourceMetrics(self._resource, [], self._resource.schema_url)]
        first = resources[0]
        scopes = list(first.scope_metrics)
        index = next((i for i, scope in enumerate(scopes) if scope.scope == SCOPE), None)
        if index is None:
            scopes.append(ScopeMetrics(SCOPE, own, ""))
        else:
            scopes[index] = dataclasses.replace(scopes[index], metrics=[*scopes[index].metrics, *own])
        resources[0] = dataclasses.replace(first, scope_metrics=scopes)
        return MetricsData(resources)

    def _collect(self) -> list[Metric]:
        now = time.time_ns()
        temporality = AggregationTemporality.DELTA if self._delta else AggregationTemporality.CUMULATIVE
        metrics = []
        for histogram in self._histograms:
            points = [point for state in histogram.collect() if (point := self._data_point(histogram.name, histogram.boundaries, state, now))]
            if points:
                metrics.append(Metric(histogram.name, histogram.description, histogram.unit, Histogram(points, temporality)))
        self._previous_time_ns = now
        return metrics

    def _data_point(self, name: str, boundaries: Sequence[float], state: PointState, now: int) -> HistogramDataPoint | None:
        """STATE as a point of this exporter's temporality; None for a delta without measurements (the SDK leaves those out)."""
        exemplars = list(state.exemplars.values())
        if not self._delta:
            return HistogramDataPoint(
                state.attributes, state.start_time_unix_nano, now, state.count, state.total,
                state.bucket_counts, boundaries, state.minimum, state.maximum, exemplars,
            )  # fmt: skip
        key = (name, tuple(state.attributes.items()))
        before = self._previous.get(key)
        self._previous[key] = state
        start = max(self._previous_time_ns, state.start_time_unix_nano) if before is not None else state.start_time_unix_nano
        counts = state.bucket_counts if before is None else [a - b for a, b in zip(state.bucket_counts, before.bucket_counts, strict=True)]
        count = state.count - (before.count if before else 0)
        if count == 0:
            return None
        total = state.total - (before.total if before else 0.0)
        return HistogramDataPoint(state.attributes, start, now, count, total, counts, boundaries, None, None, exemplars)  # type: ignore[arg-type]
