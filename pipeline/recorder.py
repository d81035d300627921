"""The flight recorder: the spans of jobs the sampler dropped, kept in memory a while, exported whole when the job goes wrong.

Head sampling at 1 % loses 99 of 100 failed jobs. With the recorder on, hoptrace's own publish and
process spans of an unsampled job are still made (``pipeline.tracing``, ``LeanTracer.start`` with a recorder) and,
once ended, come here instead of going nowhere: as compact records (``SpanRecord``: a stage's
constant attributes are shared, not copied) in a buffer bounded in bytes, the oldest job dropped
first. When a job goes wrong (``pipeline.keeping`` says when: a failed attempt, a retry, a dead
letter, a redelivery, a slow job, or ``keep()`` in user code), ``FlightRecorder.keep`` hands every
span it holds of that trace to the tracer provider's span processors, rebuilt as the sampled spans
they would have been (same ids, parents, attributes and times, plus ``hoptrace.keep.reason``), and
from then on every span of the trace this process starts is sampled. The keep is announced to the
pipeline's other processes (``hoptrace.clients.redis.keep_channel``), which do the same with what they hold.

A trace some of whose spans had already left the buffer when the keep came is exported with
``hoptrace.keep.partial`` on its spans and counted (``hoptrace.recorder.partial``).
``hoptrace.clients.redis.keep_channel.start_flight_recorder`` sets one up for a process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from hoptrace.pipeline import semconv
from hoptrace.pipeline.telemetry.sdk_internals.processors import span_processor_of
from hoptrace.pipeline.telemetry.sdk_internals.spans import BLOB, RECORD_FIELDS, HopSpan, SpanRecord, as_sampled, ended_at, flat_records

_logger = logging.getLogger(__name__)

RECORD_BYTES = 250
"""Memory of one span record with hoptrace's own attribute values, measured with tracemalloc (``benchmarks``: recorder memory).

247 B measured (run 157cbe9e: 32,965,277 B for 133,454 spans) since a record is one flat tuple and one bytes blob; 440 before."""
VALUE_BYTES = 8
"""Memory counted per attribute value of a span whose attributes user code set (plus the length of its encoded values)."""
SMALL_TRACE = 8
"""Records of one trace kept in a tuple; a trace with more is kept in a list."""
MAX_REASON = 64
"""The longest reason ``keep`` takes."""
FLUSH_TIMEOUT_MS = 5000
"""Longest wait of the flusher thread for the exporters to take what a keep handed them."""
KEPT_TRACES = 100_000
"""How many kept (and how many partly dropped) trace ids a process remembers."""


class Channel(Protocol):
    """How keeps made in this process reach the pipeline's other processes (``hoptrace.clients.redis.keep_channel.KeepChannel``)."""

    def announce(self, trace_id: int, reason: str, partial: bool) -> None:
        """Tell the other processes that TRACE_ID is kept for REASON (PARTIAL: spans of it are gone); never blocks."""

    def stop(self) -> None:
        """Stop announcing and listening."""


