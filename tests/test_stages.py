"""The pipeline model (pipeline.stages, pipeline.handling) and PipelinePublisher.

No broker: the publisher is driven through a recording ``Sender`` (hoptrace's own protocol),
with the real OpenTelemetry SDK behind ``hoptrace.testing.capture_telemetry``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

from hoptrace.pipeline.carriers import dict_pairs
from hoptrace.pipeline.propagation import extract, fields
from hoptrace.pipeline.semconv import BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT, HEADER_ERROR, HEADER_FAILED_STAGE, HEADER_SENT_AT
from hoptrace.pipeline.stage_context import Published, StageContext
from hoptrace.pipeline.stages import (
    CeleryTransport,
    KafkaTransport,
    Pipeline,
    PipelineError,
    RetryPolicy,
    Stage,
    Transport,
    dead_letter_transport,
)
from hoptrace.producers.publisher import BrokerUnavailable, Done, PipelinePublisher
from hoptrace.testing import CapturedSpan, CapturedTelemetry, capture_telemetry


def noop(payload: Mapping[str, Any], ctx: StageContext) -> None:
    """A handler that does nothing."""


def orders() -> Pipeline:
    """validate (Kafka, own group) -> charge (Celery) -> ship (Kafka, default group)."""
    pipeline = Pipeline("orders", baggage_allowlist=("tenant",))
    pipeline.stage("validate", kafka_topic="orders.placed", group="validators", forwards_to=("charge",))(noop)
    pipeline.stage("charge", celery_queue="payments", forwards_to=("ship",), retry=RetryPolicy(5, 1.0))(noop)
    pipeline.stage("ship", kafka_topic="orders.charged", links=True)(noop)
    return pipeline


# --- declaration ---------------------------------------------------------------------------


def test_a_valid_declaration_gives_its_stages_in_order() -> None:
    pipeline = orders()

    assert pipeline.check() is pipeline
    assert [stage.name for stage in pipeline] == ["validate", "charge", "ship"]
    assert pipeline["validate"] == Stage("validate", KafkaTransport("orders.placed", "validators"), noop, ("charge",))
    assert pipeline["charge"] == Stage("charge", CeleryTransport("payments", "hoptrace.orders.charge"), noop, ("ship",), retry=RetryPolicy(5, 1.0))
    assert pipeline["ship"] == Stage("ship", KafkaTransport("orders.charged", "ship"), noop, links=True)
    assert pipeline.baggage_allowlist == ("tenant",)


@pytest.mark.parametrize(
    ("transport", "system", "destination"),
    [(KafkaTransport("orders.placed", "validators"), "kafka", "orders.placed"), (CeleryTransport("payments", "t"), "celery", "payments")],
)
def test_a_transport_names_its_system_and_destination(transport: Transport, system: str, destination: str) -> None:
    assert (transport.system, transport.destination) == (system, destination)


def test_the_stage_decorator_returns_the_handler_unchanged() -> None:
    assert Pipeline("orders").stage("validate", kafka_topic="orders.placed")(noop) is noop


def _declare(*stages: tuple[str, dict[str, Any]]) -> Callable[[], Pipeline]:
    """Declare STAGES (name, keyword arguments of ``Pipeline.stage``) on a fresh "orders" pipeline."""

    def run() -> Pipeline:
        pipeline = Pipeline("orders")
        for name, options in stages:
            pipeline.stage(name, **options)(noop)
        return pipeline

    return run


@pytest.mark.parametrize(
    ("act", "message"),
    [
        pytest.param(
            _declare(("validate", {"kafka_topic": "a"}), ("validate", {"kafka_topic": "b"})),
            "pipeline 'orders' already has a stage 'validate'; give each stage its own name",
            id="duplicate-name",
        ),
        pytest.param(
            _declare(("validate", {})),
            "stage 'validate' needs exactly one transport: kafka_topic=... (with group=...) or celery_queue=...",
            id="no-transport",
        ),
        pytest.param(
            _declare(("validate", {"kafka_topic": "a", "celery_queue": "q"})),
            "stage 'validate' needs exactly one transport: kafka_topic=... (with group=...) or celery_queue=...",
            id="both-transports",
        ),
        pytest.param(
            _declare(("charge", {"celery_queue": "payments", "group": "g"})),
            "stage 'charge' is on Celery queue 'payments'; group= is for Kafka stages, remove it",
            id="group-on-celery",
        ),
        pytest.param(
            _declare(("validate", {"kafka_topic": "a"}), ("audit", {"kafka_topic": "a", "group": "auditors"})),
            "stages 'validate' and 'audit' both consume kafka 'a'; give each its own",
            id="same-topic",
        ),
        pytest.param(
            _declare(("charge", {"celery_queue": "q"}), ("refund", {"celery_queue": "q"})),
            "stages 'charge' and 'refund' both consume celery 'q'; give each its own",
            id="same-queue",
        ),
        pytest.param(
            lambda: _declare(("validate", {"kafka_topic": "a", "forwards_to": ("charge",)}))().check(),
            "stage 'validate' forwards to 'charge', which pipeline 'orders' does not have; declare it or fix forwards_to",
            id="forward-to-unknown",
        ),
        pytest.param(
            lambda: Pipeline("orders").check(),
            "pipeline 'orders' has no stages; declare some with @pipeline.stage(...)",
            id="empty",
        ),
        pytest.param(
            lambda: orders()["missing"],
            "pipeline 'orders' has no stage 'missing'; its stages are: validate, charge, ship",
            id="unknown-stage",
        ),
    ],
)
def test_a_wrong_declaration_names_the_stage_and_the_fix(act: Callable[[], object], message: str) -> None:
    with pytest.raises(PipelineError) as raised:
        act()
    assert str(raised.value) == message


@pytest.mark.parametrize("topic", ["orders placed", "", "x" * 238, "orders/placed", "bestellungen.über", ".", ".."])
def test_an_illegal_kafka_topic_is_refused(topic: str) -> None:
    pipeline = Pipeline("orders")
    with pytest.raises(PipelineError) as raised:
        pipeline.stage("validate", kafka_topic=topic)(noop)
    assert str(raised.value) == (
        f"stage 'validate': {topic!r} is not a legal Kafka topic name (1-237 of letters, digits, '.', '_', '-'; not '.' or '..')"
    )
    assert list(pipeline) == []


def test_the_longest_legal_kafka_topic_leaves_room_for_its_dead_letter_twin() -> None:
    pipeline = Pipeline("orders")
    pipeline.stage("validate", kafka_topic="x" * 237)(noop)
    assert pipeline["validate"].transport == KafkaTransport("x" * 237, "validate")
    assert len(dead_letter_transport(pipeline["validate"].transport).destination) == 249


def test_a_refused_stage_is_not_added() -> None:
    pipeline = orders()
    with pytest.raises(PipelineError):
        pipeline.stage("audit", kafka_topic="orders.placed")(noop)
    assert [stage.name for stage in pipeline] == ["validate", "charge", "ship"]


@pytest.mark.parametrize("name", ["my orders", "", "orders.v2", "orders\n", "bestellungen-ü"])
def test_a_bad_pipeline_name_is_refused(name: str) -> None:
    with pytest.raises(PipelineError) as raised:
        Pipeline(name)
    assert str(raised.value) == f"pipeline name {name!r} must be letters, digits, '_' or '-'"


# --- namespaced, dead letters --------------------------------------------------------------


def test_namespaced_prefixes_topics_groups_and_queues_only() -> None:
    original = orders()

    copy = original.namespaced("ns.")

    assert copy is not original
    assert (copy.name, copy.baggage_allowlist) == ("orders", ("tenant",))
    assert [stage.transport for stage in copy] == [
        KafkaTransport("ns.orders.placed", "ns.validators"),
        CeleryTransport("ns.payments", "hoptrace.orders.charge"),
        KafkaTransport("ns.orders.charged", "ns.ship"),
    ]
    for before, after in zip(original, copy, strict=False):
        assert (after.name, after.handler, after.forwards_to, after.links, after.retry) == (
            before.name,
            before.handler,
            before.forwards_to,
            before.links,
            before.retry,
        )
    assert [stage.transport for stage in original] == [
        KafkaTransport("orders.placed", "validators"),
        CeleryTransport("payments", "hoptrace.orders.charge"),
        KafkaTransport("orders.charged", "ship"),
    ]


@pytest.mark.parametrize("prefix", ["my run.", "x" * 240])
def test_namespaced_refuses_a_prefix_that_makes_an_illegal_topic(prefix: str) -> None:
    with pytest.raises(PipelineError, match="is not a legal Kafka topic name"):
        orders().namespaced(prefix)


@pytest.mark.parametrize(
    ("transport", "parked"),
    [
        (KafkaTransport("orders.placed", "validators"), KafkaTransport("orders.placed.dead-letter", "validators")),
        (
            CeleryTransport("payments", "hoptrace.orders.charge"),
            CeleryTransport("payments.dead-letter", "hoptrace.orders.charge"),
        ),
    ],
)
def test_dead_letter_transport(transport: Transport, parked: Transport) -> None:
    assert dead_letter_transport(transport) == parked


# --- StageContext --------------------------------------------------------------------------


class RecordingPublisher:
    """A ``Publisher`` that remembers what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[tuple[Stage, Mapping[str, Any]]] = []

    def publish(self, stage: Stage, payload: Mapping[str, Any]) -> Published:
        self.published.append((stage, payload))
        return Published("ab" * 16, "job-1")

    def dead_letter(self, stage: Stage, payload: Mapping[str, Any], error: BaseException) -> None:
        raise AssertionError("not used")


