"""The lean path (``TracingMiddleware`` with ``LeanTracer``) and the general path (``lean=False``, ``start_span``) are indistinguishable.

One generated scenario runs twice in process, each time on its own tracer and meter provider
with the same resource, sampler, span limits and seeded id generator: once with
``default_middleware`` (lean), once with ``TracingMiddleware(..., lean=False)``,
``MetricsMiddleware`` and ``RetryMiddleware`` (general); which runs first is generated too, as
process-wide caches warm up on the first. The clock hoptrace reads (``time.time``,
``time.perf_counter``) is a test clock that only moves when the scenario says so, so header
times, queue waits and durations are the same in both runs; span times come from the SDK's
own clock and may differ.

A scenario: a pipeline with a Kafka stage (``intake``) and a Celery stage (``charge``) that
forward to each other, each with a handler that succeeds, annotates its span (attributes, an
event, a new name), marks it OK and then fails, ends it itself, fails once, always fails (dead
letter), forwards, forwards inside a span of its own, or forwards and then fails once; retry
policies; process spans as children or linked; a sampler (always on, always off, parent-based
always on, parent-based ratio at a few rates, ratio) and whether the id generator's trace ids are
random; span limits (the defaults, small ones, no events or links); a user span processor that
records what it gets and may copy the baggage onto every span; incoming headers (a valid
``traceparent`` sampled or not, random-trace-id or not, none, broken ones: malformed, upper
case, non-UTF-8, ``None``, not text, duplicated; ``tracestate``; baggage with allowed, unlisted and
job members, oversized and broken baggage; a publish time good or bad; an unrelated header);
a foreign message that is undecodable or redelivered; a broker that refuses one send (raising,
or answering an error) or none, and that answers partition and offset or a task id with some
extra values. The run processes the foreign message with those headers, publishes a job in the
context those headers give, then processes every message sent to a stage, in order, until none
is left.

Proven equal between the runs: each message's outcome; every send (destination, payload, and
the headers exactly: ``traceparent``, ``tracestate``, ``baggage``, ``hoptrace-sent-at``, dead-letter
headers); the spans as exported, encoded with ``SpanEncoder`` and decoded from the protobuf
(trace, span and parent ids, trace state, flags, names, kinds, attributes, events and their
attributes, links, status, dropped counts, resource, scope; times are only checked to lie within
the run and to be ordered); and every metric point an ``InMemoryMetricReader`` collects (names,
units, kinds, attributes, values, counts, bucket counts, min, max, exemplars' span ids; sums
approximately); and what the user's span processor saw at each start and end. The lean run's
hoptrace spans are ``HopSpan`` s and the general run's are not, so the two paths really are the
ones compared. A broker answer with values the SDK cleans (a list, a Decimal) has a test of its own.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, DEFAULT_ON, ParentBasedTraceIdRatio, Sampler, TraceIdRatioBased
from opentelemetry.trace import StatusCode

from hoptrace.pipeline import propagation, semconv
from hoptrace.pipeline.carriers import dict_pairs, kafka_pairs
from hoptrace.pipeline.defaults import default_middleware
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.messages import Delivery
from hoptrace.pipeline.metrics import MetricsMiddleware
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.retries import RetryMiddleware
from hoptrace.pipeline.stage_context import StageContext
from hoptrace.pipeline.stages import Payload, Pipeline, RetryPolicy, Transport
from hoptrace.pipeline.telemetry.otlp_wire import SpanEncoder
from hoptrace.pipeline.tracing import INSTRUMENTATION_NAME, TracingMiddleware
from hoptrace.producers.publisher import Done, PipelinePublisher
from hoptrace.workers.processing import StageProcessor

RESOURCE = Resource({"service.name": "lean-path-test", "service.instance.id": "one"})
ALLOWLIST = ("tenant",)
EPOCH = 1_700_000_000.0
MAX_HOPS = 2
"""A handler forwards a payload only while it has made fewer hops than this."""
MAX_PROCESSED = 8
"""Messages processed per run at most (the forwarding is bounded anyway)."""


class Clock:
    """The clock hoptrace reads while a run is installed: it moves only when ``advance`` is called."""

    def __init__(self) -> None:
        self.elapsed = 0.0

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds

    def time(self) -> float:
        return EPOCH + self.elapsed

    def perf_counter(self) -> float:
        return 1000.0 + self.elapsed

    @contextmanager
    def installed(self) -> Iterator[None]:
        with mock.patch("time.time", self.time), mock.patch("time.perf_counter", self.perf_counter):
            yield


class SeededIds(IdGenerator):
    """Ids from a seeded generator: two with the same seed hand out the same ids, call for call."""

    def __init__(self, seed: int, random_trace_ids: bool) -> None:
        self._random = random.Random(seed)
        self._random_trace_ids = random_trace_ids

    def is_trace_id_random(self) -> bool:
        return self._random_trace_ids

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


class BrokerRefused(RuntimeError):
    """What the test's broker answers to the send it refuses: this message, not a broker that is away (tests/test_outages)."""