class FlightRecorder(SpanProcessor):
    """Holds ended unsampled spans by trace, within MAX_BYTES; exports a trace whole when it is kept.

    It is a span processor only to be shut down with the tracer provider: the spans it holds come
    from ``LeanTracer.start`` with a recorder (``hold``), not from the provider.
    """

    def __init__(self, max_bytes: int, meter_provider: MeterProvider | None = None) -> None:
        """A recorder holding at most about MAX_BYTES of span records; its counters and gauges on METER_PROVIDER (default: global)."""
        if max_bytes <= 0:
            raise ValueError(f"the flight recorder's bound must be a positive number of bytes, not {max_bytes}")
        self.max_bytes = max_bytes
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        self._held: OrderedDict[int, tuple[Any, ...] | list[Any]] = OrderedDict()
        """The records of each trace, oldest trace first, end to end (``flat_records``): a tuple (which the garbage collector stops tracking)
        up to ``SMALL_TRACE`` records."""
        self._weight: dict[int, int] = {}
        """Bytes counted beyond ``RECORD_BYTES`` per record, by trace: attributes user code set."""
        self._size = 0
        self._dropped = 0
        self._kept: OrderedDict[int, str] = OrderedDict()
        self._dropped_traces: OrderedDict[int, None] = OrderedDict()
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
        meter.create_observable_counter(
            "hoptrace.recorder.dropped", [self._observe_dropped], "{span}", "Spans the flight recorder dropped, oldest first, to stay in its bound."
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

    def hold(self, span: HopSpan) -> None:
        """Keep the ended, unsampled SPAN a while; export it at once when its trace was kept meanwhile."""
        if self._closed:
            return
        trace_id, record, touched = span.record()
        extra = 0
        if touched:  # user code set attributes of any size on it: weigh them
            extra = VALUE_BYTES * touched + len(record[BLOB])
        with self._lock:
            reason = self._kept.get(trace_id)
            if reason is None:
                held = self._held.get(trace_id)
                if held is None:
                    self._held[trace_id] = record  # one record is a flat tuple of records
                elif type(held) is list:
                    held.extend(record)
                else:  # a trace keeps its place; a long one turns into a list, which grows in place
                    self._held[trace_id] = held + record if len(held) < SMALL_TRACE * RECORD_FIELDS else [*held, *record]
                if extra:
                    self._weight[trace_id] = self._weight.get(trace_id, 0) + extra
                self._size += RECORD_BYTES + extra
                if self._size > self.max_bytes:
                    self._drop_oldest()
                return
        self._export(trace_id, [record], reason, partial=False)

    def _drop_oldest(self) -> None:
        """Drop whole traces, oldest first, until the buffer is within its bound (the lock held)."""
        while self._size > self.max_bytes and self._held:
            trace_id, gone = self._held.popitem(last=False)
            self._size -= self._bytes(trace_id, gone)
            self._dropped += len(gone) // RECORD_FIELDS
            self._remember(self._dropped_traces, trace_id, None)

    def _bytes(self, trace_id: int, held: tuple[Any, ...] | list[Any]) -> int:
        """What the records HELD of TRACE_ID counted for, forgetting their extra weight (the lock held)."""
        return RECORD_BYTES * (len(held) // RECORD_FIELDS) + self._weight.pop(trace_id, 0)

    @staticmethod
    def _remember(seen: OrderedDict, trace_id: int, value: object) -> None:
        seen[trace_id] = value
        if len(seen) > KEPT_TRACES:
            seen.popitem(last=False)

    def keep(self, trace_id: int, reason: str, *, partial: bool = False, announce: bool = True) -> bool:
        """Keep trace TRACE_ID for REASON: export what is held of it, sample the rest; False when it was kept already.

        PARTIAL says spans of it are known to be gone (a redelivery: the process that had the message died with
        its spans); so does a trace some of whose spans this buffer dropped. With ANNOUNCE (a keep made here,
        not heard from another process), the pipeline's other processes are told to do the same, and the keep is counted.
        """
        with self._lock:
            if trace_id in self._kept:
                return False
            self._remember(self._kept, trace_id, reason)
            held = self._held.pop(trace_id, None)
            if held is not None:
                self._size -= self._bytes(trace_id, held)
            dropped_here = trace_id in self._dropped_traces
        if announce:  # counted once, where the keep was made
            self._kept_jobs.add(1, {semconv.KEEP_REASON: reason})
        if dropped_here or (partial and announce):
            self._partial_jobs.add(1, {semconv.KEEP_REASON: reason})
        if held is not None:
            self._export(trace_id, flat_records(held), reason, partial or dropped_here)
        if announce and self._channel is not None:
            self._channel.announce(trace_id, reason, partial)
        return True

    def _export(self, trace_id: int, records: Iterable[SpanRecord], reason: str, partial: bool) -> None:
        forward = self._forward
        if forward is None:
            return
        added = {semconv.KEEP_REASON: reason, semconv.KEEP_PARTIAL: True} if partial else {semconv.KEEP_REASON: reason}
        for record in records:
            forward.on_end(as_sampled(trace_id, record, added))
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
        """Seconds from the end of the first span of the oldest trace held to now; 0 when nothing is held."""
        with self._lock:
            oldest = next(iter(self._held.values()), None)
        return 0.0 if oldest is None else max(time.time_ns() - ended_at(next(flat_records(oldest))), 0) / 1e9

    def size_bytes(self) -> int:
        """The bytes the buffer counts now against its bound."""
        return self._size

    def spans_held(self) -> int:
        """How many spans the buffer holds now."""
        with self._lock:
            return sum(len(held) for held in self._held.values()) // RECORD_FIELDS

    def _observe_dropped(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self._dropped)] if os.getpid() == self._pid else []

    def _observe_history(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.history_s())] if os.getpid() == self._pid else []

    def _observe_size(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self._size)] if os.getpid() == self._pid else []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing: the recorder's spans come from ``hold``."""

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing: the recorder's spans come from ``hold``."""

    def shutdown(self) -> None:
        """Forget what is held (nothing asked to keep it) and stop the channel; a recorder installed for this process is uninstalled."""
        with self._lock:
            self._closed = True
            self._held.clear()
            self._weight.clear()
            self._size = 0
        if self._channel is not None:
            self._channel.stop()
        if _current is self:
            install(None)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing to flush: what is held is exported only when kept."""
        return True


_current: FlightRecorder | None = None


def install(recorder: FlightRecorder | None) -> None:
    """Make RECORDER this process's flight recorder (None: none)."""
    global _current
    _current = recorder


def current() -> FlightRecorder | None:
    """This process's flight recorder; None when it is off (a forked child starts with none: its parent's is not its own)."""
    return _current


os.register_at_fork(after_in_child=lambda: install(None))


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