def _stage_context(stage: str, publisher: RecordingPublisher) -> tuple[Pipeline, StageContext]:
    pipeline = orders()
    return pipeline, StageContext(pipeline[stage], publisher, {s.name: s for s in pipeline}, attempt=2)


def test_forward_publishes_to_a_stage_in_forwards_to() -> None:
    publisher = RecordingPublisher()
    pipeline, ctx = _stage_context("validate", publisher)

    assert ctx.forward("charge", {"order": 7}) == Published("ab" * 16, "job-1")
    assert publisher.published == [(pipeline["charge"], {"order": 7})]
    assert (ctx.stage, ctx.attempt) == (pipeline["validate"], 2)


@pytest.mark.parametrize("target", ["ship", "validate", "missing"])
def test_forward_to_a_stage_not_in_forwards_to_is_refused(target: str) -> None:
    publisher = RecordingPublisher()
    _, ctx = _stage_context("validate", publisher)

    with pytest.raises(PipelineError) as raised:
        ctx.forward(target, {"order": 7})
    assert str(raised.value) == f"stage 'validate' cannot forward to {target!r}: add it to forwards_to (now ('charge',))"
    assert publisher.published == []


def test_stage_context_reads_job_and_baggage_from_the_current_context() -> None:
    _, ctx = _stage_context("validate", RecordingPublisher())
    assert (ctx.job_id, dict(ctx.baggage)) == (None, {})

    token = otel_context.attach(baggage.set_baggage("tenant", "acme", baggage.set_baggage(BAGGAGE_JOB_ID, "job-9")))
    try:
        assert (ctx.job_id, dict(ctx.baggage)) == ("job-9", {BAGGAGE_JOB_ID: "job-9", "tenant": "acme"})
    finally:
        otel_context.detach(token)


