"""The flight recorder's buffer and keep channel: what it holds, what it hands over when a trace is kept, what it drops and counts."""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from hoptrace.clients.redis.keep_channel import KeepChannel
from hoptrace.pipeline import recorder as recorders
from hoptrace.pipeline.recorder import RECORD_BYTES, FlightRecorder
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.telemetry.sdk_internals.spans import HopSpan, LeanTracer
from tests.traces import wait_for

BASE = {"messaging.system": "kafka", "messaging.destination.name": "orders", "hoptrace.stage": "ship"}


class Process:
    """One process's telemetry: a provider that samples nothing, an exporter, a recorder, and hoptrace's lean tracer."""

    def __init__(self, max_bytes: int = 2**20) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.provider = TracerProvider(sampler=ALWAYS_OFF)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.recorder = FlightRecorder(max_bytes, MeterProvider([self.reader]))
        self.recorder.attach(self.provider)
        self.provider.add_span_processor(self.recorder)
        lean = LeanTracer.of(self.provider.get_tracer("test"))
        assert lean is not None
        self.lean = lean

    def span(self, parent: SpanContext | None, own: dict[str, AttributeValue], sampled: bool = False) -> HopSpan:
        """A started span under PARENT: recorded, or (SAMPLED) started as a sampled one with the same ids."""
        context = self.lean.new_context(parent)
        if sampled:
            context = SpanContext(context.trace_id, context.span_id, False, TraceFlags(context.trace_flags | 1), context.trace_state)
            return self.lean.start("process orders", context, parent, Context(), SpanKind.CONSUMER, {**BASE, **own})
        return self.lean.start("process orders", context, parent, Context(), SpanKind.CONSUMER, own, recorder=self.recorder, base=BASE)

    def job(self, hops: int = 2) -> int:
        """End HOPS recorded spans of a new trace, each the parent of the next; the trace id."""
        parent = None
        for hop in range(hops):
            span = self.span(parent, {"hoptrace.job.id": uuid.uuid4().hex} if hop == 0 else {"hoptrace.attempt": 1})
            span.end()
            parent = span.get_span_context()
        assert parent is not None
        return parent.trace_id

    def exported(self, trace_id: int | None = None) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if trace_id is None or span.context.trace_id == trace_id]

    def metric(self, name: str) -> list[tuple[dict, float]]:
        data = self.reader.get_metrics_data()
        return [
            (dict(point.attributes or {}), point.value)
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


def _fields(span: ReadableSpan) -> dict[str, object]:
    """What an exporter reads of SPAN, but its start time (each span takes its own) and the recorder's reason."""
    events = [(event.name, dict(event.attributes or {}), event.timestamp) for event in span.events]
    attributes = {key: value for key, value in (span.attributes or {}).items() if key != "hoptrace.keep.reason"}
    status = (span.status.status_code, span.status.description)
    return {
        "name": span.name, "context": span.context, "parent": span.parent, "kind": span.kind, "end": span.end_time, "attributes": attributes,
        "events": events, "links": list(span.links), "status": status, "resource": span.resource, "scope": span.instrumentation_scope,
    }  # fmt: skip


def test_a_kept_span_is_the_sampled_span_it_would_have_been() -> None:
    process = Process()
    parent = SpanContext(0x1234, 0x99, True, TraceFlags(0))
    error = ValueError("card declined")
    spans = []
    for sampled in (True, False):
        span = process.span(parent, {"hoptrace.job.id": "j-1", "messaging.kafka.offset": 7}, sampled)
        span.set_own("hoptrace.outcome", "retried")
        span.set_attribute("user.note", "set by the handler")
        span.record_exception(error, timestamp=5)
        span.set_status(Status(StatusCode.ERROR, "ValueError: card declined"))
        span.end(end_time=10**18)
        spans.append(span)
    (sampled_out,) = process.exported()
    process.recorder.keep(0x1234, "retried")
    (kept,) = process.exported(0x1234)[1:]
    assert kept.attributes["hoptrace.keep.reason"] == "retried"
    assert kept.start_time == spans[1].start_time
    expected = _fields(sampled_out)
    expected["context"] = SpanContext(0x1234, spans[1].get_span_context().span_id, False, TraceFlags(1))
    expected["parent"] = SpanContext(0x1234, 0x99, True, TraceFlags(1))
    assert _fields(kept) == expected


def test_a_kept_trace_comes_out_whole_and_no_other() -> None:
    process = Process()
    held, other = process.job(hops=3), process.job(hops=2)
    assert process.exported() == []  # unsampled: held, not exported
    assert process.recorder.keep(held, "failed") is True
    out = process.exported(held)
    assert len(out) == 3
    assert all(span.context.trace_flags.sampled and span.attributes["hoptrace.keep.reason"] == "failed" for span in out)
    ids = {span.context.span_id for span in out}
    assert sorted(span.parent.span_id if span.parent else 0 for span in out)[1:] == sorted(ids - {out[-1].context.span_id})
    assert all(dict(span.attributes).items() >= BASE.items() for span in out)
    assert process.exported(other) == []
    assert process.recorder.keep(held, "failed") is False  # once
    assert process.metric("hoptrace.recorder.kept") == [({"hoptrace.keep.reason": "failed"}, 1)]


def test_spans_of_a_kept_trace_that_end_later_go_out_at_once_and_the_trace_is_sampled_from_then_on() -> None:
    process = Process()
    root = process.span(None, {"hoptrace.job.id": "j-2"})
    trace_id = root.get_span_context().trace_id
    process.recorder.keep(trace_id, "retried")  # kept before anything of it ended
    root.end()
    (span,) = process.exported(trace_id)
    assert span.attributes["hoptrace.keep.reason"] == "retried"
    assert process.lean.new_context(root.get_span_context(), process.recorder.is_kept).trace_flags.sampled


def test_the_oldest_jobs_go_first_when_the_bound_is_reached_and_a_late_keep_is_counted_partial() -> None:
    process = Process(max_bytes=3 * 2 * RECORD_BYTES)  # three two-span jobs
    first = process.job(hops=2)
    later = [process.job(hops=2) for _ in range(3)]
    assert list(process.recorder._held) == later  # noqa: SLF001 - the oldest job went, whole, to make room for the fourth
    assert (process.recorder.size_bytes(), process.recorder.spans_held()) == (3 * 2 * RECORD_BYTES, 6)
    assert process.metric("hoptrace.recorder.dropped") == [({}, 2)]

    process.recorder.keep(first, "dead_lettered")
    assert process.exported(first) == []  # nothing left of it here...
    assert process.metric("hoptrace.recorder.partial") == [({"hoptrace.keep.reason": "dead_lettered"}, 1)]  # ...and that is counted
    process.recorder.keep(later[-1], "dead_lettered")
    assert [span.attributes.get("hoptrace.keep.partial") for span in process.exported(later[-1])] == [None, None]


def test_a_full_buffer_is_nothing_the_garbage_collector_walks() -> None:
    process = Process()
    process.job(hops=3)
    gc.collect()  # the tuples of attribute names that every later span of the same kind shares are old now, as in a running process
    for _ in range(50):
        process.job(hops=3)
    gc.collect()  # one pass over what was held since: it stops tracking every job's records, none reaches the oldest generation tracked
    held = list(process.recorder._held.values())  # noqa: SLF001
    assert len(held) == 51
    assert [gc.is_tracked(records) for records in held] == [False] * 51


def test_attributes_user_code_sets_are_weighed_by_their_size() -> None:
    process = Process()
    span = process.span(None, {"hoptrace.job.id": "j-3"})
    span.set_attribute("user.blob", "x" * 10_000)
    span.end()
    assert process.recorder.size_bytes() > RECORD_BYTES + 10_000


def test_history_reaches_back_to_the_oldest_span_held() -> None:
    process = Process()
    assert process.recorder.history_s() == 0.0
    process.job()
    time.sleep(0.2)
    assert 0.2 <= process.recorder.history_s() < 5
    assert process.recorder.size_bytes() == 2 * RECORD_BYTES


def test_keep_from_user_code_checks_its_reason_and_does_nothing_without_a_recorder() -> None:
    recorders.install(None)
    with pytest.raises(ValueError, match="printable"):
        recorders.keep("bad\nreason")
    with pytest.raises(ValueError, match="1 to 64"):
        recorders.keep("x" * 65)
    assert recorders.keep("refund") is False


@pytest.fixture
def channel_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def two_processes(settings: Settings, channel_name: str) -> Iterator[tuple[Process, Process]]:
    """Two recorders joined by a keep channel on the real Redis, as two processes of one pipeline are."""
    processes = (Process(), Process())
    channels = [KeepChannel(each.recorder, settings.redis_url, channel_name) for each in processes]
    for each, channel in zip(processes, channels, strict=True):
        each.recorder.attach(each.provider, channel)
        channel.start()
        assert channel.wait_listening(10)
    yield processes
    for channel in channels:
        channel.stop()


def test_a_keep_made_in_one_process_brings_out_what_another_holds(two_processes: tuple[Process, Process]) -> None:
    upstream, downstream = two_processes
    trace_id = upstream.job(hops=2)  # the upstream stages, long done
    downstream.recorder.keep(trace_id, "failed")
    assert wait_for(lambda: len(upstream.exported(trace_id)) == 2, timeout=10)
    assert {span.attributes["hoptrace.keep.reason"] for span in upstream.exported(trace_id)} == {"failed"}
    assert upstream.recorder.is_kept(trace_id)
    # Counted once, where it was made.
    assert downstream.metric("hoptrace.recorder.kept") == [({"hoptrace.keep.reason": "failed"}, 1)]
    assert upstream.metric("hoptrace.recorder.kept") == []


def test_anything_else_on_the_channel_is_logged_and_ignored(
    settings: Settings, channel_name: str, two_processes: tuple[Process, Process], caplog: pytest.LogCaptureFixture
) -> None:
    upstream, _ = two_processes
    trace_id = upstream.job()
    client = redis.Redis.from_url(settings.redis_url)
    with caplog.at_level(logging.WARNING, logger="hoptrace.clients.redis.keep_channel"):
        for junk in (
            b"",
            b"not a trace",
            f"{trace_id:032x}".encode(),
            f"{trace_id:032x} failed".encode(),
            f"{trace_id:032x} x failed".encode(),
            f"{trace_id:032x} w bad\x1breason".encode(),
            b"\xff" * 40,
            f"{0:032x} w x".encode(),
        ):
            client.publish(f"{channel_name}hoptrace.keep", junk)
        client.publish(f"{channel_name}hoptrace.keep", f"{trace_id:032x} p failed")

        def ignored() -> int:
            return len([record for record in caplog.records if "ignored a message" in record.getMessage()])

        # Each process hears each message on its own listener thread: the other may still be logging when this one exported.
        assert wait_for(lambda: len(upstream.exported(trace_id)) == 2 and ignored() >= 2 * 8, timeout=10)
    client.close()
    assert ignored() == 2 * 8  # each process heard each, and nothing else was logged as junk
    assert [span.attributes.get("hoptrace.keep.partial") for span in upstream.exported(trace_id)] == [True, True]
    assert upstream.metric("hoptrace.recorder.partial") == []  # counted where the keep was made, not again here


def test_the_sampling_shortcut_samples_a_kept_trace_from_then_on() -> None:
    provider = TracerProvider(sampler=TraceIdRatioBased(0.0))
    lean = LeanTracer.of(provider.get_tracer("test"))
    assert lean is not None
    parent = lean.new_context(None)
    assert not parent.trace_flags.sampled
    assert not lean.new_context(parent, lambda trace_id: False).trace_flags.sampled
    kept = lean.new_context(parent, lambda trace_id: trace_id == parent.trace_id)
    assert kept.trace_flags.sampled and kept.trace_id == parent.trace_id
