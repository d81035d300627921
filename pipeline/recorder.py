"""The flight recorder: the spans of jobs the sampler dropped, kept in memory a while, exported whole when the job goes wrong.

Head sampling at 1 % loses 99 of 100 failed jobs. With the recorder on, hoptrace's own publish and
process spans of an unsampled job are still made (``pipeline.tracing``) and, once ended, land here
instead of nowhere: as compact records in a buffer bounded in bytes, oldest job dropped first.
When a job goes wrong (``pipeline.keeping`` says when: a failed attempt, a retry, a dead letter, a
redelivery, a slow job, or ``keep()`` in user code), ``FlightRecorder.keep`` hands every span it
holds of that trace to the tracer provider's span processors, rebuilt as the sampled spans they
would have been (same ids, parents, attributes and times, plus ``hoptrace.keep.reason``), and from
then on every span of the trace this process ends or starts is sampled. The keep is announced to
the pipeline's other processes (``keep_channel``), which do the same with what they hold.

A trace some of whose spans had already left the buffer when the keep came is exported with
``hoptrace.keep.partial`` on its spans and counted (``hoptrace.recorder.partial``)::

    recorder = FlightRecorder(max_bytes=48 * 2**20)
    recorder.attach(tracer_provider, channel)
    tracer_provider.add_span_processor(recorder)
    install(recorder)   # keep_channel.start_flight_recorder does all this
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import NamedTuple, Protocol

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, TraceFlags, TraceState
from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline import semconv
from hoptrace.pipeline.sdk_internals.processors import span_processor_of

_logger = logging.getLogger(__name__)

RECORD_BYTES = 700
"""Memory of one span record beyond its variable strings, measured with tracemalloc (``benchmarks``: recorder memory)."""
MAX_REASON = 64
"""The longest reason ``keep`` takes."""
FLUSH_TIMEOUT_MS = 5000
"""Longest wait of the flusher thread for the exporters to take what a keep handed them."""
KEPT_TRACES = 100_000
"""How many kept (and how many partly dropped) trace ids a process remembers."""


class Channel(Protocol):
    """How keeps made in this process reach the pipeline's other processes (``keep_channel.KeepChannel``)."""

    def announce(self, trace_id: int, reason: str) -> None:
        """Tell the other processes that TRACE_ID is kept for REASON; never blocks."""

    def stop(self) -> None:
        """Stop announcing and listening."""


