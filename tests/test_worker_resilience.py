"""The worker never crashes, never loses a message, and stops in bounded time.

examples/orders with real ``hoptrace worker`` processes, real Kafka and Redis and a real OTLP
receiver: broken trace headers on both transports, retries and dead-lettering, prefork
children that exit after every task, and SIGTERM while the OTLP endpoint hangs.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.protocol.producer import ProduceRequest
from kafka.record.memory_records import MemoryRecordsBuilder

from hoptrace.pipeline.settings import Settings
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import KAFKA_CLIENTS, SilentEndpoint, run_hoptrace
from tests.memory_store import TelemetryStore
from tests.processes import Process, own_tracebacks
from tests.test_fuzz_headers import fuzz_settings
from tests.traces import PublishedJob, chain, latest_totals, orders_chain_names, outbox, published_jobs, wait_for, wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"
TWO_MB = 2_000_000

pytestmark = pytest.mark.usefixtures("namespace_cleanup")


# --- helpers -----------------------------------------------------------------------------------


def _publish(env: dict[str, str], payload: dict[str, str]) -> list[PublishedJob]:
    """Start one orders job at validate with ``hoptrace publish --payload``."""
    return published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--payload", json.dumps(payload)).stdout)


def _order_ids(notes: Iterable[dict[str, str | None]]) -> list[str]:
    """The order ids of outbox NOTES, sorted."""
    return sorted(str(note["order_id"]) for note in notes)


def _assert_each_delivered_once(settings: Settings, namespace: str, expected: list[str], worker: Process) -> None:
    """After WORKER stopped (and flushed): the outbox holds each of EXPECTED once, and the worker printed no traceback."""
    log = worker.output()
    assert _order_ids(outbox(settings, namespace)) == expected
    assert own_tracebacks(log) == [], log


def _counter(store: TelemetryStore, name: str, stage: str) -> float:
    """A cumulative message counter's total for STAGE, over every process (a Celery prefork child too)."""
    points = store.metrics(name)
    for point in points:
        assert (point.unit, point.kind, point.monotonic) == ("{message}", "sum", True), point
    return latest_totals(points, {"hoptrace.stage": stage})


def _spans_named(store: TelemetryStore, name: str) -> list[ReceivedSpan]:
    return [span for span in store.spans() if span.name == name]


def _new_trace(store: TelemetryStore, name: str, key: str, value: object, case: str) -> list[ReceivedSpan]:
    """The chain of the trace that the one span NAME whose attribute KEY is VALUE started as a new root (CASE names a failure)."""
    found = [span for span in _spans_named(store, name) if span.attributes[key] == value]
    assert len(found) == 1, (case, found)
    (span,) = found
    assert span.parent_span_id is None, case
    return chain(store.traces()[span.trace_id])


def _continuation_names(namespace: str, hops: int) -> list[str]:
    """Names of a job's chain from the process span of the last HOPS hops of orders on (a root there)."""
    names = [name for name, _ in orders_chain_names(namespace)]
    return names[len(names) - 2 * hops + 1 :]


def _traceparent(trace_byte: str, span_byte: str) -> bytes:
    return f"00-{trace_byte * 32}-{span_byte * 16}-01".encode()


def _produce_raw(admin: KafkaAdminClient, topic: str, value: bytes, headers: list[tuple[str, bytes | None]]) -> int:
    """Produce one record to partition 0 of TOPIC (one broker) as it is, a null header value included; its offset.

    The record format (and the Java client) allow a null header value, but kafka-python's
    ``KafkaProducer.send`` refuses anything but bytes, so this builds the record batch and the
    produce request itself and sends them on the admin client's connection.
    """
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=16384)
    builder.append(int(time.time() * 1000), None, value, headers)
    builder.close()
    topic_data = ProduceRequest.TopicProduceData
    request = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=30000,
        topic_data=[topic_data(name=topic, partition_data=[topic_data.PartitionProduceData(index=0, records=builder.buffer())])],
        max_version=9,
    )

    async def send() -> Any:
        return await admin._manager.send(request)

    (answer,) = admin._manager.run(send).responses[0].partition_responses
    assert answer.error_code == 0, answer
    return int(answer.base_offset)