class RecordingSender:
    """A Sender whose broker accepts at once, answering partition and offset or a task id (and EXTRA), except the send numbered REFUSE.

    That one is refused by raising (REFUSAL ``raise``, as a client that fails at once) or by answering an error (``answer``).
    """

    def __init__(self, refuse: int | None, refusal: str, extra: Mapping[str, Any]) -> None:
        self.sent: list[tuple[Transport, Payload, dict[str, str]]] = []
        self._refuse, self._refusal, self._extra = refuse, refusal, extra
        self._calls = 0

    def send(self, transport: Transport, payload: Payload, headers: Mapping[str, str], done: Done) -> None:
        number, self._calls = self._calls, self._calls + 1
        if number == self._refuse:
            if self._refusal == "raise":
                raise BrokerRefused(f"send {number} refused")
            done({}, BrokerRefused(f"send {number} refused"))
            return
        self.sent.append((transport, copy.deepcopy(dict(payload)), dict(headers)))
        if transport.system == "kafka":
            done({semconv.MESSAGING_PARTITION: "0", semconv.MESSAGING_KAFKA_OFFSET: len(self.sent) - 1, **self._extra}, None)
        else:
            done({semconv.MESSAGING_MESSAGE_ID: f"task-{len(self.sent) - 1}", **self._extra}, None)


ANSWERS: dict[str, dict[str, Any]] = {  # the first three are values the SDK keeps as they are
    "plain": {},
    "tuple": {"broker.tags": ("a", "b")},
    "list": {"broker.tags": ["a", "b"]},
    "decimal": {"broker.latency": Decimal("0.5")},
    "none": {"broker.node": None},
}
"""What a broker's answer may carry besides partition and offset or message id (``Done`` takes any values)."""


class BaggageToAttributes(SpanProcessor):
    """A user's span processor: copies the parent context's baggage onto each span (as opentelemetry-processor-baggage); records what it gets."""

    def __init__(self, copy_baggage: bool) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self._copy_baggage = copy_baggage

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        members = baggage.get_all(parent_context)
        context, parent = span.get_span_context(), span.parent
        attributes, members_seen = sorted(span.attributes.items()), sorted(members.items())
        self.seen.append(("start", span.name, context.trace_id, context.span_id, parent and parent.span_id, attributes, members_seen))
        if self._copy_baggage:  # user code setting attributes: the lean span's own plain attributes become the SDK's from here on
            span.set_attributes({f"baggage.{key}": str(value) for key, value in members.items()})

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        self.seen.append(("end", span.name, context.span_id, sorted(span.attributes.items()), len(span.events), span.status.status_code))


class OrderRejected(Exception):
    """A handler's own failure."""


BEHAVIOURS = (
    "succeed",
    "annotate",
    "ok_then_fail",
    "end_span_early",
    "fail_once",
    "always_fail",
    "forward",
    "forward_in_own_span",
    "forward_then_fail_once",
)


@dataclass(frozen=True)
class Scenario:
    """Everything one run does; both runs of an example get the same."""

    seed: int
    random_ids: bool
    """Whether the id generator says its trace ids are random (roots then get the W3C random-trace-id flag)."""
    sampler: str
    limits: str
    incoming: tuple[tuple[str, Any], ...]
    redelivered: bool
    undecodable: bool
    """Whether the foreign message's body could not be read (it is dead-lettered without running the handler)."""
    intake: str
    charge: str
    attempts: tuple[int, int]
    links: bool
    copy_baggage: bool
    """Whether the user's span processor sets attributes on every span it starts."""
    refuse: int | None
    refusal: str
    answer: str
    queue_delay: float
    work: float
    lean_first: bool


SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "always_on": lambda: ALWAYS_ON,
    "always_off": lambda: ALWAYS_OFF,
    "parentbased_always_on": lambda: DEFAULT_ON,
    "parentbased_traceidratio 0.25": lambda: ParentBasedTraceIdRatio(0.25),
    "parentbased_traceidratio 0.5": lambda: ParentBasedTraceIdRatio(0.5),
    "parentbased_traceidratio 0.75": lambda: ParentBasedTraceIdRatio(0.75),
    "traceidratio 0.5": lambda: TraceIdRatioBased(0.5),
}
LIMITS: dict[str, Callable[[], SpanLimits]] = {
    "default": SpanLimits,
    "small": lambda: SpanLimits(max_span_attributes=8, max_attribute_length=16, max_events=1, max_links=1, max_event_attributes=2),
    "no events or links": lambda: SpanLimits(max_events=0, max_links=0, max_event_attributes=0, max_link_attributes=0),
}


def handler(behaviour: str, target: str, provider: TracerProvider, clock: Clock, work: float) -> Callable[[Payload, StageContext], None]:
    """A stage handler doing BEHAVIOUR (forwarding to TARGET), taking WORK seconds of the test clock; its own spans on PROVIDER."""

    def handle(payload: Payload, ctx: StageContext) -> None:
        clock.advance(work)
        if behaviour == "annotate":
            span = trace.get_current_span()
            span.set_attribute("shop.order", payload["order"])
            span.set_attributes({"shop.hops": payload["hops"], "shop.tags": ["a", "b"]})
            span.add_event("checked", {"items": 2})
            if isinstance(span, ReadableSpan):
                span.update_name(f"{span.name} (annotated)")
        if behaviour == "ok_then_fail":  # an OK status stays: the error that follows does not replace it
            trace.get_current_span().set_status(StatusCode.OK)
            raise OrderRejected("marked OK, then failed")
        if behaviour == "end_span_early":  # user code ending the process span: hoptrace leaves it as it is
            trace.get_current_span().end()
        if behaviour == "fail_once" and ctx.attempt == 1:
            raise OrderRejected(f"attempt {ctx.attempt} refused")
        if behaviour == "always_fail":
            raise OrderRejected(f"attempt {ctx.attempt} refused")
        if behaviour.startswith("forward") and payload["hops"] < MAX_HOPS:
            onward = {**payload, "hops": payload["hops"] + 1, "job": ctx.job_id, "baggage": sorted(ctx.baggage.items())}
            if behaviour == "forward_in_own_span":
                with provider.get_tracer("shop", "2.0").start_as_current_span("prepare", attributes={"shop.hops": payload["hops"]}) as span:
                    span.add_event("forwarding", {"to": target})
                    ctx.forward(target, onward)
            else:
                ctx.forward(target, onward)
        if behaviour == "forward_then_fail_once" and ctx.attempt == 1:
            raise OrderRejected("forwarded, then failed")

    return handle


