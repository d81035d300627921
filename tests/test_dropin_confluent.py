"""hoptrace's confluent-kafka instrumentor against the real broker: in process (spans in memory), across clients, and end to end.

Records are fed by kafka-python with hand-written ``traceparent`` headers (``tests.kafka_dropin.feed``)
and read back by kafka-python, so what confluent-kafka sends is checked by another client. The
checks are those of the kafka-python drop-in: the exact span tree, when spans end, the metrics,
untrusted headers, and that the stock instrumentor steps aside.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, Message
from confluent_kafka.cimpl import Consumer as PlainConsumer
from confluent_kafka.cimpl import Producer as PlainProducer
from confluent_kafka.deserializing_consumer import DeserializingConsumer as PlainDeserializingConsumer
from confluent_kafka.error import ValueDeserializationError
from confluent_kafka.serialization import StringDeserializer, StringSerializer
from confluent_kafka.serializing_producer import SerializingProducer as PlainSerializingProducer
from kafka import KafkaConsumer, KafkaProducer
from opentelemetry import trace
from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor

import hoptrace.kafka
from hoptrace.clients.confluent.instrumentor import CLASSES, HoptraceConfluentKafkaInstrumentor
from hoptrace.clients.kafka_python.instrumentor import HoptraceKafkaInstrumentor
from hoptrace.pipeline import semconv
from hoptrace.pipeline.settings import Settings
from hoptrace.testing import CapturedTelemetry
from hoptrace.view.receiver import OtlpReceiver
from tests.kafka_dropin import (
    RELAY_N,
    Headers,
    N,
    beside_stock,
    by_stage,
    check_chain,
    check_forwarded,
    check_lag,
    check_relay_telemetry,
    check_relay_tree,
    check_relayed,
    feed,
    instrumenting,
    lag_of,
    named,
    process_points,
    read_back,
    run_relay,
    telemetry,
    traceparents,
)
from tests.memory_store import TelemetryStore

__all__ = ["telemetry"]  # the fixture (tests.kafka_dropin)

PLAIN_CLASSES = (PlainProducer, PlainConsumer, PlainSerializingProducer, PlainDeserializingConsumer)
"""confluent-kafka's own client classes, which its module names when hoptrace does not instrument it."""


@pytest.fixture
def instrumented(telemetry: CapturedTelemetry) -> Iterator[HoptraceConfluentKafkaInstrumentor]:
    """hoptrace's confluent-kafka instrumentor, instrumented for the test."""
    with instrumenting(HoptraceConfluentKafkaInstrumentor()) as instrumentor:
        yield instrumentor


def consumer_of(settings: Settings, topic: str, group: str, kind: str = "Consumer", **config: Any) -> confluent_kafka.Consumer:
    """A confluent-kafka consumer of TOPIC in GROUP from the earliest record, of whatever class ``confluent_kafka.<KIND>`` is now.

    CONFIG adds to its configuration, with ``_`` for ``.`` in the keys (``value_deserializer=...``).
    """
    base = {"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    consumer = getattr(confluent_kafka, kind)({**base, **{key.replace("_", "."): value for key, value in config.items()}})
    consumer.subscribe([topic])
    return consumer


def producer_of(settings: Settings) -> confluent_kafka.Producer:
    """A confluent-kafka producer (whatever class ``confluent_kafka.Producer`` is now)."""
    return confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap})