def _records(settings: Settings, topic: str, timeout: float = 30) -> list[ConsumerRecord]:
    """Every record of partition 0 of TOPIC, from the beginning to the current end."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None, enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition])[partition]
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while consumer.position(partition) < end and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


# --- 1. broken trace headers on Kafka ----------------------------------------------------------

BAD_KAFKA_HEADERS: dict[str, list[tuple[str, bytes | None]]] = {
    "non-utf8": [("traceparent", b"00-\xff\xfe\xfd-" + b"\x80" * 16)],
    "none-value": [("traceparent", None)],
    "duplicate": [("traceparent", _traceparent("a", "b")), ("traceparent", _traceparent("c", "d"))],
    "malformed": [("traceparent", b"00-zzz")],
    "oversized-baggage": [("baggage", b"tenant=" + b"x" * TWO_MB)],
}


def test_broken_kafka_headers_start_new_traces_and_every_order_gets_through(
    settings: Settings,
    namespace: str,
    kafka_admin: KafkaAdminClient,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    topic = f"{namespace}orders.placed"
    expected = sorted([f"bad-{case}" for case in BAD_KAFKA_HEADERS] + ["good-control"])
    kafka_admin.create_topics([NewTopic(topic, 1, 1)])
    with hoptrace_worker(ORDERS) as worker:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, max_request_size=4 * 1024 * 1024)
        try:
            futures = {
                case: producer.send(topic, json.dumps({"order_id": f"bad-{case}"}).encode(), headers=headers)
                for case, headers in BAD_KAFKA_HEADERS.items()
                if all(value is not None for _, value in headers)
            }
            producer.flush()
            offsets = {case: future.get(timeout=30).offset for case, future in futures.items()}
        finally:
            producer.close()
        offsets["none-value"] = _produce_raw(kafka_admin, topic, b'{"order_id": "bad-none-value"}', BAD_KAFKA_HEADERS["none-value"])
        control = _publish(hoptrace_env, {"order_id": "good-control"})
        assert _order_ids(wait_for_outbox(settings, namespace, len(expected))) == expected
        assert worker.popen.poll() is None, worker.output()
    # Stopped: the workers flushed, and a message processed twice would be in the outbox by now.
    _assert_each_delivered_once(settings, namespace, expected, worker)
    froze = [line for line in worker.output().splitlines() if "objects alive after start-up" in line]
    assert len(froze) == 3, froze  # each process of the worker (validate, ship, the Celery stages) froze its start-up heap once
    assert _counter(store, "hoptrace.propagation.fallbacks", "validate") == len(BAD_KAFKA_HEADERS)
    assert [_counter(store, "hoptrace.propagation.fallbacks", stage) for stage in ("charge", "ship", "notify")] == [0, 0, 0]

    for case, offset in offsets.items():
        ordered = _new_trace(store, f"process {topic}", "messaging.kafka.offset", offset, case)
        assert [each.name for each in ordered] == _continuation_names(namespace, 4), case
        assert all(each.status_code == "UNSET" for each in ordered), case
        # The job went on under a new job id, from the second hop to the outbox.
        job_ids = {each.attributes["hoptrace.job.id"] for each in ordered[1:]}
        assert len(job_ids) == 1 and "" not in job_ids, (case, job_ids)
    (good,) = control
    assert [(span.name, span.kind) for span in chain(store.traces()[good.trace_id])] == orders_chain_names(namespace)


# --- 2. broken trace headers on Celery ---------------------------------------------------------

BAD_CELERY_HEADERS: dict[str, dict[str, object]] = {
    "garbage": {"traceparent": "garbage"},
    "oversized-baggage": {"baggage": "x" * TWO_MB},
    "not-text": {"traceparent": 42},
}


def test_broken_celery_headers_start_new_traces_and_every_order_gets_through(
    settings: Settings,
    namespace: str,
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    expected = sorted(f"bad-{case}" for case in BAD_CELERY_HEADERS)
    with hoptrace_worker(ORDERS, "--stage", "charge", "--stage", "ship", "--stage", "notify") as worker:
        app = Celery("bad-headers", broker=settings.redis_url, set_as_current=False)
        try:
            task_ids = {
                case: app.send_task("hoptrace.orders.charge", args=({"order_id": f"bad-{case}"},), queue=f"{namespace}payments", headers=headers).id
                for case, headers in BAD_CELERY_HEADERS.items()
            }
        finally:
            app.close()
        assert _order_ids(wait_for_outbox(settings, namespace, len(expected))) == expected
        assert worker.popen.poll() is None, worker.output()
    _assert_each_delivered_once(settings, namespace, expected, worker)
    assert _counter(store, "hoptrace.propagation.fallbacks", "charge") == len(BAD_CELERY_HEADERS)
    for case, task_id in task_ids.items():
        ordered = _new_trace(store, f"process {namespace}payments", "messaging.message.id", task_id, case)
        assert [each.name for each in ordered] == _continuation_names(namespace, 3), case


# --- 3. retries and dead-lettering -------------------------------------------------------------


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_a_failing_order_is_retried_then_dead_lettered_and_a_flaky_one_gets_through(
    settings: Settings,
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    placed, dead_letter, payments = f"{namespace}orders.placed", f"{namespace}orders.placed.dead-letter", f"{namespace}payments"
    with hoptrace_worker(ORDERS) as worker:
        (x,) = _publish(hoptrace_env, {"order_id": "x", "fail_at": "validate"})
        (y,) = _publish(hoptrace_env, {"order_id": "y", "flaky_at": "charge"})
        assert _order_ids(wait_for_outbox(settings, namespace, 1)) == ["y"]
        assert store.wait_until(lambda s: any(span.name == f"send {dead_letter}" for span in s.spans()), timeout=60), worker.output()
        assert worker.popen.poll() is None, worker.output()

    assert _order_ids(outbox(settings, namespace)) == ["y"]
    (parked,) = _records(settings, dead_letter)
    assert json.loads(parked.value) == {"order_id": "x", "fail_at": "validate"}
    headers = dict(parked.headers)
    assert headers["hoptrace-error"].decode().startswith("OrderRejected: "), headers
    assert headers["hoptrace-failed-stage"] == b"validate"

    traces = store.traces()
    x_spans = traces[x.trace_id]
    (send_x,) = [span for span in x_spans if span.name == f"send {placed}"]
    attempts = sorted((span for span in x_spans if span.name == f"process {placed}"), key=lambda span: span.attributes["hoptrace.attempt"])
    assert [span.attributes["hoptrace.attempt"] for span in attempts] == [1, 2, 3]
    assert [span.parent_span_id for span in attempts] == [send_x.span_id] * 3
    assert [span.status_code for span in attempts] == ["ERROR"] * 3
    assert [[name for name, _ in span.events] for span in attempts] == [["exception"]] * 3
    assert [span.attributes["hoptrace.outcome"] for span in attempts] == ["retried", "retried", "dead_lettered"]
    (send_dead,) = [span for span in x_spans if span.name == f"send {dead_letter}"]
    assert send_dead.parent_span_id == attempts[2].span_id
    assert len(x_spans) == 5, [span.name for span in x_spans]

    y_spans = traces[y.trace_id]
    (send_y,) = [span for span in y_spans if span.name == f"send {payments}"]
    tries = sorted((span for span in y_spans if span.name == f"process {payments}"), key=lambda span: span.attributes["hoptrace.attempt"])
    assert [(span.attributes["hoptrace.attempt"], span.attributes["hoptrace.outcome"]) for span in tries] == [(1, "retried"), (2, "processed")]
    assert tries[0].status_code == "ERROR"
    assert tries[1].status_code in ("UNSET", "OK")
    assert [span.parent_span_id for span in tries] == [send_y.span_id] * 2
    # Without the failed first try, y's trace is the usual chain of 8, continued by the second try.
    assert [(span.name, span.kind) for span in chain([span for span in y_spans if span is not tries[0]])] == orders_chain_names(namespace)
    assert len(y_spans) == 9, [span.name for span in y_spans]

    retries = {stage: _counter(store, "hoptrace.stage.retries", stage) for stage in ("validate", "charge", "ship", "notify")}
    dead = {stage: _counter(store, "hoptrace.stage.dead_lettered", stage) for stage in ("validate", "charge", "ship", "notify")}
    assert retries == {"validate": 2, "charge": 1, "ship": 0, "notify": 0}
    assert dead == {"validate": 1, "charge": 0, "ship": 0, "notify": 0}


# --- 4. prefork children that exit after every task --------------------------------------------


def test_every_task_span_is_exported_when_each_child_exits_after_one_task(
    settings: Settings,
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    with hoptrace_worker(ORDERS, "--max-tasks-per-child", "1") as worker:
        published = published_jobs(run_hoptrace(hoptrace_env, "publish", ORDERS, "validate", "--count", "20").stdout)
        assert len(wait_for_outbox(settings, namespace, 20)) == 20, worker.output()
    # Stopped: every span any process will ever export is in.

    assert len(published) == 20
    assert _order_ids(outbox(settings, namespace)) == sorted(f"order-{n}" for n in range(1, 21))
    payments = _spans_named(store, f"process {namespace}payments")
    notifications = _spans_named(store, f"process {namespace}notifications")
    assert (len(payments), len(notifications)) == (20, 20)
    # Each of the 40 tasks ran in a pool process of its own, which exported its span before exiting.
    assert len({span.resource["process.pid"] for span in payments + notifications}) == 40


# --- 5. SIGTERM while the OTLP endpoint hangs --------------------------------------------------


def test_sigterm_stops_a_kafka_stage_within_ten_seconds_when_the_collector_hangs_and_commits_everything(
    settings: Settings,
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    kafka_admin: KafkaAdminClient,
    silent_endpoint: SilentEndpoint,
) -> None:
    queue = redis.Redis.from_url(settings.redis_url)
    collector = silent_endpoint
    with hoptrace_worker(ORDERS, "--stage", "validate", env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}, ready="consuming") as worker:
        published = published_jobs(run_hoptrace(hoptrace_env, "publish", ORDERS, "validate", "--count", "20").stdout)
        assert len(published) == 20
        # Only validate runs: what it forwarded waits in the Celery queue (a Redis list named like the queue).
        assert wait_for(lambda: queue.llen(f"{namespace}payments") >= 20, timeout=60), worker.output()
        assert queue.llen(f"{namespace}payments") == 20
        # The worker's exporters are connected to the silent collector, waiting for answers that never come.
        assert wait_for(lambda: collector.accepted > 0, timeout=30), worker.output()

        began = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)
        try:
            status = worker.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not stop within 10 s of SIGTERM:\n{worker.output()}")
        stopped_after = time.monotonic() - began
    queue.close()

    assert status == 0, worker.output()
    assert stopped_after < 10
    committed = kafka_admin.list_group_offsets({f"{namespace}validate": None})[f"{namespace}validate"]
    assert sum(offset.offset for partition, offset in committed.items() if partition.topic == f"{namespace}orders.placed") == 20


# --- 6. a forward the broker refuses after the handler returned -------------------------------


def test_a_forward_the_broker_refuses_is_dead_lettered_not_lost(
    settings: Settings,
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    kafka_admin: KafkaAdminClient,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    charged = f"{namespace}orders.charged"
    # The broker refuses records over 2000 bytes on the topic charge forwards to: the producer
    # accepts the record, the broker's answer (MESSAGE_TOO_LARGE) comes later. Any failed produce
    # (a broker down longer than the delivery timeout, a lost leader) takes the same path.
    kafka_admin.create_topics([NewTopic(charged, 1, 1, topic_configs={"max.message.bytes": "2000"})])
    parked = redis.Redis.from_url(settings.redis_url)
    try:
        with hoptrace_worker(ORDERS) as worker:
            (big,) = _publish(hoptrace_env, {"order_id": "big", "note": "x" * 5000})
            assert store.wait_until(lambda s: any(span.name == f"send {charged}" for span in s.spans()), timeout=60), worker.output()
            # Charge's policy: 3 attempts, then the order is parked on payments.dead-letter (a Celery queue).
            wait_for(lambda: parked.llen(f"{namespace}payments.dead-letter") > 0 or bool(outbox(settings, namespace)), timeout=20)
            outcomes = [(span.name, span.status_code, span.attributes.get("hoptrace.outcome")) for span in store.traces()[big.trace_id]]
            assert parked.llen(f"{namespace}payments.dead-letter") == 1, outcomes
    finally:
        parked.close()


# --- 6. bodies that are not JSON objects --------------------------------------------------------

POISON_BODIES = {
    "nested-past-the-decoder": b"[" * 200_000,
    "not-json": b"not json at all",
    "json-array": b"[1, 2]",
}


def test_a_body_that_is_not_a_json_object_is_dead_lettered_once_and_the_next_order_gets_through(
    settings: Settings,
    namespace: str,
    kafka_admin: KafkaAdminClient,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    """A body nested deeper than Python's JSON decoder goes (it raised RecursionError, which escaped the dead-letter path) is undecodable too."""
    _, store = telemetry_store
    placed, dead_letter = f"{namespace}orders.placed", f"{namespace}orders.placed.dead-letter"
    kafka_admin.create_topics([NewTopic(placed, 1, 1), NewTopic(dead_letter, 1, 1)])
    with hoptrace_worker(ORDERS) as worker:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
        try:
            for body in POISON_BODIES.values():
                producer.send(placed, body)
            producer.flush()
        finally:
            producer.close()
        _publish(hoptrace_env, {"order_id": "good-control"})
        assert _order_ids(wait_for_outbox(settings, namespace, 1)) == ["good-control"]
        assert wait_for(lambda: len(_records(settings, dead_letter)) >= len(POISON_BODIES), 60), worker.output()
        assert worker.popen.poll() is None, worker.output()
    _assert_each_delivered_once(settings, namespace, ["good-control"], worker)
    parked = _records(settings, dead_letter)
    assert [json.loads(record.value)["undecodable"] for record in parked] == [body.decode()[:10000] for body in POISON_BODIES.values()]
    errors = [dict(record.headers)["hoptrace-error"].decode() for record in parked]
    assert [error.split(":")[0] for error in errors] == ["UndecodableMessage"] * len(POISON_BODIES), errors
    assert "maximum recursion depth exceeded" in errors[0], errors[0]
    assert _counter(store, "hoptrace.stage.dead_lettered", "validate") == len(POISON_BODIES)
    assert _counter(store, "hoptrace.stage.retries", "validate") == 0


