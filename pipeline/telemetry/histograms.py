"""hoptrace's own duration histograms, aggregated in the process instead of by the SDK.

The SDK's ``Histogram.record`` validates, copies, sorts and hashes its attributes on every
call, and takes a lock: several µs, and a consumed message records three histograms. A
hoptrace stage records into a handful of fixed attribute sets, so each set is a
``HistogramSeries`` that the per-message code holds on to: ``record`` appends the value to a
queue (a C-level ``deque.append``, atomic under the GIL: no lock, no hashing, no dict), and the
values are put into their buckets in batches, by whichever thread finds the queue long
(``DRAIN_AT``) or by the collection. Only the batch step takes a lock, once per batch.

``telemetry.metric_producer`` hands these histograms to every reader of the meter provider, so a
backend receives ordinary histograms: same names, units, descriptions, bucket boundaries and
exemplars (the SDK's ``OTEL_METRICS_EXEMPLAR_FILTER``, one exemplar per bucket, the last one
seen since the previous collection, as the SDK's aligned-bucket reservoir keeps them). A
point's start time is the time of its first measurement, as the SDK's.
"""

from __future__ import annotations

import math
import os
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from opentelemetry import trace
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, Exemplar, ExemplarFilter, TraceBasedExemplarFilter
from opentelemetry.trace import SpanContext
from opentelemetry.util.types import Attributes, AttributeValue

EXEMPLAR_FILTERS: dict[str, type[ExemplarFilter]] = {
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
    "trace_based": TraceBasedExemplarFilter,
}
"""The values of ``OTEL_METRICS_EXEMPLAR_FILTER`` and the SDK filter each one names."""

AttributeKey = tuple[tuple[str, AttributeValue], ...]
DRAIN_AT = 1024
"""Values a series queues before the recording thread puts them into buckets itself (bounds memory between collections)."""


def exemplar_filter_from_environment() -> ExemplarFilter:
    """The filter ``OTEL_METRICS_EXEMPLAR_FILTER`` names; ``trace_based`` (the SDK's default) when unset or unknown."""
    name = os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER", "").strip().lower()
    return EXEMPLAR_FILTERS.get(name, TraceBasedExemplarFilter)()


@dataclass
class PointState:
    """One attribute set's aggregation since the histogram began (a copy of it, once collected)."""

    attributes: dict[str, AttributeValue]
    start_time_unix_nano: int
    bucket_counts: list[int]
    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    exemplars: dict[int, Exemplar] = field(default_factory=dict)
    """Per bucket, the last measurement the exemplar filter let through since the previous collection (in collected copies)."""


class HistogramSeries:
    """The measurements of one attribute set of a ``LocalHistogram``; ``record`` and ``record_in`` may be called from any thread."""

    __slots__ = ("_attributes", "_boundaries", "_candidates", "_exemplars", "_lock", "_pending", "_state")

    def __init__(self, attributes: dict[str, AttributeValue], boundaries: tuple[float, ...], exemplars: type[ExemplarFilter] | None) -> None:
        """An empty series of ATTRIBUTES; EXEMPLARS: the SDK filter class deciding exemplars (None: a filter of the user's own)."""
        self._attributes = attributes
        self._boundaries = boundaries
        self._exemplars = exemplars
        self._pending: deque[float | tuple[float, int, SpanContext | None]] = deque()
        self._lock = threading.Lock()
        self._state: PointState | None = None
        self._candidates: dict[int, tuple[float, int, SpanContext | None]] = {}
        """Per bucket, the last measurement kept as its exemplar since the previous collection (made an ``Exemplar`` when collected)."""

    @property
    def wants_span(self) -> bool:
        """Whether a measurement can carry an exemplar (the filter is not ``always_off``): callers pass the span then."""
        return self._exemplars is not AlwaysOffExemplarFilter

    def record(self, amount: float, span: SpanContext | None = None) -> None:
        """Count AMOUNT, measured within SPAN (None: outside any span); the exemplar filter decides about an exemplar."""
        kind = self._exemplars
        if kind is TraceBasedExemplarFilter:
            wanted = span is not None and bool(span.trace_flags & 1)
        else:
            wanted = kind is AlwaysOnExemplarFilter
        self.record_in(amount, span, wanted)

    def record_in(self, amount: float, span: SpanContext | None, exemplar: bool) -> None:
        """Count AMOUNT; with EXEMPLAR, keep it as its bucket's exemplar (with SPAN's ids when SPAN is a valid span)."""
        pending = self._pending
        pending.append((amount, time.time_ns(), span) if exemplar else amount)
        if len(pending) >= DRAIN_AT or self._state is None:
            self.drain()

    def drain(self) -> None:
        """Put every queued value into its bucket (the first value also starts the point, at its own time)."""
        with self._lock:
            pending = self._pending
            state = self._state
            for _ in range(len(pending)):
                item = pending.popleft()
                if type(item) is tuple:
                    amount, now = item[0], item[1]
                else:
                    amount, now = item, 0
                if state is None:
                    state = self._state = PointState(self._attributes, now or time.time_ns(), [0] * (len(self._boundaries) + 1))
                bucket = bisect_left(self._boundaries, amount)  # bucket i holds boundaries[i-1] < amount <= boundaries[i]
                state.bucket_counts[bucket] += 1
                state.count += 1
                state.total += amount
                if amount < state.minimum:
                    state.minimum = amount
                if amount > state.maximum:
                    state.maximum = amount
                if now:
                    self._candidates[bucket] = item  # type: ignore[assignment]

    def collect(self) -> PointState | None:
        """A copy of the point so far (None before any measurement); its exemplars are handed over, and forgotten here."""
        self.drain()
        with self._lock:
            state = self._state
            if state is None:
                return None
            candidates, self._candidates = self._candidates, {}
        exemplars = {bucket: Exemplar({}, amount, now, *_ids(span)) for bucket, (amount, now, span) in candidates.items()}
        return replace(state, attributes=dict(state.attributes), bucket_counts=list(state.bucket_counts), exemplars=exemplars)