def next_record(consumer: confluent_kafka.Consumer, timeout_s: float = 20) -> Message:
    """The next record ``poll()`` hands out (events and empty polls skipped); fails after TIMEOUT_S."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = consumer.poll(0.5)
        if record is not None and record.error() is None:
            return record
    raise AssertionError(f"no record within {timeout_s} s")


def test_each_polled_record_is_processed_in_its_own_span_and_each_produce_is_traced(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceConfluentKafkaInstrumentor
) -> None:
    source, target, group = new_topic("in"), new_topic("out"), f"g{unique}"
    parents = feed(settings, source, N)
    consumer, producer = consumer_of(settings, source, group), producer_of(settings)
    assert isinstance(consumer, PlainConsumer) and type(consumer) is not PlainConsumer
    tracer = trace.get_tracer("test")
    reports: list[tuple[KafkaError | None, int, int]] = []

    def delivered(error: KafkaError | None, record: Message) -> None:  # the caller's own callback, after hoptrace's span ended
        reports.append((error, record.offset(), len(named(telemetry, f"send {target}"))))

    for seen in range(N):
        record = next_record(consumer)
        # The previous record's span ended at this poll; this one's is current.
        assert len(named(telemetry, f"process {source}")) == seen
        assert format(trace.get_current_span().get_span_context().trace_id, "032x") == parents[record.offset()][0]
        with tracer.start_as_current_span("relay") as relay:
            headers = list(record.headers())
            if seen % 2:  # positional, with a dict of headers and the alias ``callback``
                producer.produce(target, record.value(), None, callback=delivered, headers=dict(headers))
            else:
                producer.produce(target, value=record.value(), headers=headers, on_delivery=delivered)
            assert headers == record.headers()  # the caller's list is left alone
            assert trace.get_current_span() is relay  # the send span is not current after produce returns
    assert producer.flush(10) == 0
    assert sorted(reports) == [(None, offset, offset + 1) for offset in range(N)]
    assert len(named(telemetry, f"process {source}")) == N - 1  # the last one is open until close
    check_lag(telemetry, group, N - 1)
    consumer.close()
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached
    assert lag_of(telemetry, group) == []  # a closed consumer reports no lag
    check_relayed(telemetry, settings, parents, (source, target, group))


def test_produce_keeps_every_delivery_callback_and_takes_every_positional_form(
    settings: Settings, new_topic: Callable[..., str], telemetry: CapturedTelemetry, instrumented: HoptraceConfluentKafkaInstrumentor
) -> None:
    target = new_topic("out")
    reports: list[tuple[str, KafkaError | None, int]] = []

    def report(name: str) -> Callable[[KafkaError | None, Message], None]:
        return lambda error, record: reports.append((name, error, record.offset()))

    configured = confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap, "on_delivery": report("configuration")})
    configured.produce(target, b"0")  # the configuration's callback
    configured.produce(target, b"1", None, -1, report("on_delivery"))  # positional on_delivery
    configured.produce(target, b"2", None, -1, None, report("callback"))  # positional callback, the alias
    configured.produce(target, b"3", None, -1, None, None, 0, [("kept", b"yes")])  # all eight positionally: headers last
    assert configured.flush(10) == 0
    only_errors = confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap, "delivery.report.only.error": True})
    only_errors.produce(target, b"4", on_delivery=report("only errors"))  # gets through: no report, the span ends at hand-over
    assert only_errors.flush(10) == 0
    assert sorted(reports) == [("callback", None, 2), ("configuration", None, 0), ("configuration", None, 3), ("on_delivery", None, 1)]
    sends = named(telemetry, f"send {target}")
    assert len(sends) == 5 and {span.status for span in sends} == {"UNSET"}
    assert sorted(span.attributes.get(semconv.MESSAGING_KAFKA_OFFSET, -1) for span in sends) == [-1, 0, 1, 2, 3]
    forwarded = sorted(read_back(settings, target, 5), key=lambda record: record.offset)
    assert [len(traceparents(record)) for record in forwarded] == [1] * 5
    assert ("kept", b"yes") in forwarded[3].headers
    by_span = {span.span_id: span for span in sends}
    assert all(traceparents(record)[0][1] in by_span for record in forwarded)  # each record carries its own send span


def test_a_record_that_does_not_deserialize_ends_its_processing_failed(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceConfluentKafkaInstrumentor
) -> None:
    source, group = new_topic("in"), f"g{unique}"
    parents = feed(settings, source, 3)

    def number(value: bytes, ctx: object) -> int:  # the user's deserializer: record 1 is not one of its records
        if value == b"1":
            raise ValueError("not a number")
        return int(value)

    consumer = consumer_of(settings, source, group, "DeserializingConsumer", value_deserializer=number)
    assert next_record(consumer).value() == 0
    with pytest.raises(ValueDeserializationError):
        next_record(consumer)
    assert trace.get_current_span() is trace.INVALID_SPAN  # the failed record's context is gone with the error
    assert next_record(consumer).value() == 2
    consumer.close()
    process = sorted(named(telemetry, f"process {source}"), key=lambda span: int(span.attributes[semconv.MESSAGING_KAFKA_OFFSET]))
    assert [(span.trace_id, span.parent_span_id) for span in process] == parents
    assert [(span.attributes[semconv.OUTCOME], span.status) for span in process] == [
        ("processed", "UNSET"),
        ("failed", "ERROR"),
        ("processed", "UNSET"),
    ]


def test_storing_a_records_offset_ends_its_processing(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceConfluentKafkaInstrumentor
) -> None:
    source, group = new_topic("in"), f"g{unique}"
    parents = feed(settings, source, 1)
    consumer = consumer_of(settings, source, group, enable_auto_offset_store=False)
    record = next_record(consumer)
    assert format(trace.get_current_span().get_span_context().trace_id, "032x") == parents[0][0]
    assert named(telemetry, f"process {source}") == []
    consumer.store_offsets(record)  # the handler is done with it: the span ends, its context goes
    assert [(span.trace_id, span.parent_span_id) for span in named(telemetry, f"process {source}")] == parents
    assert trace.get_current_span() is trace.INVALID_SPAN
    consumer.close()
    assert len(named(telemetry, f"process {source}")) == 1


def test_each_record_of_a_consume_batch_is_processed_as_the_list_is_iterated(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceConfluentKafkaInstrumentor
) -> None:
    source, target, group = new_topic("in"), new_topic("out"), f"g{unique}"
    parents = feed(settings, source, N)
    consumer, producer = consumer_of(settings, source, group), producer_of(settings)
    seen, deadline = 0, time.monotonic() + 20
    while seen < N and time.monotonic() < deadline:
        batch = consumer.consume(N, 0.5)
        for record in batch:
            assert len(named(telemetry, f"process {source}")) == seen
            with trace.get_tracer("test").start_as_current_span("relay"):
                producer.produce(target, record.value(), headers=record.headers())
            seen += 1
        assert len(named(telemetry, f"process {source}")) == seen  # the last one ended with the iteration
        assert trace.get_current_span() is trace.INVALID_SPAN
    assert seen == N
    producer.flush(10)
    consumer.close()
    check_forwarded(settings, target, check_relay_tree(telemetry.spans, parents, source, target), N)
    assert process_points(telemetry, semconv.CONSUMED_MESSAGES, group) == N


def test_untrusted_headers_never_reach_the_loop_and_are_counted(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceConfluentKafkaInstrumentor
) -> None:
    source, target, group = new_topic("in"), new_topic("out"), f"g{unique}"
    bad: list[Callable[[Headers], Headers]] = [
        lambda good: [("traceparent", b"\xff\xfe-not-utf-8")],
        lambda good: [*good, ("TraceParent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")],  # two different ones: neither is trusted
        lambda good: [("traceparent", b"00-zz-not-a-traceparent")],
        lambda good: [*good, ("baggage", b"k=" + b"v" * 9000)],  # oversized: dropped, the trace goes on
        lambda good: [*good, ("hoptrace-sent-at", b"nan")],  # malformed: dropped, the trace goes on
    ]
    parents = feed(settings, source, len(bad), rewrite=lambda index, good: bad[index](good))
    consumer, producer = consumer_of(settings, source, group), producer_of(settings)
    for _ in bad:
        record = next_record(consumer)
        producer.produce(target, record.value(), headers=record.headers())
    producer.flush(10)
    consumer.close()
    spans = sorted(by_stage(telemetry, group), key=lambda span: span.attributes[semconv.MESSAGING_KAFKA_OFFSET])
    assert [span.parent_span_id is None for span in spans] == [True, True, True, False, False]
    assert [(span.trace_id, span.parent_span_id) for span in spans[3:]] == parents[3:]
    forwarded = sorted(read_back(settings, target, len(bad)), key=lambda each: int(each.value))
    sends = {span.parent_span_id: span for span in named(telemetry, f"send {target}")}
    assert [traceparents(each) for each in forwarded] == [[(sends[span.span_id].trace_id, sends[span.span_id].span_id)] for span in spans]
    assert process_points(telemetry, semconv.PROPAGATION_FALLBACKS, group) == len(bad)


def test_processing_takes_a_confluent_record(settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry) -> None:
    """``hoptrace.kafka.processing(message)`` without the instrumentor: a confluent-kafka record in its own span, child of its sender."""
    source = new_topic("in")
    parents = feed(settings, source, 1)
    consumer = PlainConsumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"g{unique}", "auto.offset.reset": "earliest"})
    consumer.subscribe([source])
    record = next_record(consumer)
    consumer.close()
    with hoptrace.kafka.processing(record, consumer_group="billing") as span:
        assert trace.get_current_span() is span
    (processed,) = by_stage(telemetry, "billing")
    assert (processed.trace_id, processed.parent_span_id, processed.name) == (*parents[0], f"process {source}")
    assert processed.attributes[semconv.MESSAGING_KAFKA_OFFSET] == 0


def test_the_serializing_clients_are_traced_between_their_serializers_and_the_plain_client(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceConfluentKafkaInstrumentor
) -> None:
    source, target, group = new_topic("in"), new_topic("out"), f"g{unique}"
    parents = feed(settings, source, N)
    consumer = consumer_of(settings, source, group, "DeserializingConsumer", value_deserializer=StringDeserializer("utf_8"))
    producer = confluent_kafka.SerializingProducer({"bootstrap.servers": settings.kafka_bootstrap, "value.serializer": StringSerializer("utf_8")})
    assert (type(consumer).__module__, type(producer).__module__) == ("hoptrace.clients.confluent.traced_clients",) * 2
    for seen in range(N):
        record = next_record(consumer)
        assert isinstance(record.value(), str)  # deserialized, inside its process span
        assert len(named(telemetry, f"process {source}")) == seen
        assert format(trace.get_current_span().get_span_context().trace_id, "032x") == parents[record.offset()][0]
        with trace.get_tracer("test").start_as_current_span("relay"):
            producer.produce(target, value=record.value(), headers=record.headers())
    assert producer.flush(10) == 0
    consumer.close()
    assert trace.get_current_span() is trace.INVALID_SPAN
    check_relayed(telemetry, settings, parents, (source, target, group))


def test_uninstrument_puts_the_plain_clients_back_and_the_stock_instrumentor_steps_aside(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    source, target, plain = new_topic("in"), new_topic("out"), new_topic("plain")
    parents = feed(settings, source, N)
    assert tuple(getattr(confluent_kafka, name) for name in CLASSES) == PLAIN_CLASSES
    stock, ours = ConfluentKafkaInstrumentor(), HoptraceConfluentKafkaInstrumentor()
    with beside_stock(stock, ours, caplog):
        assert {getattr(confluent_kafka, name).__module__ for name in CLASSES} == {"hoptrace.clients.confluent.traced_clients"}
        consumer, producer = consumer_of(settings, source, f"g{unique}"), producer_of(settings)
        for _ in range(N):
            record = next_record(consumer)
            with trace.get_tracer("test").start_as_current_span("relay"):
                producer.produce(target, record.value(), headers=record.headers())
        producer.flush(10)
        consumer.close()
        ours.uninstrument()
        assert tuple(getattr(confluent_kafka, name) for name in CLASSES) == PLAIN_CLASSES
        assert not stock.is_instrumented_by_opentelemetry
        before = len(telemetry.spans)
        producer.produce(plain, b"plain")  # an instance made while instrumented: plain behaviour now
        producer.flush(10)
        assert len(telemetry.spans) == before
        assert [record.headers for record in read_back(settings, plain, 1)] == [[]]
        check_forwarded(settings, target, check_relay_tree(telemetry.spans, parents, source, target), N)


def test_a_job_crossing_kafka_python_and_confluent_kafka_is_one_trace(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceConfluentKafkaInstrumentor
) -> None:
    """kafka-python send → confluent-kafka poll, produce → kafka-python iterate: one span per hop, each the child of the one before."""
    first, second = new_topic("first"), new_topic("second")
    kafka_python = HoptraceKafkaInstrumentor()
    kafka_python.instrument()
    try:
        sender = KafkaProducer(bootstrap_servers=settings.kafka_servers)
        with trace.get_tracer("test").start_as_current_span("client"):
            sender.send(first, b"job")
        sender.flush()
        relay, producer = consumer_of(settings, first, f"a{unique}"), producer_of(settings)
        record = next_record(relay)
        producer.produce(second, record.value(), headers=record.headers())
        producer.flush(10)
        relay.close()
        last = KafkaConsumer(
            second, bootstrap_servers=settings.kafka_servers, group_id=f"b{unique}", auto_offset_reset="earliest", consumer_timeout_ms=20000
        )
        received = next(iter(last))
        assert received.value == b"job"
        last.close()
        sender.close()
    finally:
        kafka_python.uninstrument()
    order = ["client", f"send {first}", f"process {first}", f"send {second}", f"process {second}"]
    check_chain(telemetry.spans, order)


@pytest.mark.parametrize("batch", [0, 3])
def test_a_plain_confluent_relay_under_opentelemetry_instrument(
    batch: int, settings: Settings, new_topic: Callable[..., str], unique: str, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    receiver, store = telemetry_store
    source, target, group = new_topic("in"), new_topic("out"), f"relay-{unique}"
    parents = feed(settings, source, RELAY_N)
    env = {
        "RELAY_BOOTSTRAP": settings.kafka_bootstrap,
        "RELAY_SOURCE": source,
        "RELAY_TARGET": target,
        "RELAY_GROUP": group,
        "RELAY_BATCH": str(batch),
    }
    pid = run_relay("confluent_relay", receiver, env)
    check_relay_telemetry(store, pid, settings, parents, (source, target, group))
