"""The flight recorder's buffer and keep channel: what it holds, what it hands over when a trace is kept, what it drops and counts."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest
import redis
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from hoptrace.pipeline import recorder as recorders
from hoptrace.pipeline.keep_channel import KeepChannel
from hoptrace.pipeline.recorder import RECORD_BYTES, FlightRecorder
from hoptrace.pipeline.settings import Settings
from tests.traces import wait_for


class RecordOnly(Sampler):
    """Records every span, samples those whose trace id ends in an odd digit (the head sampler's choice, made visible)."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE if trace_id % 2 else Decision.RECORD_ONLY, attributes)

    def get_description(self) -> str:
        return "RecordOnly"


class Process:
    """One process's telemetry: a provider whose sampler records everything, an exporter, a recorder."""

    def __init__(self, max_bytes: int = 2**20) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.provider = TracerProvider(sampler=RecordOnly())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.recorder = FlightRecorder(max_bytes, MeterProvider([self.reader]))
        self.recorder.attach(self.provider)
        self.provider.add_span_processor(self.recorder)
        self.tracer = self.provider.get_tracer("test")

    def job(self, hops: int = 2, sampled: bool = False) -> int:
        """End HOPS nested spans of a new trace (its trace id odd when SAMPLED); the trace id."""
        while True:
            root = self.tracer.start_span("send", kind=SpanKind.PRODUCER, attributes={"hoptrace.job.id": uuid.uuid4().hex})
            trace_id = root.get_span_context().trace_id
            if bool(trace_id % 2) == sampled:
                break
        parent = root
        for hop in range(hops - 1):
            child = self.tracer.start_span(f"process {hop}", trace.set_span_in_context(parent), SpanKind.CONSUMER, {"hoptrace.attempt": 1})
            child.end()
            parent = child
        root.end()
        return trace_id

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


def test_a_kept_trace_comes_out_as_the_sampled_spans_it_would_have_been_and_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    process = Process()
    held, other = process.job(hops=3), process.job(hops=2)
    assert process.exported() == []  # unsampled: held, not exported
    recorded = {record.span_id: record for record in process.recorder._held[held].records}  # noqa: SLF001

    assert process.recorder.keep(held, "failed") is True
    out = process.exported(held)
    assert len(out) == 3
    for span in out:
        original = recorded[span.context.span_id]
        assert span.context.trace_flags.sampled and span.context.trace_id == held
        assert (span.parent.span_id if span.parent else 0) == original.parent_id
        assert (span.name, span.kind, span.start_time, span.end_time) == (original.name, original.kind, original.start, original.end)
        assert dict(span.attributes) == {**dict(zip(original.keys, original.values, strict=True)), "hoptrace.keep.reason": "failed"}
    assert process.exported(other) == []
    assert process.recorder.keep(held, "failed") is False  # once
    assert process.metric("hoptrace.recorder.kept") == [({"hoptrace.keep.reason": "failed"}, 1)]


def test_spans_of_a_kept_trace_that_end_later_go_out_at_once_and_sampled_spans_are_left_to_the_others() -> None:
    process = Process()
    sampled = process.job(sampled=True)
    assert len(process.exported(sampled)) == 2  # exported by its own processor, never again by the recorder
    assert sampled not in process.recorder._held  # noqa: SLF001

    root = process.tracer.start_span("send")
    trace_id = root.get_span_context().trace_id
    while trace_id % 2:
        root = process.tracer.start_span("send")
        trace_id = root.get_span_context().trace_id
    process.recorder.keep(trace_id, "retried")  # kept before anything of it ended
    root.end()
    (span,) = process.exported(trace_id)
    assert span.attributes["hoptrace.keep.reason"] == "retried"


def test_the_oldest_jobs_go_first_when_the_bound_is_reached_and_a_late_keep_is_counted_partial() -> None:
    job_bytes = 2 * RECORD_BYTES + 32  # two spans, and the 32 characters of a job id
    process = Process(max_bytes=3 * job_bytes)
    first = process.job(hops=2)
    later = [process.job(hops=2) for _ in range(3)]
    assert list(process.recorder._held) == later  # noqa: SLF001 - the oldest job went, whole, to make room for the fourth
    assert process.recorder.size_bytes() == 3 * job_bytes
    assert process.metric("hoptrace.recorder.dropped") == [({}, 2)]

    process.recorder.keep(first, "dead_lettered")
    assert process.exported(first) == []  # nothing left of it here...
    assert process.metric("hoptrace.recorder.partial") == [({"hoptrace.keep.reason": "dead_lettered"}, 1)]  # ...and that is counted
    process.recorder.keep(later[-1], "dead_lettered")
    assert [span.attributes.get("hoptrace.keep.partial") for span in process.exported(later[-1])] == [None, None]


def test_history_reaches_back_to_the_oldest_span_held() -> None:
    process = Process()
    assert process.recorder.history_s() == 0.0
    process.job()
    time.sleep(0.2)
    assert 0.2 <= process.recorder.history_s() < 5
    assert process.recorder.size_bytes() > 2 * RECORD_BYTES


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
    with caplog.at_level(logging.WARNING, logger="hoptrace.pipeline.keep_channel"):
        for junk in (
            b"",
            b"not a trace",
            f"{trace_id:032x}".encode(),
            f"{trace_id:032x} bad\x1breason".encode(),
            b"\xff" * 40,
            f"{0:032x} x".encode(),
        ):
            client.publish(f"{channel_name}hoptrace.keep", junk)
        client.publish(f"{channel_name}hoptrace.keep", f"{trace_id:032x} failed")
        assert wait_for(lambda: len(upstream.exported(trace_id)) == 2, timeout=10)
    client.close()
    ignored = [record for record in caplog.records if "ignored a message" in record.getMessage()]
    assert len(ignored) == 2 * 6  # each process heard each


def test_the_sampling_shortcut_samples_a_kept_trace_from_then_on() -> None:
    from hoptrace.pipeline.sdk_internals.spans import LeanTracer

    provider = TracerProvider(sampler=TraceIdRatioBased(0.0))
    lean = LeanTracer.of(provider.get_tracer("test"))
    assert lean is not None
    parent = lean.new_context(None)
    assert not parent.trace_flags.sampled
    assert not lean.new_context(parent, lambda trace_id: False).trace_flags.sampled
    kept = lean.new_context(parent, lambda trace_id: trace_id == parent.trace_id)
    assert kept.trace_flags.sampled and kept.trace_id == parent.trace_id