def _ids(span: SpanContext | None) -> tuple[int | None, int | None]:
    """(span id, trace id) of an exemplar measured in SPAN; (None, None) outside a valid span."""
    return (span.span_id, span.trace_id) if span is not None and span.is_valid else (None, None)


class LocalHistogram:
    """An explicit-bucket histogram with the SDK histogram's ``record`` signature, aggregated in process.

    ATTRIBUTES passed to ``record`` must be built in a fixed key order (a different order makes
    a second point with the same attributes). Per-message code takes a ``series`` once instead.
    """

    def __init__(self, name: str, unit: str, description: str, boundaries: Sequence[float], exemplar_filter: ExemplarFilter) -> None:
        """A histogram called NAME in UNIT with BOUNDARIES (ascending) between its buckets."""
        self.name = name
        self.unit = unit
        self.description = description
        self.boundaries = tuple(boundaries)
        self.exemplar_filter = exemplar_filter
        self._filter_kind = type(exemplar_filter) if type(exemplar_filter) in EXEMPLAR_FILTERS.values() else None
        self._series: dict[AttributeKey, HistogramSeries] = {}
        self._lock = threading.Lock()

    @property
    def filter_is_standard(self) -> bool:
        """Whether the exemplar filter is one of the SDK's three (a series then decides exemplars from the span alone)."""
        return self._filter_kind is not None

    def series(self, attributes: Attributes = None) -> HistogramSeries:
        """The series of ATTRIBUTES, made on first use; hold on to it to record without any lookup."""
        key: AttributeKey = tuple(attributes.items()) if attributes else ()
        found = self._series.get(key)
        if found is None:
            with self._lock:
                found = self._series.get(key)
                if found is None:
                    found = self._series[key] = HistogramSeries(dict(key), self.boundaries, self._filter_kind)
        return found

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        """Count AMOUNT for ATTRIBUTES; CONTEXT (default: the current one) decides about an exemplar."""
        series = self.series(attributes)
        kind = self._filter_kind
        if kind is AlwaysOffExemplarFilter:
            series.record_in(amount, None, False)
            return
        span = trace.get_current_span(context).get_span_context()
        if kind is None:
            wanted = self.exemplar_filter.should_sample(amount, time.time_ns(), attributes, context if context is not None else get_current())
            series.record_in(amount, span, wanted)
        else:
            series.record(amount, span if span.is_valid else None)

    def collect(self) -> list[PointState]:
        """A copy of every point since the histogram began; the exemplars are handed over (and forgotten here)."""
        with self._lock:
            series = list(self._series.values())
        return [state for each in series if (state := each.collect()) is not None]


class LocalHistograms:
    """The local histograms of one meter provider, created with shared bucket boundaries."""

    def __init__(self, boundaries: Sequence[float], exemplar_filter: ExemplarFilter | None = None) -> None:
        """Histograms with BOUNDARIES; EXEMPLAR_FILTER defaults to ``OTEL_METRICS_EXEMPLAR_FILTER``."""
        self.boundaries = tuple(boundaries)
        self._filter = exemplar_filter or exemplar_filter_from_environment()
        self._histograms: list[LocalHistogram] = []

    def create(self, name: str, unit: str, description: str) -> LocalHistogram:
        """A new histogram, exported with the others from now on."""
        histogram = LocalHistogram(name, unit, description, self.boundaries, self._filter)
        self._histograms.append(histogram)
        return histogram

    def __iter__(self) -> Iterator[LocalHistogram]:
        """The histograms created so far."""
        return iter(list(self._histograms))
