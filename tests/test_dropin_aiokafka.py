"""hoptrace's aiokafka instrumentor against the real broker: the span current in the user's task, batches, tasks of their own, and
jobs across all three Kafka clients (in process) and across them and Celery (two processes under ``opentelemetry-instrument``).

Records are fed by kafka-python with hand-written ``traceparent`` headers and read back by kafka-python
(``tests.kafka_dropin``), so what aiokafka sends is checked by another client.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import confluent_kafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaProducer
from opentelemetry import trace
from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

import hoptrace.kafka
from hoptrace.clients.aiokafka.instrumentor import PATCHES, HoptraceAIOKafkaInstrumentor
from hoptrace.clients.confluent.instrumentor import HoptraceConfluentKafkaInstrumentor
from hoptrace.clients.kafka_python.instrumentor import HoptraceKafkaInstrumentor
from hoptrace.pipeline import semconv
from hoptrace.pipeline.settings import Settings
from hoptrace.testing import CapturedTelemetry
from hoptrace.view.receiver import OtlpReceiver
from tests.kafka_dropin import (
    OPENTELEMETRY_INSTRUMENT,
    REPOSITORY,
    N,
    beside_stock,
    by_stage,
    check_chain,
    check_forwarded,
    check_lag,
    check_relay_tree,
    check_relayed,
    feed,
    instrumenting,
    lag_of,
    named,
    process_points,
    telemetry,
)
from tests.memory_store import TelemetryStore
from tests.processes import running, without_telemetry_settings
from tests.traces import chain

__all__ = ["telemetry"]  # the fixture (tests.kafka_dropin)


@pytest.fixture
def instrumented(telemetry: CapturedTelemetry) -> Iterator[HoptraceAIOKafkaInstrumentor]:
    """hoptrace's aiokafka instrumentor, instrumented for the test."""
    with instrumenting(HoptraceAIOKafkaInstrumentor()) as instrumentor:
        yield instrumentor


def consumer_of(settings: Settings, topic: str, group: str) -> AIOKafkaConsumer:
    """An aiokafka consumer of TOPIC in GROUP from the earliest record (to be started)."""
    return AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)


def test_each_record_of_async_for_is_processed_in_its_own_span_current_in_the_task(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceAIOKafkaInstrumentor
) -> None:
    source, target, group = new_topic("in"), new_topic("out"), f"g{unique}"
    parents = feed(settings, source, N)
    tracer = trace.get_tracer("test")

    async def relay() -> None:
        consumer, producer = consumer_of(settings, source, group), AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        await producer.start()
        seen = 0
        async for record in consumer:
            # The previous record's span ended when this one was asked for; this one's is current in this task.
            assert len(named(telemetry, f"process {source}")) == seen
            assert format(trace.get_current_span().get_span_context().trace_id, "032x") == parents[record.offset][0]
            with tracer.start_as_current_span("relay") as relay:
                headers = list(record.headers)
                if seen % 2:
                    await producer.send_and_wait(target, record.value, None, None, None, headers)
                else:
                    await (await producer.send(target, record.value, headers=headers))
                assert headers == list(record.headers)  # the caller's list is left alone
                assert trace.get_current_span() is relay  # the send span is not current after send returns
            seen += 1
            if seen == N:
                break
        check_lag(telemetry, group, N - 1)
        assert len(named(telemetry, f"process {source}")) == N - 1  # the last one is open until stop
        await producer.stop()
        await consumer.stop()
        assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached
        assert lag_of(telemetry, group) == []  # a stopped consumer reports no lag

    asyncio.run(relay())
    check_relayed(telemetry, settings, parents, (source, target, group))


def test_each_record_of_getmany_is_processed_as_its_list_is_iterated(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceAIOKafkaInstrumentor
) -> None:
    source, target, group = new_topic("in"), new_topic("out"), f"g{unique}"
    parents = feed(settings, source, N)

    async def relay() -> None:
        consumer, producer = consumer_of(settings, source, group), AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        await producer.start()
        seen, deadline = 0, time.monotonic() + 20
        while seen < N and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    assert len(named(telemetry, f"process {source}")) == seen
                    with trace.get_tracer("test").start_as_current_span("relay"):
                        await producer.send_and_wait(target, record.value, headers=list(record.headers))
                    seen += 1
                assert len(named(telemetry, f"process {source}")) == seen  # the last one ended with the iteration
                assert trace.get_current_span() is trace.INVALID_SPAN
        assert seen == N
        await consumer.commit()
        await producer.stop()
        await consumer.stop()

    asyncio.run(relay())
    check_forwarded(settings, target, check_relay_tree(telemetry.spans, parents, source, target), N)
    assert process_points(telemetry, semconv.CONSUMED_MESSAGES, group) == N


