"""hoptrace's in-process histograms, handed to every metric reader of a meter provider (a MetricProducer).

The OpenTelemetry specification lets a ``MetricProducer`` add pre-aggregated metrics to what a
``MetricReader`` collects; the Python SDK (1.45) has no such hook yet. ``local_histograms``
attaches one to a provider: each reader's collection gets hoptrace's histograms added under the
``hoptrace`` scope, in that reader's temporality, so OTLP, Prometheus, in-memory readers, a
distro's readers — any reader of the provider — receive the same points.

Where the SDK would do it differently, the SDK does it: a provider whose Views select one of
hoptrace's histograms (to rename, drop, re-bucket or filter it) gets a plain SDK histogram for
that one, so Views apply in full; a provider hoptrace cannot attach to gets SDK histograms.

The SDK's hook is private (``MetricReader._set_collect_callback``, ``MeterProvider._all_metric_readers``,
``View._match``); every use is in this module and checked, with the SDK histograms as fallback.
Readers added to a provider after hoptrace's instruments were made do not get the histograms.

Delta points are the difference from the reader's previous collection and carry no min/max (a
difference of cumulative counts cannot know an interval's extremes; both are optional in OTLP).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.metrics import Instrument, MeterProvider
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from hoptrace.pipeline.telemetry.histograms import AttributeKey, LocalHistograms, PointState

logger = logging.getLogger(__name__)

SCOPE = InstrumentationScope("hoptrace")
"""The instrumentation scope of hoptrace's instruments (the meter name ``Instruments`` uses)."""

_attached: weakref.WeakKeyDictionary[MeterProvider, LocalHistograms] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def local_histograms(meter_provider: MeterProvider, boundaries: Sequence[float]) -> LocalHistograms | None:
    """The local histograms that every reader of METER_PROVIDER collects (made and attached once per provider).

    None when the provider is not an SDK provider hoptrace can attach to: use SDK histograms then.
    """
    with _lock:
        if meter_provider in _attached:
            return _attached[meter_provider]
        readers = getattr(meter_provider, "_all_metric_readers", None)
        if not isinstance(meter_provider, SdkMeterProvider) or readers is None:
            return None
        histograms = LocalHistograms(boundaries)
        resource = meter_provider._sdk_config.resource  # noqa: SLF001 - see the module docstring
        for reader in readers:
            collect = getattr(reader, "_collect", None)
            if collect is None:
                logger.warning("metric reader %r is not registered; hoptrace's histograms will not reach it", reader)
                continue
            reader._set_collect_callback(_ReaderProducer(reader, collect, histograms, resource).collect)  # noqa: SLF001
        _attached[meter_provider] = histograms
        return histograms


def selected_by_views(meter_provider: MeterProvider, instrument: Instrument) -> bool:
    """Whether a View of METER_PROVIDER selects INSTRUMENT (then the SDK must aggregate it for the View to apply)."""
    config = getattr(meter_provider, "_sdk_config", None)
    return any(view._match(instrument) for view in getattr(config, "views", ()))  # noqa: SLF001


Collect = Callable[..., "MetricsData | None"]


class _ReaderProducer:
    """One reader's collection with hoptrace's histograms added, in the reader's temporality."""

    def __init__(self, reader: MetricReader, collect: Collect, histograms: LocalHistograms, resource: Any) -> None:
        self._collect = collect
        self._histograms = histograms
        self._resource = resource
        # Keyed by the SDK's internal instrument classes, subclasses of the public ones.
        preferences = reader._instrument_class_temporality  # noqa: SLF001
        self._delta = any(issubclass(kind, HistogramInstrument) and chosen == AggregationTemporality.DELTA for kind, chosen in preferences.items())
        self._previous: dict[tuple[str, AttributeKey], PointState] = {}
        self._previous_time_ns = time.time_ns()

    def collect(self, reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        """What the SDK collected for READER, plus the local histograms."""
        collected = self._collect(reader, timeout_millis=timeout_millis)
        own = self._produce()
        if not own:
            return collected
        resources = list(collected.resource_metrics) if collected is not None else []
        if not resources:
            resources = [ResourceMetrics(self._resource, [], self._resource.schema_url)]
        first = resources[0]
        scopes = list(first.scope_metrics)
        index = next((i for i, scope in enumerate(scopes) if scope.scope == SCOPE), None)
        if index is None:
            scopes.append(ScopeMetrics(SCOPE, own, ""))
        else:
            scopes[index] = dataclasses.replace(scopes[index], metrics=[*scopes[index].metrics, *own])
        resources[0] = dataclasses.replace(first, scope_metrics=scopes)
        return MetricsData(resources)

    def _produce(self) -> list[Metric]:
        now = time.time_ns()
        temporality = AggregationTemporality.DELTA if self._delta else AggregationTemporality.CUMULATIVE
        produced = []
        for histogram in self._histograms:
            points = [point for state in histogram.collect() if (point := self._point(histogram.name, histogram.boundaries, state, now))]
            if points:
                produced.append(Metric(histogram.name, histogram.description, histogram.unit, Histogram(points, temporality)))
        self._previous_time_ns = now
        return produced

    def _point(self, name: str, boundaries: Sequence[float], state: PointState, now: int) -> HistogramDataPoint | None:
        """STATE as a point of this reader's temporality; None for a delta without measurements (the SDK leaves those out)."""
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