@dataclass
class Observed:
    """What one run left behind."""

    outcomes: list[str] = field(default_factory=list)
    sent: list[tuple[str, str, Payload, dict[str, str]]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    times: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    span_types: list[tuple[str, str]] = field(default_factory=list)
    seen_by_user: list[tuple[Any, ...]] = field(default_factory=list)
    window: tuple[int, int] = (0, 0)


def run(scenario: Scenario, lean: bool) -> Observed:
    """Run SCENARIO on the lean path (LEAN) or the general path; what it left behind."""
    clock = Clock()
    limits = LIMITS[scenario.limits]()
    ids = SeededIds(scenario.seed, scenario.random_ids)
    provider = TracerProvider(SAMPLERS[scenario.sampler](), RESOURCE, False, id_generator=ids, span_limits=limits)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    user = BaggageToAttributes(scenario.copy_baggage)
    provider.add_span_processor(user)
    reader = InMemoryMetricReader()
    meters = MeterProvider([reader], resource=RESOURCE, shutdown_on_exit=False)
    instruments = Instruments.of(meters)

    pipeline = Pipeline("shop", baggage_allowlist=ALLOWLIST)
    intake_retry, charge_retry = (RetryPolicy(attempts, 0.0) for attempts in scenario.attempts)
    intake = handler(scenario.intake, "charge", provider, clock, scenario.work)
    charge = handler(scenario.charge, "intake", provider, clock, scenario.work * 3)
    pipeline.stage("intake", kafka_topic="orders.placed", group="intake", forwards_to=("charge",), retry=intake_retry)(intake)
    pipeline.stage("charge", celery_queue="payments", forwards_to=("intake",), links=scenario.links, retry=charge_retry)(charge)
    pipeline.check()
    middleware: list[Middleware]
    if lean:
        middleware = default_middleware(pipeline, instruments, provider)
    else:
        middleware = [TracingMiddleware(pipeline, provider, lean=False), MetricsMiddleware(pipeline, instruments), RetryMiddleware()]
    sender = RecordingSender(scenario.refuse, scenario.refusal, ANSWERS[scenario.answer])
    publisher = PipelinePublisher(pipeline, {"kafka": sender, "celery": sender}, middleware=middleware)
    processors = {stage.name: StageProcessor(pipeline, stage, publisher, middleware=middleware) for stage in pipeline}

    observed = Observed()

    def process(stage: str, delivery: Delivery | None, note: str = "") -> None:
        """Process DELIVERY at STAGE and note its outcome (or, without a delivery, note NOTE)."""
        if delivery is None:
            observed.outcomes.append(f"{stage}: {note}")
            return
        try:
            observed.outcomes.append(f"{stage}: {processors[stage].process(delivery).value}")
        except Exception as error:  # noqa: BLE001 - a dead letter the broker refused: the worker keeps the message
            observed.outcomes.append(f"{stage}: raised {type(error).__name__}: {error}")

    saved = random.getstate()
    random.seed(scenario.seed)  # job ids
    started = time.time_ns()
    try:
        with clock.installed():
            drive(scenario, clock, publisher, pipeline, sender, process)
    finally:
        random.setstate(saved)
    observed.window = (started, time.time_ns())
    observed.sent = [(transport.system, transport.destination, payload, headers) for transport, payload, headers in sender.sent]
    finished = exporter.get_finished_spans()
    observed.span_types = [(span.instrumentation_scope.name, type(span).__name__) for span in finished]
    observed.spans, observed.times = decoded(SpanEncoder().encode(finished))
    observed.metrics = points(reader)
    observed.seen_by_user = user.seen
    return observed


def drive(
    scenario: Scenario,
    clock: Clock,
    publisher: PipelinePublisher,
    pipeline: Pipeline,
    sender: RecordingSender,
    process: Callable[..., None],
) -> None:
    """The run itself: the foreign message, the published job, then every message sent to a stage, in order."""
    incoming = list(scenario.incoming)
    offset = {semconv.MESSAGING_PARTITION: "3", semconv.MESSAGING_KAFKA_OFFSET: 41}
    problem = "body is not JSON: Expecting value" if scenario.undecodable else None
    process("intake", Delivery({"order": 1, "hops": 0}, kafka_pairs(incoming, fields()), offset, problem, scenario.redelivered))
    clock.advance(scenario.queue_delay)
    token = otel_context.attach(propagation.extract(kafka_pairs(incoming, fields()), ALLOWLIST).context)
    try:
        published = publisher.publish(pipeline["intake"], {"order": 2, "hops": 0})
        process("published", None, f"{published.trace_id} {published.job_id}")
    except BrokerRefused as error:
        process("published", None, f"raised {error}")
    finally:
        otel_context.detach(token)
    stages = {(stage.transport.system, stage.transport.destination): stage for stage in pipeline}
    done = 0
    while done < len(sender.sent) and done < MAX_PROCESSED:
        transport, payload, headers = sender.sent[done]
        stage = stages.get((transport.system, transport.destination))
        if stage is not None:  # not a dead letter
            clock.advance(scenario.queue_delay)
            payload = copy.deepcopy(payload)
            if transport.system == "kafka":
                pairs = kafka_pairs([(key, value.encode()) for key, value in headers.items()], fields())
                delivery = Delivery(payload, pairs, {**offset, semconv.MESSAGING_KAFKA_OFFSET: done})
            else:
                delivery = Delivery(payload, dict_pairs(headers, fields()), {semconv.MESSAGING_MESSAGE_ID: f"task-{done}"})
            process(stage.name, delivery)
        done += 1


def _any(value: Any) -> Any:
    return MessageToDict(value)


def _attributes(pairs: Any) -> list[tuple[str, Any]]:
    return [(pair.key, _any(pair.value)) for pair in pairs]


def decoded(body: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, int, tuple[int, ...]]]]:
    """The spans of an OTLP request as decoded from the wire: every field but the times, and the times apart."""
    request = ExportTraceServiceRequest.FromString(body)
    spans, times = [], []
    for resource_spans in request.resource_spans:
        resource = (_attributes(resource_spans.resource.attributes), resource_spans.schema_url)
        for scope_spans in resource_spans.scope_spans:
            scope = (scope_spans.scope.name, scope_spans.scope.version, _attributes(scope_spans.scope.attributes), scope_spans.schema_url)
            for span in scope_spans.spans:
                spans.append(
                    {
                        "resource": resource,
                        "scope": scope,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "trace_state": span.trace_state,
                        "flags": span.flags,
                        "name": span.name,
                        "kind": span.kind,
                        "attributes": _attributes(span.attributes),
                        "dropped_attributes_count": span.dropped_attributes_count,
                        "events": [(event.name, _attributes(event.attributes), event.dropped_attributes_count) for event in span.events],
                        "dropped_events_count": span.dropped_events_count,
                        "links": [
                            (link.trace_id.hex(), link.span_id.hex(), link.trace_state, _attributes(link.attributes), link.dropped_attributes_count)
                            + (link.flags,)
                            for link in span.links
                        ],
                        "dropped_links_count": span.dropped_links_count,
                        "status": (span.status.code, span.status.message),
                    }
                )
                times.append((span.start_time_unix_nano, span.end_time_unix_nano, tuple(event.time_unix_nano for event in span.events)))
    return spans, times