# --- PipelinePublisher ---------------------------------------------------------------------


class RecordingSender:
    """A ``Sender`` that records each message; it calls ``done`` at once, later, or raises."""

    def __init__(self, *, raises: Exception | None = None, later: bool = False) -> None:
        self.sent: list[tuple[Transport, Mapping[str, Any], dict[str, str]]] = []
        self.current_span_ids: list[int] = []
        self.pending: list[Done] = []
        self._raises = raises
        self._later = later

    def send(self, transport: Transport, payload: Mapping[str, Any], headers: Mapping[str, str], done: Done) -> None:
        self.sent.append((transport, payload, dict(headers)))
        self.current_span_ids.append(trace.get_current_span().get_span_context().span_id)
        if self._raises is not None:
            raise self._raises
        if self._later:
            self.pending.append(done)
        else:
            done({"messaging.destination.partition.id": "0"}, None)


@pytest.fixture
def telemetry() -> Iterator[CapturedTelemetry]:
    with capture_telemetry(set_global=False) as captured:
        yield captured


def _publisher(telemetry: CapturedTelemetry, sender: RecordingSender) -> tuple[Pipeline, PipelinePublisher]:
    pipeline = orders()
    return pipeline, PipelinePublisher(pipeline, {"kafka": sender, "celery": sender}, tracer_provider=telemetry.tracer_provider)