_BROKER_FUZZ = hypothesis_settings(
    parent=fuzz_settings(1),
    phases=(Phase.explicit, Phase.generate),  # no shrinking: each example runs a worker
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
_BODIES = st.lists(
    st.one_of(
        st.binary(max_size=400),  # anything at all
        st.text(max_size=120).map(str.encode),  # text, JSON or not
        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3), max_leaves=6).map(
            lambda value: json.dumps(value).encode()  # JSON that is not an order object
        ),
    ),
    min_size=24,
    max_size=24,
    unique=True,
)


@_BROKER_FUZZ
@given(bodies=_BODIES)
def test_any_body_on_a_kafka_stage_is_processed_or_dead_lettered_never_stuck(
    settings: Settings,
    namespace: str,
    kafka_admin: KafkaAdminClient,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    bodies: list[bytes],
) -> None:
    """24 generated bodies: each is dead-lettered (none is an order), and the order after them gets through."""
    placed, dead_letter = f"{namespace}orders.placed", f"{namespace}orders.placed.dead-letter"
    if placed not in kafka_admin.list_topics():
        kafka_admin.create_topics([NewTopic(placed, 1, 1), NewTopic(dead_letter, 1, 1)])
    parked_before, delivered_before = len(_records(settings, dead_letter, timeout=2)), len(outbox(settings, namespace))
    with hoptrace_worker(ORDERS) as worker:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
        try:
            for body in bodies:
                producer.send(placed, body)
            producer.flush()
        finally:
            producer.close()
        _publish(hoptrace_env, {"order_id": f"control-{delivered_before}"})
        assert wait_for(lambda: len(outbox(settings, namespace)) == delivered_before + 1, 60), worker.output()
        assert wait_for(lambda: len(_records(settings, dead_letter, timeout=2)) == parked_before + len(bodies), 60), worker.output()
        assert worker.popen.poll() is None, worker.output()
    assert own_tracebacks(worker.output()) == [], worker.output()
    parked = _records(settings, dead_letter)[parked_before:]
    errors = {dict(record.headers)["hoptrace-error"].decode().split(":")[0] for record in parked}
    assert errors <= {"UndecodableMessage", "OrderRejected"}, errors  # not JSON, or not an object; or an object that is no order