def points(reader: InMemoryMetricReader) -> list[dict[str, Any]]:
    """Every metric point the reader collects now, comparable (exemplars by value and span; sums kept apart for an approximate check)."""
    data = reader.get_metrics_data()
    found = []
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = type(metric.data).__name__
                temporality = getattr(metric.data, "aggregation_temporality", None)
                monotonic = getattr(metric.data, "is_monotonic", None)
                for point in metric.data.data_points:
                    entry: dict[str, Any] = {
                        "scope": scope_metrics.scope.name,
                        "name": metric.name,
                        "unit": metric.unit,
                        "description": metric.description,
                        "kind": (kind, temporality, monotonic),
                        "attributes": sorted((point.attributes or {}).items()),
                    }
                    if isinstance(point, HistogramDataPoint):
                        entry.update(
                            count=point.count,
                            bucket_counts=tuple(point.bucket_counts),
                            explicit_bounds=tuple(point.explicit_bounds),
                            min=point.min,
                            max=point.max,
                            sum=point.sum,
                            exemplars=sorted(
                                (e.value, e.trace_id, e.span_id, sorted((e.filtered_attributes or {}).items())) for e in point.exemplars
                            ),
                        )
                    else:
                        assert isinstance(point, NumberDataPoint)
                        entry["value"] = point.value
                    found.append(entry)
    return sorted(found, key=lambda entry: (entry["name"], repr(entry["attributes"])))


def assert_same(lean: Observed, general: Observed) -> None:
    """The comparison this module is about: field by field, naming what differs."""
    assert lean.outcomes == general.outcomes
    assert len(lean.sent) == len(general.sent), (lean.sent, general.sent)
    for number, (ours, theirs) in enumerate(zip(lean.sent, general.sent, strict=True)):
        assert ours == theirs, f"send {number} differs"
        headers = ours[3]
        assert float(headers[semconv.HEADER_SENT_AT]) >= EPOCH
        assert "traceparent" in headers
    assert [name for name, _ in lean.span_types] == [name for name, _ in general.span_types]
    assert len(lean.spans) == len(general.spans), ([s["name"] for s in lean.spans], [s["name"] for s in general.spans])
    for number, (ours, theirs) in enumerate(zip(lean.spans, general.spans, strict=True)):
        for key in theirs:
            assert ours[key] == theirs[key], f"span {number} ({theirs['name']}): {key} differs"
    for observed in (lean, general):
        low, high = observed.window
        for start, end, events in observed.times:
            assert low <= start <= end <= high
            assert all(start <= each <= end for each in events)
    assert [without_sum(point) for point in lean.metrics] == [without_sum(point) for point in general.metrics]
    for ours, theirs in zip(lean.metrics, general.metrics, strict=True):
        if "sum" in theirs:
            assert ours["sum"] == pytest.approx(theirs["sum"], rel=1e-9, abs=1e-12), ours["name"]
    assert lean.seen_by_user == general.seen_by_user, "the user's span processor saw different spans"