def _baggage_members(header: str) -> dict[str, str]:
    return dict(member.split("=", 1) for member in header.split(","))


def _only_span(telemetry: CapturedTelemetry) -> CapturedSpan:
    (span,) = telemetry.spans
    return span


@pytest.mark.parametrize(("stage", "system", "destination"), [("validate", "kafka", "orders.placed"), ("charge", "celery", "payments")])
def test_publish_sends_under_one_producer_span(telemetry: CapturedTelemetry, stage: str, system: str, destination: str) -> None:
    sender = RecordingSender()
    pipeline, publisher = _publisher(telemetry, sender)

    published = publisher.publish(pipeline[stage], {"order": 7})

    span = _only_span(telemetry)
    assert (span.name, span.kind, span.parent_span_id, span.status) == (f"send {destination}", "PRODUCER", None, "UNSET")
    assert re.fullmatch("[0-9a-f]{32}", published.job_id)
    assert span.attributes == {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "hoptrace.pipeline": "orders",
        "hoptrace.stage": stage,
        "hoptrace.job.id": published.job_id,
        "messaging.destination.partition.id": "0",
    }
    assert published == Published(span.trace_id, published.job_id)

    ((transport, payload, headers),) = sender.sent
    assert (transport, payload) == (pipeline[stage].transport, {"order": 7})
    assert sorted(headers) == ["baggage", HEADER_SENT_AT, "traceparent"]
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, span_id, int(flags, 16) & 1) == ("00", span.trace_id, span.span_id, 1)  # sampled
    members = _baggage_members(headers["baggage"])
    assert sorted(members) == [BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT]
    assert members[BAGGAGE_JOB_ID] == published.job_id
    assert float(members[BAGGAGE_JOB_STARTED_AT]) <= float(headers[HEADER_SENT_AT])
    assert re.fullmatch(r"\d{10}\.\d{6}", headers[HEADER_SENT_AT])
    assert sender.current_span_ids == [int(span.span_id, 16)]


def test_a_publish_within_a_job_keeps_its_job_and_trace(telemetry: CapturedTelemetry) -> None:
    sender = RecordingSender()
    pipeline, publisher = _publisher(telemetry, sender)
    first = publisher.publish(pipeline["validate"], {"order": 7})
    received = extract(dict_pairs(sender.sent[0][2], fields()))

    token = otel_context.attach(received.context)
    try:
        second = publisher.publish(pipeline["charge"], {"order": 7})
    finally:
        otel_context.detach(token)

    first_span, second_span = telemetry.spans
    assert second == first
    assert second_span.parent_span_id == first_span.span_id
    assert second_span.attributes["hoptrace.job.id"] == first.job_id
    first_members, second_members = (_baggage_members(headers["baggage"]) for _, _, headers in sender.sent)
    assert second_members == first_members


def test_caller_headers_are_kept_except_the_ones_hoptrace_sets(telemetry: CapturedTelemetry) -> None:
    sender = RecordingSender()
    pipeline, publisher = _publisher(telemetry, sender)

    publisher.publish(
        pipeline["validate"],
        {"order": 7},
        headers={"app-id": "shop", "traceparent": "stale", "baggage": "stale=1", HEADER_SENT_AT: "0", "x-retry": ""},
    )

    ((_, _, headers),) = sender.sent
    assert list(headers) == ["app-id", "x-retry", "traceparent", "baggage", HEADER_SENT_AT]
    assert (headers["app-id"], headers["x-retry"]) == ("shop", "")
    assert headers["traceparent"] != "stale" and headers[HEADER_SENT_AT] != "0"
    assert sorted(_baggage_members(headers["baggage"])) == [BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT]