class _Record(NamedTuple):
    """An ended span the sampler dropped, in the few fields it takes to rebuild it."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int
    parent_remote: bool
    flags: int
    state: TraceState | None
    kind: SpanKind
    start: int
    end: int
    status: Status
    keys: tuple[str, ...]
    values: tuple[AttributeValue, ...]
    events: tuple[Event, ...]
    links: tuple[Link, ...]
    resource: Resource
    scope: InstrumentationScope | None


class _Held:
    """The records of one trace, and the bytes they count for."""

    __slots__ = ("records", "size")

    def __init__(self) -> None:
        self.records: list[_Record] = []
        self.size = 0


class FlightRecorder(SpanProcessor):
    """Holds ended unsampled spans by trace, within MAX_BYTES; exports a trace whole when it is kept."""

    def __init__(self, max_bytes: int, meter_provider: MeterProvider | None = None) -> None:
        """A recorder holding at most about MAX_BYTES of span records; its counters and gauges on METER_PROVIDER (default: global)."""
        if max_bytes <= 0:
            raise ValueError(f"the flight recorder's bound must be a positive number of bytes, not {max_bytes}")
        self.max_bytes = max_bytes
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        self._held: OrderedDict[int, _Held] = OrderedDict()
        self._size = 0
        self._kept: OrderedDict[int, str] = OrderedDict()
        self._dropped_traces: OrderedDict[int, None] = OrderedDict()
        self._keysets: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._forward: SpanProcessor | None = None
        self._flush_wanted = threading.Event()
        self._flusher: threading.Thread | None = None
        self._channel: Channel | None = None
        meter = metrics.get_meter("hoptrace", meter_provider=meter_provider)
        self._kept_jobs = meter.create_counter(
            "hoptrace.recorder.kept", "{job}", "Jobs the flight recorder kept whole, by reason (hoptrace.keep.reason)."
        )
        self._partial_jobs = meter.create_counter(
            "hoptrace.recorder.partial", "{job}", "Kept jobs some of whose spans had left this process's buffer before the keep came."
        )
        self._dropped_spans = meter.create_counter(
            "hoptrace.recorder.dropped", "{span}", "Spans the flight recorder dropped, oldest first, to stay in its bound."
        )
        meter.create_observable_gauge(
            "hoptrace.recorder.history", [self._observe_history], "s", "How far back the flight recorder's buffer reaches now."
        )
        meter.create_observable_gauge(
            "hoptrace.recorder.size", [self._observe_size], "By", "What the flight recorder's buffer holds now, as counted against its bound."
        )

    def attach(self, provider: TracerProvider, channel: Channel | None = None) -> None:
        """Export kept spans through PROVIDER's span processors; announce each keep made here on CHANNEL (stopped with the recorder)."""
        self._forward = span_processor_of(provider)
        if self._forward is None:
            _logger.warning("the flight recorder cannot reach this tracer provider's span processors; kept jobs will not be exported")
        self._channel = channel

    def is_kept(self, trace_id: int) -> bool:
        """Whether the trace TRACE_ID was kept: its spans from now on are sampled."""
        return trace_id in self._kept

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Hold SPAN when the sampler dropped it, or export it at once when its trace was kept."""
        context = span.context
        if context is None or context.trace_flags & 1 or self._closed or os.getpid() != self._pid:
            return
        record = self._record(span)
        with self._lock:
            reason = self._kept.get(context.trace_id)
            if reason is None:
                self._hold(record)
                return
        self._export([record], reason, partial=False)

    def _record(self, span: ReadableSpan) -> _Record:
        context, parent = span.context, span.parent
        attributes = span.attributes or {}
        keys = tuple(attributes)
        keys = self._keysets.setdefault(keys, keys)  # one tuple of names per kind of span
        return _Record(
            span.name,
            context.trace_id,
            context.span_id,
            parent.span_id if parent is not None else 0,
            parent.is_remote if parent is not None else False,
            int(context.trace_flags),
            context.trace_state or None,
            span.kind,
            span.start_time or 0,
            span.end_time or 0,
            span.status,
            keys,
            tuple(attributes.values()),
            tuple(span.events),
            tuple(span.links),
            span.resource,
            span.instrumentation_scope,
        )

    def _hold(self, record: _Record) -> None:
        """Add RECORD to its trace (the lock held), then drop whole traces, oldest first, until within the bound."""
        held = self._held.get(record.trace_id)
        if held is None:
            held = self._held[record.trace_id] = _Held()
        size = RECORD_BYTES + sum(len(value) for value in record.values if type(value) is str)
        held.records.append(record)
        held.size += size
        self._size += size
        while self._size > self.max_bytes and self._held:
            trace_id, gone = self._held.popitem(last=False)
            self._size -= gone.size
            self._dropped_spans.add(len(gone.records))
            self._remember(self._dropped_traces, trace_id, None)

    @staticmethod
    def _remember(seen: OrderedDict, trace_id: int, value: object) -> None:
        seen[trace_id] = value
        if len(seen) > KEPT_TRACES:
            seen.popitem(last=False)

    def keep(self, trace_id: int, reason: str, *, announce: bool = True) -> bool:
        """Keep trace TRACE_ID for REASON: export what is held of it, sample the rest; False when it was kept already.

        With ANNOUNCE (a keep made here, not heard from another process), the pipeline's other processes are
        told to do the same, and the keep is counted.
        """
        with self._lock:
            if trace_id in self._kept:
                return False
            self._remember(self._kept, trace_id, reason)
            held = self._held.pop(trace_id, None)
            if held is not None:
                self._size -= held.size
            partial = trace_id in self._dropped_traces
        if announce:  # counted once, where the keep was made
            self._kept_jobs.add(1, {semconv.KEEP_REASON: reason})
        if partial:
            self._partial_jobs.add(1, {semconv.KEEP_REASON: reason})
        if held is not None:
            self._export(held.records, reason, partial)
        if announce and self._channel is not None:
            self._channel.announce(trace_id, reason)
        return True

    def _export(self, records: list[_Record], reason: str, partial: bool) -> None:
        forward = self._forward
        if forward is None:
            return
        for record in records:
            forward.on_end(_as_sampled(record, reason, partial))
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Have the flusher thread export what was handed over now, rather than at the batch processors' next schedule."""
        if self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_when_wanted, name="hoptrace-recorder-flush", daemon=True)
                    self._flusher.start()
        self._flush_wanted.set()

    def _flush_when_wanted(self) -> None:
        while True:
            self._flush_wanted.wait()
            self._flush_wanted.clear()
            forward = self._forward
            if forward is not None:
                forward.force_flush(FLUSH_TIMEOUT_MS)

    def history_s(self) -> float:
        """Seconds from the end of the oldest span held to now; 0 when nothing is held."""
        with self._lock:
            oldest = next(iter(self._held.values()), None)
            ended = oldest.records[0].end if oldest is not None else None
        return 0.0 if ended is None else max(time.time_ns() - ended, 0) / 1e9

    def size_bytes(self) -> int:
        """The bytes the buffer counts now against its bound."""
        return self._size

    def _observe_history(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.history_s())] if os.getpid() == self._pid else []

    def _observe_size(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self._size)] if os.getpid() == self._pid else []

    def shutdown(self) -> None:
        """Forget what is held (nothing asked to keep it) and stop the channel; a recorder installed for this process is uninstalled."""
        with self._lock:
            self._closed = True
            self._held.clear()
            self._size = 0
        if self._channel is not None:
            self._channel.stop()
        if _current is self:
            install(None)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing to flush: what is held is exported only when kept."""
        return True


def _as_sampled(record: _Record, reason: str, partial: bool) -> ReadableSpan:
    """RECORD as the sampled span it would have been, with why it was kept."""
    flags = TraceFlags(record.flags | TraceFlags.SAMPLED)
    context = SpanContext(record.trace_id, record.span_id, False, flags, record.state)
    parent = SpanContext(record.trace_id, record.parent_id, record.parent_remote, flags, record.state) if record.parent_id else None
    attributes: dict[str, AttributeValue] = dict(zip(record.keys, record.values, strict=True))
    attributes[semconv.KEEP_REASON] = reason
    if partial:
        attributes[semconv.KEEP_PARTIAL] = True
    return ReadableSpan(
        name=record.name,
        context=context,
        parent=parent,
        resource=record.resource,
        attributes=attributes,
        events=record.events,
        links=record.links,
        kind=record.kind,
        status=record.status,
        start_time=record.start,
        end_time=record.end,
        instrumentation_scope=record.scope,
    )


_current: FlightRecorder | None = None


def install(recorder: FlightRecorder | None) -> None:
    """Make RECORDER this process's flight recorder (None: none)."""
    global _current
    _current = recorder


def current() -> FlightRecorder | None:
    """This process's flight recorder; None when it is off."""
    recorder = _current
    return recorder if recorder is not None and recorder._pid == os.getpid() else None  # noqa: SLF001 - a forked child's copy is not its own


def keep(reason: str) -> bool:
    """Keep the current job's trace whole, for REASON (user code calls this when something went wrong); False when nothing was kept.

    Nothing is kept when the recorder is off, there is no current span, or the trace is sampled anyway.
    REASON must be printable and at most 64 characters (it is an attribute value and travels to the other processes).
    """
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        raise ValueError(f"a keep reason must be 1 to {MAX_REASON} printable characters, not {reason!r}")
    context = trace.get_current_span().get_span_context()
    recorder = current()
    if recorder is None or not context.is_valid or context.trace_flags & 1:
        return False
    return recorder.keep(context.trace_id, reason)