def _envelope(queue: str, body: bytes, headers: dict[str, Any], content_type: str = "application/json") -> bytes:
    """A kombu message envelope on the Redis list of QUEUE, as a producer would push it, with BODY and HEADERS."""
    properties = {"body_encoding": "base64", "delivery_tag": uuid.uuid4().hex, "delivery_info": {"exchange": "", "routing_key": queue}}
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": headers,
            "properties": properties,
        }
    ).encode()


@_BROKER_FUZZ
@given(bodies=_BODIES)
def test_any_message_on_a_celery_queue_is_processed_or_dead_lettered_never_dropped(
    settings: Settings,
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
    bodies: list[bytes],
) -> None:
    """Pushed onto the charge stage's queue: the generated items raw, then as the body of a charge task (JSON, then pickle, which the worker
    does not take), of a task the worker does not have, and of a message without a task. Celery logged and dropped each of these kinds,
    and kombu's channel raised on a raw one it had already popped; each is dead-lettered now, and the order after them gets through."""
    _, store = telemetry_store
    queue = f"{namespace}payments"
    task = {"lang": "py", "task": "hoptrace.orders.charge", "id": "x"}
    items = [
        *bodies,
        *(_envelope(queue, body, task) for body in bodies[:6]),
        _envelope(queue, b"\x80\x04pickle", task, "application/x-python-serialize"),
        _envelope(queue, b"[[], {}, {}]", {**task, "task": "no.such.task"}),
        _envelope(queue, b"[[], {}, {}]", {}),
    ]
    client = redis.Redis.from_url(settings.redis_url)
    parked_before = client.llen(f"{queue}.dead-letter")
    with hoptrace_worker(ORDERS) as worker:
        for item in items:
            client.lpush(queue, item)
        _publish(hoptrace_env, {"order_id": "control"})
        assert wait_for(lambda: len(outbox(settings, namespace)) == 1, 60), worker.output()
        assert wait_for(lambda: client.llen(f"{queue}.dead-letter") == parked_before + len(items), 60), worker.output()
        assert client.llen(queue) == 0 and worker.popen.poll() is None, worker.output()
    assert own_tracebacks(worker.output()) == [], worker.output()
    assert _counter(store, "hoptrace.stage.dead_lettered", "charge") == len(items)