def without_sum(point: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in point.items() if key != "sum"}


def run_both(scenario: Scenario) -> tuple[Observed, Observed]:
    """The lean run and the general run of SCENARIO, in the order it says."""
    if scenario.lean_first:
        lean = run(scenario, lean=True)
        return lean, run(scenario, lean=False)
    general = run(scenario, lean=False)
    return run(scenario, lean=True), general


def check(scenario: Scenario) -> tuple[Observed, Observed]:
    lean, general = run_both(scenario)
    ours = {scope for scope, kind in lean.span_types if kind == "HopSpan"}
    assert ours <= {INSTRUMENTATION_NAME}
    assert all(kind == "HopSpan" for scope, kind in lean.span_types if scope == INSTRUMENTATION_NAME), "the lean run did not take the lean path"
    assert not any(kind == "HopSpan" for _, kind in general.span_types), "the general run took the lean path"
    assert_same(lean, general)
    return lean, general


# Incoming headers.

hex_ids = st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1))
valid_traceparents = st.builds(lambda ids, flags: f"00-{ids[0]:032x}-{ids[1]:016x}-{flags:02x}", hex_ids, st.sampled_from([0, 1, 2, 3]))
broken_traceparents = st.one_of(
    st.sampled_from(
        [
            "00-xyz",
            "",
            "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
            "ff-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            "00-0AF7651916CD43DD8448EB211C80319C-00F067AA0BA902B7-01",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01-extra",
            None,
            b"\xff\xfe\x00",
            12345,
        ]
    ),
    st.text(max_size=60),
)
tracestates = st.sampled_from(["vendor=abc", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "=,,broken", "a" * 600 + "=x"])
baggages = st.sampled_from(
    [
        "tenant=acme",
        "tenant=acme,secret=s3cr3t",
        "secret=only",
        "tenant=ac%20me;prop=1",
        "hoptrace.job.id=job-from-upstream,hoptrace.job.started_at=1699999990.5,tenant=acme",
        "hoptrace.job.id=job-without-start",
        "hoptrace.job.id=job-bad-start,hoptrace.job.started_at=nan",
        "tenant",
        ",,,",
        "tenant=" + "x" * 9000,  # beyond the 8192 bytes read
        ",".join(f"m{n}=v" for n in range(200)) + ",tenant=many",
    ]
)
sent_ats = st.sampled_from([f"{EPOCH - 2.5:.6f}", f"{EPOCH + 100:.6f}", "yesterday", "inf"])


@st.composite
def incoming_headers(draw: st.DrawFn) -> tuple[tuple[str, Any], ...]:
    """Header pairs as a Kafka record may bring them (values str, bytes, None or worse; keys in any case, repeated)."""
    pairs: list[tuple[str, Any]] = []
    if draw(st.booleans()):
        pairs.append((draw(st.sampled_from(["traceparent", "traceparent", "TraceParent"])), draw(st.one_of(valid_traceparents, broken_traceparents))))
        if draw(st.integers(0, 4)) == 0:  # a second traceparent, the same or another
            pairs.append(("traceparent", draw(st.one_of(st.just(pairs[0][1]), valid_traceparents))))
    if draw(st.booleans()):
        pairs.append(("tracestate", draw(tracestates)))
    if draw(st.booleans()):
        pairs.append(("baggage", draw(baggages)))
    if draw(st.integers(0, 2)) == 0:
        pairs.append((semconv.HEADER_SENT_AT, draw(sent_ats)))
    if draw(st.integers(0, 3)) == 0:
        pairs.append(("x-unrelated", "kept out"))
    as_bytes = draw(st.booleans())  # Kafka delivers bytes
    return tuple((key, value.encode() if as_bytes and isinstance(value, str) else value) for key, value in draw(st.permutations(pairs)))


scenarios = st.builds(
    Scenario,
    seed=st.integers(0, 2**32),
    random_ids=st.booleans(),
    sampler=st.sampled_from(list(SAMPLERS)),
    limits=st.sampled_from(["default", "default", *LIMITS]),
    incoming=incoming_headers(),
    redelivered=st.booleans(),
    undecodable=st.integers(0, 5).map(lambda n: n == 0),
    intake=st.sampled_from(BEHAVIOURS),
    charge=st.sampled_from(BEHAVIOURS),
    attempts=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    links=st.booleans(),
    copy_baggage=st.booleans(),
    refuse=st.one_of(st.none(), st.none(), st.integers(0, 4)),
    refusal=st.sampled_from(["raise", "answer"]),
    answer=st.sampled_from(["plain", "plain", "tuple", "none"]),
    queue_delay=st.sampled_from([0.0, 0.0004, 0.003, 0.2, 7.0]),
    work=st.sampled_from([0.0, 0.0002, 0.02, 1.5]),
    lean_first=st.booleans(),
)

