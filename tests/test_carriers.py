"""hoptrace.pipeline.carriers, alone, on the header shapes the real brokers deliver.

Getters find the propagation headers of a kafka-python header list, a dict of headers and a
Celery task request, raw; setters replace a key in any letter case instead of adding a copy.
The Kafka and Celery shapes are read back from the real local Kafka and Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from celery import Celery
from celery.app.task import Context as TaskRequest
from celery.worker.request import Request
from kafka import KafkaConsumer, KafkaProducer
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from hoptrace.pipeline.carriers import DICT_SETTER, KAFKA_SETTER, KafkaHeaders, celery_request_pairs, dict_pairs, kafka_headers, kafka_pairs
from hoptrace.pipeline.propagation import extract, fields, inject
from hoptrace.pipeline.settings import Settings

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
WANTED = frozenset({"traceparent", "tracestate", "baggage", "hoptrace-sent-at"})


def _sending() -> Context:
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, False, TraceFlags(1))))


# --- getters -------------------------------------------------------------------------------


def test_kafka_pairs_finds_the_wanted_keys_raw_in_any_case_and_keeps_repeats() -> None:
    headers = [("app", b"\xff"), ("TraceParent", TRACEPARENT.encode()), ("baggage", None), ("traceparent", b"\xfe"), (b"tracestate", b"v=1")]
    assert kafka_pairs(headers, WANTED) == [
        ("traceparent", TRACEPARENT.encode()),
        ("baggage", None),
        ("traceparent", b"\xfe"),
        ("tracestate", b"v=1"),
    ]
    assert kafka_pairs(None, WANTED) == kafka_pairs([], WANTED) == []


def test_dict_pairs_finds_the_wanted_keys_of_any_case() -> None:
    assert dict_pairs({"Baggage": "a=1", "x": "y", "traceparent": 7}, WANTED) == [("baggage", "a=1"), ("traceparent", 7)]
    assert dict_pairs(None, WANTED) == []


def test_celery_request_pairs_reads_attributes_and_a_nested_headers_dict() -> None:
    request = TaskRequest({"id": "t-1", "traceparent": TRACEPARENT, "baggage": b"\xff", "headers": {"traceparent": OTHER, "x": 1}})
    assert sorted(celery_request_pairs(request, WANTED), key=str) == sorted(
        [("traceparent", TRACEPARENT), ("baggage", b"\xff"), ("traceparent", OTHER)], key=str
    )
    assert celery_request_pairs(TaskRequest({"id": "t-2", "headers": None}), WANTED) == []
    assert celery_request_pairs(object(), WANTED) == []


# --- setters -------------------------------------------------------------------------------


@pytest.mark.parametrize("copies", [0, 1, 3])
def test_the_kafka_setter_replaces_every_copy_and_keeps_the_rest_in_order(copies: int) -> None:
    headers: KafkaHeaders = [
        ("app", b"\xff\xfe"),
        *[("TraceParent" if i % 2 else "traceparent", f"old-{i}".encode()) for i in range(copies)],
        ("z", b""),
    ]

    KAFKA_SETTER.set(headers, "traceparent", TRACEPARENT)
    KAFKA_SETTER.set(headers, "x-note", "café")

    assert headers == [("app", b"\xff\xfe"), ("z", b""), ("traceparent", TRACEPARENT.encode()), ("x-note", "café".encode())]


def test_the_dict_setter_replaces_a_key_in_another_case() -> None:
    headers = {"TraceParent": OTHER, "app": "shop"}
    DICT_SETTER.set(headers, "traceparent", TRACEPARENT)
    assert headers == {"app": "shop", "traceparent": TRACEPARENT}


@pytest.mark.parametrize(
    ("carrier", "setter", "pairs"),
    [
        (lambda: [("traceparent", OTHER.encode()), ("traceparent", OTHER.encode())], KAFKA_SETTER, kafka_pairs),
        (lambda: {"TRACEPARENT": OTHER}, DICT_SETTER, dict_pairs),
    ],
    ids=["kafka", "dict"],
)
def test_the_global_propagator_writes_through_a_setter_without_duplicates(carrier: Callable[[], object], setter: object, pairs: Callable) -> None:
    headers = carrier()
    inject(headers, setter, _sending())  # type: ignore[arg-type]

    found = pairs(headers, fields())
    assert sorted(key for key, _ in found) == ["hoptrace-sent-at", "traceparent"]
    extracted = extract(found)
    assert (extracted.parent is None, extracted.fallbacks) == (False, ())
    assert trace.get_current_span(extracted.context).get_span_context().trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": TRACEPARENT, "app": "é"}, [("traceparent", TRACEPARENT.encode()), ("app", "é".encode())]),
        ({"App": "first", "app": "second"}, [("app", b"second")]),  # one key in two letter cases: the last one set wins
        ({}, []),
    ],
)
def test_kafka_headers_of_a_neutral_dict(headers: dict[str, str], expected: KafkaHeaders) -> None:
    assert kafka_headers(headers) == expected


# --- the real brokers' shapes --------------------------------------------------------------


def test_kafka_headers_set_by_the_setter_come_back_from_the_broker_as_one_traceparent(
    settings: Settings, new_topic: Callable[..., str], unique: str
) -> None:
    topic = new_topic("carriers")
    headers: KafkaHeaders = [("traceparent", OTHER.encode()), ("app", b"\xff")]
    propagate.inject(headers, context=_sending(), setter=KAFKA_SETTER)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    producer.send(topic, value=b"{}", headers=headers).get(timeout=30)
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, group_id=f"carriers-{unique}", auto_offset_reset="earliest")
    records = []
    deadline = time.monotonic() + 30
    while not records and time.monotonic() < deadline:
        records = [record for batch in consumer.poll(timeout_ms=500).values() for record in batch]
    consumer.close()

    [record] = records
    assert record.headers == [("app", b"\xff"), ("traceparent", TRACEPARENT.encode())]
    assert kafka_pairs(record.headers, fields()) == [("traceparent", TRACEPARENT.encode())]


def _noop() -> None:
    """The registered task (never run: the test reads its message off the queue)."""


@pytest.fixture
def celery_app(settings: Settings, redis_prefix: str) -> Iterator[Celery]:
    """A Celery app on the real Redis, its keys under this test's prefix, with one task registered."""
    app = Celery("carriers", broker=settings.redis_url, set_as_current=False)
    app.conf.update(broker_transport_options={"global_keyprefix": redis_prefix})
    app.task(_noop, name="carriers.noop")
    yield app
    app.close()


def test_celery_headers_come_back_as_task_request_attributes(celery_app: Celery, unique: str) -> None:
    queue = f"carriers-{unique}"
    headers: dict[str, object] = {"TraceParent": OTHER, "app": "shop"}
    inject(headers, DICT_SETTER, _sending())
    headers["headers"] = {"traceparent": OTHER}  # as some clients nest them (Sentry, dd-trace)
    celery_app.send_task("carriers.noop", queue=queue, headers=headers)

    with celery_app.connection_for_read() as connection:
        message = None
        deadline = time.monotonic() + 10
        while message is None and time.monotonic() < deadline:
            message = connection.default_channel.basic_get(queue, no_ack=True)
    assert message is not None
    request = TaskRequest(Request(message, app=celery_app).request_dict)  # what task.request is on the worker

    pairs = celery_request_pairs(request, fields())
    assert sorted(key for key, _ in pairs) == ["hoptrace-sent-at", "traceparent", "traceparent"]
    assert dict(pairs)["hoptrace-sent-at"] == headers["hoptrace-sent-at"]
    extracted = extract(pairs)
    assert (extracted.parent is None, extracted.fallbacks) == (True, ("duplicate",))  # ours and the nested stale one disagree