def test_handler_tasks_get_spans_of_their_own_with_async_with_processing(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceAIOKafkaInstrumentor
) -> None:
    """Records handed to tasks that run side by side: each task's ``async with processing`` span is current in it alone."""
    source, group = new_topic("in"), f"g{unique}"
    parents = feed(settings, source, 2)
    inside: dict[int, str] = {}

    async def handle(record: object, other_started: asyncio.Event, mine_started: asyncio.Event) -> None:
        async with hoptrace.kafka.processing(record, consumer_group="handlers") as span:
            mine_started.set()
            await other_started.wait()  # both spans open at once, in two tasks
            inside[record.offset] = format(trace.get_current_span().get_span_context().span_id, "016x")  # type: ignore[attr-defined]
            assert trace.get_current_span() is span

    async def main() -> None:
        consumer = consumer_of(settings, source, group)
        await consumer.start()
        records = [await consumer.getone(), await consumer.getone()]
        started = [asyncio.Event(), asyncio.Event()]
        await asyncio.gather(handle(records[0], started[1], started[0]), handle(records[1], started[0], started[1]))
        await consumer.stop()

    asyncio.run(main())
    handled = sorted(by_stage(telemetry, "handlers"), key=lambda span: span.attributes[semconv.MESSAGING_KAFKA_OFFSET])
    assert [(span.trace_id, span.parent_span_id) for span in handled] == parents
    assert [inside[offset] for offset in range(2)] == [span.span_id for span in handled]
    assert [span.attributes[semconv.OUTCOME] for span in handled] == ["processed", "processed"]


def test_a_task_started_inside_a_records_span_that_commits_leaves_the_loops_context_alone(
    settings: Settings,
    new_topic: Callable[..., str],
    unique: str,
    telemetry: CapturedTelemetry,
    instrumented: HoptraceAIOKafkaInstrumentor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task created while a record's span is current shares that context, not the token: the commit it awaits ends the span,
    and the context comes off in the loop's own task at its next call (detaching it in the other task would fail)."""
    source, group = new_topic("in"), f"g{unique}"
    parents = feed(settings, source, 2)

    async def main() -> None:
        consumer = consumer_of(settings, source, group)
        await consumer.start()
        first = await consumer.getone()
        await asyncio.create_task(consumer.commit())  # the span's context is the task's too
        assert len(by_stage(telemetry, group)) == 1  # the commit ended the first record's span
        assert format(trace.get_current_span().get_span_context().trace_id, "032x") == parents[first.offset][0]  # still attached here
        second = await consumer.getone()  # detached in this task, then the second record's attached
        assert format(trace.get_current_span().get_span_context().trace_id, "032x") == parents[second.offset][0]
        await consumer.stop()
        assert trace.get_current_span() is trace.INVALID_SPAN

    with caplog.at_level("ERROR", "opentelemetry.context"):
        asyncio.run(main())
    assert [record.getMessage() for record in caplog.records if record.name == "opentelemetry.context"] == []
    assert sorted((span.trace_id, span.parent_span_id) for span in by_stage(telemetry, group)) == sorted(parents)


def test_uninstrument_puts_every_method_back_and_the_stock_instrumentor_steps_aside(
    telemetry: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    originals = {(owner, name): owner.__dict__[name] for owner, name, _ in PATCHES}
    stock, ours = AIOKafkaInstrumentor(), HoptraceAIOKafkaInstrumentor()
    with beside_stock(stock, ours, caplog):
        assert all(owner.__dict__[name].__wrapped__ is originals[(owner, name)] for owner, name, _ in PATCHES)  # ours alone
        ours.uninstrument()
        assert all(owner.__dict__[name] is originals[(owner, name)] for owner, name, _ in PATCHES)
        assert not stock.is_instrumented_by_opentelemetry


def test_a_job_across_kafka_python_confluent_kafka_and_aiokafka_is_one_trace(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceAIOKafkaInstrumentor
) -> None:
    """kafka-python send → confluent-kafka poll, produce → aiokafka getone, send → aiokafka async for: one span per hop, a chain."""
    first, second, third = new_topic("first"), new_topic("second"), new_topic("third")
    others = (HoptraceKafkaInstrumentor(), HoptraceConfluentKafkaInstrumentor())
    for instrumentor in others:
        instrumentor.instrument()
    try:
        sender = KafkaProducer(bootstrap_servers=settings.kafka_servers)
        with trace.get_tracer("test").start_as_current_span("client"):
            sender.send(first, b"job")
        sender.flush()
        sender.close()
        relay = confluent_kafka.Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"a{unique}", "auto.offset.reset": "earliest"})
        relay.subscribe([first])
        record = None
        deadline = time.monotonic() + 20
        while (record is None or record.error() is not None) and time.monotonic() < deadline:
            record = relay.poll(0.5)
        assert record is not None and record.value() == b"job"
        producer = confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap})
        producer.produce(second, record.value(), headers=record.headers())
        producer.flush(10)
        relay.close()

        async def last_hops() -> None:
            middle, sender = consumer_of(settings, second, f"b{unique}"), AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
            await middle.start()
            await sender.start()
            taken = await middle.getone()
            await sender.send_and_wait(third, taken.value, headers=list(taken.headers))
            await sender.stop()
            await middle.stop()
            end = consumer_of(settings, third, f"c{unique}")
            await end.start()
            async for final in end:
                assert final.value == b"job"
                break
            await end.stop()

        asyncio.run(last_hops())
    finally:
        for instrumentor in others:
            instrumentor.uninstrument()
    order = ["client", f"send {first}", f"process {first}", f"send {second}", f"process {second}", f"send {third}", f"process {third}"]
    check_chain(telemetry.spans, order)