VALID = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00"
RANDOM_UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-02"
HUGE_BAGGAGE = "tenant=" + "x" * 9000
BASE = Scenario(
    seed=1,
    random_ids=False,
    sampler="always_on",
    limits="default",
    incoming=(),
    redelivered=False,
    undecodable=False,
    intake="forward",
    charge="succeed",
    attempts=(3, 3),
    links=False,
    copy_baggage=False,
    refuse=None,
    refusal="raise",
    answer="plain",
    queue_delay=0.003,
    work=0.02,
    lean_first=True,
)
"""The scenario the explicit examples vary."""


def variant(**changes: Any) -> Scenario:
    return Scenario(**{**BASE.__dict__, **changes})


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios)
@example(BASE)
@example(variant(incoming=(("traceparent", VALID), ("tracestate", "vendor=abc"), ("baggage", "tenant=acme,secret=x"))))
@example(variant(sampler="parentbased_traceidratio 0.5", incoming=(("traceparent", UNSAMPLED),), intake="forward_in_own_span"))
@example(variant(sampler="always_off", intake="forward_in_own_span", charge="annotate"))
@example(variant(sampler="traceidratio 0.5", random_ids=True, incoming=(("traceparent", RANDOM_UNSAMPLED), ("tracestate", "vendor=abc"))))
@example(variant(intake="fail_once", charge="always_fail", attempts=(2, 2)))
@example(variant(intake="forward_then_fail_once", charge="forward", links=True))
@example(variant(limits="small", intake="annotate", charge="always_fail", incoming=(("traceparent", b"\xff\xfe"), ("baggage", HUGE_BAGGAGE))))
@example(variant(refuse=1, intake="forward", charge="forward"))
@example(variant(refuse=0, intake="always_fail", attempts=(1, 1)))
@example(variant(refuse=2, refusal="answer", intake="forward", charge="forward"))
@example(variant(copy_baggage=True, incoming=(("baggage", "tenant=acme"),)))
@example(variant(answer="tuple", undecodable=True, redelivered=True))
@example(variant(limits="no events or links", intake="ok_then_fail", charge="end_span_early", links=True, attempts=(2, 1)))
@example(variant(answer="none"))
def test_the_lean_path_and_the_general_path_are_indistinguishable(scenario: Scenario) -> None:
    """Outcomes, every send's headers, the spans as decoded from the wire and every metric point are the same on both paths."""
    check(scenario)


@pytest.mark.parametrize("answer", ["list", "decimal"])
def test_a_brokers_answer_with_values_the_sdk_cleans_reaches_exporters_and_processors_alike(answer: str) -> None:
    """A sender's answer may hold any values (``Done`` takes ``Mapping[str, Any]``): a list, a Decimal; the SDK cleans them on the send span."""
    check(variant(answer=answer, intake="forward", charge="forward"))


def test_the_comparison_sees_the_spans_headers_and_metrics_it_compares() -> None:
    """A sampled forwarding run leaves spans of both scopes, exceptions, links, sends and histogram points to compare (the test is not vacuous)."""
    lean, general = check(variant(intake="forward_in_own_span", charge="forward_then_fail_once", links=True))
    names = [span["name"] for span in lean.spans]
    assert {"process orders.placed", "send payments", "process payments", "send orders.placed", "prepare"} <= set(names)
    assert any(event[0] == "exception" for span in lean.spans for event in span["events"])
    assert any(span["links"] for span in lean.spans)
    assert len(lean.sent) >= 3 and all("baggage" in headers for *_, headers in lean.sent)
    histograms = [point for point in lean.metrics if "count" in point]
    assert histograms and any(point["exemplars"] for point in histograms)
    assert {point["name"] for point in lean.metrics} >= {"messaging.process.duration", "hoptrace.queue.wait", "hoptrace.job.latency"}
    assert lean.seen_by_user and general.seen_by_user