@pytest.mark.parametrize(
    "stale",
    [
        {"TraceParent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"tracestate": "vendor=stale"},
    ],
)
def test_caller_propagation_headers_never_reach_the_consumer(telemetry: CapturedTelemetry, stale: dict[str, str]) -> None:
    sender = RecordingSender()
    pipeline, publisher = _publisher(telemetry, sender)

    publisher.publish(pipeline["charge"], {"order": 7}, headers=stale)

    ((_, _, headers),) = sender.sent
    received = extract(dict_pairs(headers, fields()))
    assert (received.parent is None, received.fallbacks) == (False, ())
    assert trace.get_current_span(received.context).get_span_context().trace_state.to_header() == ""


@pytest.mark.parametrize(
    ("error", "raised"), [(ValueError("broker down"), ValueError), (ConnectionError("broker down"), BrokerUnavailable)], ids=["refusal", "away"]
)
def test_a_sender_error_ends_the_span_with_error_and_is_raised(telemetry: CapturedTelemetry, error: Exception, raised: type) -> None:
    pipeline, publisher = _publisher(telemetry, RecordingSender(raises=error))

    with pytest.raises(raised) as caught:
        publisher.publish(pipeline["validate"], {"order": 7})
    assert error in (caught.value, caught.value.__cause__)  # a broker that is away: a BrokerUnavailable, from the client's error

    span = _only_span(telemetry)
    assert (span.status, span.status_message) == ("ERROR", "broker down")
    assert [(name, attributes["exception.type"]) for name, attributes in span.events] == [("exception", type(error).__name__)]


@pytest.mark.parametrize(("error", "status"), [(None, "UNSET"), (TimeoutError("no ack in 30 s"), "ERROR")])
def test_a_later_done_ends_the_span_then(telemetry: CapturedTelemetry, error: BaseException | None, status: str) -> None:
    sender = RecordingSender(later=True)
    pipeline, publisher = _publisher(telemetry, sender)

    publisher.publish(pipeline["charge"], {"order": 7})
    assert telemetry.spans == []

    (done,) = sender.pending
    done({"messaging.message.id": "m-1"}, error)
    span = _only_span(telemetry)
    assert (span.status, span.attributes["messaging.message.id"]) == (status, "m-1")
    assert [name for name, _ in span.events] == (["exception"] if error else [])


@pytest.mark.parametrize(
    ("stage", "parked"),
    [
        ("validate", KafkaTransport("orders.placed.dead-letter", "validators")),
        ("charge", CeleryTransport("payments.dead-letter", "hoptrace.orders.charge")),
    ],
)
def test_dead_letter_parks_the_payload_with_the_error(telemetry: CapturedTelemetry, stage: str, parked: Transport) -> None:
    sender = RecordingSender()
    pipeline, publisher = _publisher(telemetry, sender)

    publisher.dead_letter(pipeline[stage], {"order": 7}, ValueError("card declined"))

    ((transport, payload, headers),) = sender.sent
    assert (transport, payload) == (parked, {"order": 7})
    assert sorted(headers) == ["baggage", HEADER_ERROR, HEADER_FAILED_STAGE, HEADER_SENT_AT, "traceparent"]
    assert (headers[HEADER_ERROR], headers[HEADER_FAILED_STAGE]) == ("ValueError: card declined", stage)
    span = _only_span(telemetry)
    assert (span.name, span.attributes["hoptrace.stage"]) == (f"send {parked.destination}", stage)


def test_dead_letter_cuts_a_long_error_to_1000_characters(telemetry: CapturedTelemetry) -> None:
    sender = RecordingSender()
    pipeline, publisher = _publisher(telemetry, sender)

    publisher.dead_letter(pipeline["charge"], {}, ValueError("x" * 5000))

    assert sender.sent[0][2][HEADER_ERROR] == "ValueError: " + "x" * 988