def test_a_job_across_kafka_python_celery_confluent_kafka_aiokafka_and_celery_is_one_trace(
    settings: Settings,
    new_topic: Callable[..., str],
    unique: str,
    redis_prefix: str,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
    tmp_path: Path,
) -> None:
    """Two processes under ``opentelemetry-instrument`` (a Celery prefork worker; a client that runs three Kafka hops, one per client),
    exporting to the receiver: the job is one trace, one send and one process span per hop, each span the parent of the next."""
    receiver, store = telemetry_store
    first, middle, last, queue = new_topic("first"), new_topic("middle"), new_topic("last"), f"mixed-{unique}"
    env = {
        **without_telemetry_settings(),
        "HOPTRACE_REDIS_URL": settings.redis_url,
        "TEST_REDIS_PREFIX": redis_prefix,
        "TEST_QUEUE": queue,
        "MIXED_BOOTSTRAP": settings.kafka_bootstrap,
        "MIXED_FIRST": first,
        "MIXED_TOPIC": middle,
        "MIXED_LAST": last,
        "MIXED_GROUP": f"mixed-{unique}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis",  # kombu's Redis commands would add spans of their own
        "PYTHONPATH": str(REPOSITORY),
    }
    worker = [str(OPENTELEMETRY_INSTRUMENT), str(Path(sys.executable).parent / "celery"), "-A", "tests.apps.mixed_celery", "worker"]
    worker += ["--pool", "prefork", "--concurrency", "1", "-Q", queue, "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    with running(worker, tmp_path / "worker.log", {**env, "OTEL_SERVICE_NAME": "mixed-worker"}, ready=" ready.", cwd=REPOSITORY):
        client = subprocess.run(
            [str(OPENTELEMETRY_INSTRUMENT), sys.executable, "-m", "tests.apps.mixed_client"],
            env={**env, "OTEL_SERVICE_NAME": "mixed-client"},
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert client.returncode == 0 and "finished job" in client.stdout, client.stdout + client.stderr
        store.wait_until(lambda s: len(s.spans()) >= 11, timeout=15)
    ordered = chain(store.spans())  # exactly one chain: one root, each span the parent of the next
    assert [(span.name, span.kind) for span in ordered] == [
        ("client", "INTERNAL"),
        *((f"send {first}", "PRODUCER"), (f"process {first}", "CONSUMER")),
        *((f"send {queue}", "PRODUCER"), (f"process {queue}", "CONSUMER")),
        *((f"send {middle}", "PRODUCER"), (f"process {middle}", "CONSUMER")),
        *((f"send {last}", "PRODUCER"), (f"process {last}", "CONSUMER")),
        *((f"send {queue}", "PRODUCER"), (f"process {queue}", "CONSUMER")),
    ]
    assert len({span.trace_id for span in ordered}) == 1
    services = [span.resource.get("service.name") for span in ordered]
    assert services == ["mixed-client"] * 4 + ["mixed-worker"] * 2 + ["mixed-client"] * 4 + ["mixed-worker"]
    assert [span.attributes["hoptrace.stage"] for span in ordered if span.kind == "CONSUMER"] == [
        f"mixed-{unique}-1",
        "mixed.to_confluent",
        f"mixed-{unique}-2",
        f"mixed-{unique}-3",
        "mixed.finish",
    ]
