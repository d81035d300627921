"""hoptrace's kafka-python instrumentor against the real broker: in process (spans captured in memory) and end to end.

In process, records carry a ``traceparent`` written by hand; the tests check the exact span tree
(each record's process span the child of its hand-written parent, the handler's spans and sends
its children), when spans end, the metrics, untrusted headers, and that instrument/uninstrument
leave kafka-python and the stock instrumentor as they found them.

End to end, the plain relays of ``tests/apps`` run under ``opentelemetry-instrument`` and export
over OTLP into a receiver, with the stock kafka-python instrumentor enabled and disabled.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import pickle
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wrapt
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.kafka import KafkaInstrumentor

import hoptrace.kafka
from hoptrace.clients.kafka_python.instrumentor import PATCHES, HoptraceKafkaInstrumentor
from hoptrace.instrumentation import dropin
from hoptrace.instrumentation.distro import before_instrumentors
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
    check_forwarded,
    check_lag,
    check_relay_telemetry,
    check_relay_tree,
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
from tests.secured import secured_kafka_options

__all__ = ["telemetry"]  # the fixture (tests.kafka_dropin)


@pytest.fixture
def instrumented(telemetry: CapturedTelemetry) -> Iterator[HoptraceKafkaInstrumentor]:
    """hoptrace's kafka-python instrumentor, instrumented for the test."""
    with instrumenting(HoptraceKafkaInstrumentor()) as instrumentor:
        yield instrumentor


def consumer_of(settings: Settings, topic: str, group: str | None) -> KafkaConsumer:
    """A plain consumer of TOPIC in GROUP, from the earliest record, giving up after 15 s without one."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )


def test_each_record_of_the_iterator_is_processed_in_its_own_span(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceKafkaInstrumentor
) -> None:
    source, target = new_topic("in"), new_topic("out")
    parents = feed(settings, source, N)
    assert telemetry.spans == []  # hoptrace's own sends are not traced
    consumer, producer = consumer_of(settings, source, f"g{unique}"), KafkaProducer(bootstrap_servers=settings.kafka_servers)
    tracer = trace.get_tracer("test")
    seen = 0
    for record in consumer:
        # The previous record's span ended when this one was asked for; this one's is current.
        assert len(named(telemetry, f"process {source}")) == seen
        current = trace.get_current_span().get_span_context()
        assert format(current.trace_id, "032x") == parents[record.offset][0]
        with tracer.start_as_current_span("relay") as relay:
            headers = list(record.headers)
            if seen % 2:
                producer.send(target, record.value, None, headers)
            else:
                producer.send(target, record.value, headers=headers)
            assert headers == record.headers  # the caller's list is left alone
            assert trace.get_current_span() is relay  # the send span is not current after send returns
        seen += 1
        if seen == N:
            break
        check_lag(telemetry, f"g{unique}", N - 1)
    producer.flush()
    assert len(named(telemetry, f"process {source}")) == N - 1  # the last one is open until close
    consumer.close()
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached
    assert lag_of(telemetry, f"g{unique}") == []  # a closed consumer reports no lag
    check_forwarded(settings, target, check_relay_tree(telemetry.spans, parents, source, target), N)
    assert process_points(telemetry, semconv.PROCESS_DURATION, f"g{unique}") == N
    assert process_points(telemetry, semconv.CONSUMED_MESSAGES, f"g{unique}") == N
    producer.close()


def test_each_record_of_a_poll_batch_is_processed_in_its_own_span(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceKafkaInstrumentor
) -> None:
    source, target = new_topic("in"), new_topic("out")
    parents = feed(settings, source, N)
    consumer, producer = consumer_of(settings, source, f"g{unique}"), KafkaProducer(bootstrap_servers=settings.kafka_servers)
    tracer = trace.get_tracer("test")
    seen = 0
    while seen < N:
        batch = consumer.poll(timeout_ms=1000)
        for records in batch.values():
            # Indexing, len, slicing, pickling and copying: plain list behaviour, no span.
            assert records[0].offset == records[: len(records)][0].offset
            assert pickle.loads(pickle.dumps(records)) == copy.copy(records) == records
            for record in records:
                assert len(named(telemetry, f"process {source}")) == seen
                with tracer.start_as_current_span("relay"):
                    producer.send(target, record.value, headers=record.headers)
                seen += 1
            assert len(named(telemetry, f"process {source}")) == seen  # the last one ended with the iteration
            assert trace.get_current_span() is trace.INVALID_SPAN
    producer.flush()
    consumer.close()
    check_forwarded(settings, target, check_relay_tree(telemetry.spans, parents, source, target), N)
    assert process_points(telemetry, semconv.PROCESS_DURATION, f"g{unique}") == N
    assert process_points(telemetry, semconv.CONSUMED_MESSAGES, f"g{unique}") == N
    producer.close()


def test_the_open_span_ends_at_commit_poll_close_and_never_stays_attached(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceKafkaInstrumentor
) -> None:
    source = new_topic("in")
    parents = feed(settings, source, N)
    group = f"g{unique}"
    consumer = consumer_of(settings, source, group)
    tracer = trace.get_tracer("test")
    next(consumer)
    consumer.commit()
    assert len(by_stage(telemetry, group)) == 1
    next(consumer)
    consumer.commit_async()
    assert len(by_stage(telemetry, group)) == 2
    next(consumer)
    with tracer.start_as_current_span("handler"):
        consumer.commit()  # ends the span; its context is detached later, once the handler's is gone
    assert len(by_stage(telemetry, group)) == 3
    next(consumer)
    consumer.poll(timeout_ms=0)
    assert len(by_stage(telemetry, group)) == 4
    assert trace.get_current_span() is trace.INVALID_SPAN
    next(consumer)
    consumer.close()
    assert len(by_stage(telemetry, group)) == 5
    assert trace.get_current_span() is trace.INVALID_SPAN
    spans = by_stage(telemetry, group)
    assert [span.attributes[semconv.MESSAGING_KAFKA_OFFSET] for span in spans] == list(range(N))
    assert [(span.trace_id, span.parent_span_id) for span in spans] == parents  # none the child of a context left behind


def test_the_last_span_ends_when_the_iterator_stops(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceKafkaInstrumentor
) -> None:
    source = new_topic("in")
    parents = feed(settings, source, 2)
    group = f"g{unique}"
    consumer = consumer_of(settings, source, group)
    assert next(consumer).offset == 0
    consumer.config["consumer_timeout_ms"] = 1000  # from now on, StopIteration after a second without a record
    assert [record.offset for record in consumer] == [1]
    assert [(span.trace_id, span.parent_span_id) for span in by_stage(telemetry, group)] == parents
    assert trace.get_current_span() is trace.INVALID_SPAN
    consumer.close()
    assert len(by_stage(telemetry, group)) == 2


def test_a_poll_list_ends_its_span_at_break_exception_poll_and_close(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceKafkaInstrumentor
) -> None:
    source = new_topic("in")
    parents = feed(settings, source, N)
    group = f"g{unique}"
    consumer = consumer_of(settings, source, group)
    records: list[ConsumerRecord] = []
    while not records:
        records = next(iter(consumer.poll(timeout_ms=1000).values()), [])
    for _ in records:
        break
    assert len(by_stage(telemetry, group)) == 1
    with pytest.raises(RuntimeError):
        for _ in records:
            raise RuntimeError("handler failed")
    assert len(by_stage(telemetry, group)) == 2
    iterator = iter(records)
    next(iterator)
    assert format(trace.get_current_span().get_span_context().trace_id, "032x") == parents[0][0]  # open and current
    consumer.poll(timeout_ms=0)
    assert len(by_stage(telemetry, group)) == 3
    next(iter(records))
    consumer.close()
    assert len(by_stage(telemetry, group)) == 4  # iterated four times: processed four times (the documented limit)
    assert {span.attributes[semconv.MESSAGING_KAFKA_OFFSET] for span in by_stage(telemetry, group)} == {0}
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_loop_left_by_an_exception_in_a_with_block_fails_the_record_at_close(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceKafkaInstrumentor
) -> None:
    source = new_topic("in")
    feed(settings, source, 1)
    group = f"g{unique}"
    with pytest.raises(RuntimeError), consumer_of(settings, source, group) as consumer:
        for _ in consumer:
            raise RuntimeError("handler failed")
    [span] = by_stage(telemetry, group)
    assert (span.status, span.attributes[semconv.OUTCOME], span.attributes[semconv.ERROR_TYPE]) == ("ERROR", "failed", "RuntimeError")
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_processing_gives_a_handler_in_another_thread_its_own_span(
    settings: Settings, new_topic: Callable[..., str], telemetry: CapturedTelemetry
) -> None:
    source = new_topic("in")
    parents = feed(settings, source, 2)
    first, second = read_back(settings, source, 2)
    seen: dict[str, bool] = {}

    def handle(record: ConsumerRecord) -> None:
        with hoptrace.kafka.processing(record, consumer_group="billing") as span:
            seen["current"] = trace.get_current_span() is span
            with trace.get_tracer("test").start_as_current_span("work"):
                pass

    worker = threading.Thread(target=handle, args=(first,))
    worker.start()
    worker.join()
    with pytest.raises(ValueError, match="bad record"), hoptrace.kafka.processing(second):
        raise ValueError("bad record")
    assert seen == {"current": True} and trace.get_current_span() is trace.INVALID_SPAN
    [billing] = by_stage(telemetry, "billing")
    [work] = named(telemetry, "work")
    assert (billing.trace_id, billing.parent_span_id, billing.attributes[semconv.MESSAGING_CONSUMER_GROUP]) == (*parents[0], "billing")
    assert (work.trace_id, work.parent_span_id) == (billing.trace_id, billing.span_id)
    [failed] = by_stage(telemetry, source)  # no group: the stage is the topic
    assert (failed.trace_id, failed.parent_span_id, failed.status) == (*parents[1], "ERROR")
    assert (failed.attributes[semconv.OUTCOME], failed.attributes[semconv.ERROR_TYPE]) == ("failed", "ValueError")
    durations = {
        point.attributes[semconv.STAGE]: (point.count, point.attributes.get(semconv.ERROR_TYPE))
        for point in telemetry.points(semconv.PROCESS_DURATION)
    }
    assert durations == {"billing": (1, None), source: (1, "ValueError")}


def test_untrusted_headers_never_reach_the_loop_and_are_counted(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, instrumented: HoptraceKafkaInstrumentor
) -> None:
    source, target = new_topic("in"), new_topic("out")
    bad: list[Callable[[Headers], Headers]] = [
        lambda good: [("traceparent", b"\xff\xfe-not-utf-8")],
        lambda good: [*good, ("TraceParent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")],  # two different ones: neither is trusted
        lambda good: [("traceparent", b"00-zz-not-a-traceparent")],
        lambda good: [*good, ("baggage", b"k=" + b"v" * 9000)],  # oversized: dropped, the trace goes on
        lambda good: [*good, ("hoptrace-sent-at", b"nan")],  # malformed: dropped, the trace goes on
    ]
    parents = feed(settings, source, len(bad), rewrite=lambda index, good: bad[index](good))
    group = f"g{unique}"
    consumer, producer = consumer_of(settings, source, group), KafkaProducer(bootstrap_servers=settings.kafka_servers)
    for seen, record in enumerate(consumer, 1):
        producer.send(target, record.value, headers=[(key, value) for key, value in record.headers if value is not None])
        if seen == len(bad):
            break
    producer.flush()
    consumer.close()
    spans = sorted(by_stage(telemetry, group), key=lambda span: span.attributes[semconv.MESSAGING_KAFKA_OFFSET])
    roots = [span.parent_span_id is None for span in spans]
    assert roots == [True, True, True, False, False]
    assert [(span.trace_id, span.parent_span_id) for span in spans[3:]] == parents[3:]
    forwarded = sorted(read_back(settings, target, len(bad)), key=lambda record: int(record.value))
    sends = {span.parent_span_id: span for span in named(telemetry, f"send {target}")}  # each the child of its process span
    assert [traceparents(record) for record in forwarded] == [[(sends[span.span_id].trace_id, sends[span.span_id].span_id)] for span in spans]
    assert process_points(telemetry, semconv.PROPAGATION_FALLBACKS, group) == len(bad)
    # A header value kafka-python may deliver but never sends: None.
    with hoptrace.kafka.processing(forwarded[0]._replace(headers=[("traceparent", None)]), consumer_group=group) as span:
        assert span.get_span_context().is_valid
    assert by_stage(telemetry, group)[-1].parent_span_id is None
    assert process_points(telemetry, semconv.PROPAGATION_FALLBACKS, group) == len(bad) + 1
    producer.close()


def test_uninstrument_puts_every_method_back_and_instrument_twice_is_a_no_op(telemetry: CapturedTelemetry) -> None:
    originals = {(owner, name): owner.__dict__[name] for owner, name, _ in PATCHES}
    stock_methods = (KafkaInstrumentor._instrument, KafkaInstrumentor._uninstrument)  # noqa: SLF001
    assert not any(isinstance(method, wrapt.ObjectProxy) for method in originals.values())
    instrumentor = HoptraceKafkaInstrumentor()
    instrumentor.instrument()
    wrapped = {(owner, name): owner.__dict__[name] for owner, name, _ in PATCHES}
    assert all(wrapped[key].__wrapped__ is originals[key] for key in originals)
    instrumentor.instrument()
    assert all(owner.__dict__[name] is wrapped[(owner, name)] for owner, name, _ in PATCHES)
    instrumentor.uninstrument()
    assert all(owner.__dict__[name] is originals[(owner, name)] for owner, name, _ in PATCHES)
    assert (KafkaInstrumentor._instrument, KafkaInstrumentor._uninstrument) == stock_methods  # noqa: SLF001
    instrumentor.uninstrument()
    assert all(owner.__dict__[name] is originals[(owner, name)] for owner, name, _ in PATCHES)


def test_the_stock_instrumentor_steps_aside_before_and_after_ours(
    settings: Settings, new_topic: Callable[..., str], unique: str, telemetry: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    source, target = new_topic("in"), new_topic("out")
    parents = feed(settings, source, N)
    original_send = KafkaProducer.__dict__["send"]
    stock, ours = KafkaInstrumentor(), HoptraceKafkaInstrumentor()
    with beside_stock(stock, ours, caplog):
        assert KafkaProducer.__dict__["send"].__wrapped__ is original_send  # ours alone
        consumer, producer = consumer_of(settings, source, f"g{unique}"), KafkaProducer(bootstrap_servers=settings.kafka_servers)
        for seen, record in enumerate(consumer, 1):
            with trace.get_tracer("test").start_as_current_span("relay"):
                producer.send(target, record.value, headers=record.headers)
            if seen == N:
                break
        producer.flush()
        consumer.close()
        producer.close()
        check_forwarded(settings, target, check_relay_tree(telemetry.spans, parents, source, target), N)
        ours.uninstrument()
        assert KafkaProducer.__dict__["send"] is original_send and not stock.is_instrumented_by_opentelemetry


@pytest.mark.parametrize("disabled", ["", "hoptrace_kafka", " redis , hoptrace_kafka "])
def test_the_pre_instrument_hook_leaves_a_stock_instrumentor_alone_when_ours_is_disabled(disabled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=hoptrace_kafka``: hoptrace does not instrument kafka-python, so the stock one must."""
    assert not any("_hoptrace_methods" in stock.__dict__ for stock in (KafkaInstrumentor, CeleryInstrumentor))
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", disabled)
    try:
        before_instrumentors()
        assert ("_hoptrace_methods" in KafkaInstrumentor.__dict__) is (disabled == "")
        assert "_hoptrace_methods" in CeleryInstrumentor.__dict__
    finally:
        dropin.unsilence(KafkaInstrumentor)
        dropin.unsilence(CeleryInstrumentor)


@pytest.mark.parametrize(
    ("app", "stock", "listener"),
    [
        ("kafka_relay", "stock-enabled", "plain"),
        ("kafka_relay", "stock-disabled", "plain"),
        ("kafka_relay_poll", "stock-enabled", "plain"),
        ("kafka_relay_poll", "stock-disabled", "plain"),
        ("kafka_relay", "stock-disabled", "sasl_ssl"),  # the app's own clients reach the broker over SASL_SSL with SCRAM
    ],
)
def test_a_plain_relay_under_opentelemetry_instrument(  # noqa: PLR0913 - the fixtures it runs on
    app: str,
    stock: str,
    listener: str,
    settings: Settings,
    new_topic: Callable[..., str],
    unique: str,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    receiver, store = telemetry_store
    source, target, group = new_topic("in"), new_topic("out"), f"relay-{unique}"
    parents = feed(settings, source, RELAY_N)  # no OpenTelemetry here: the traceparents are written by hand
    bootstrap, options = secured_kafka_options(settings) if listener == "sasl_ssl" else (settings.kafka_bootstrap, {})
    env = {
        "RELAY_BOOTSTRAP": bootstrap,
        "RELAY_KAFKA_OPTIONS": json.dumps(options),
        "RELAY_SOURCE": source,
        "RELAY_TARGET": target,
        "RELAY_GROUP": group,
    }
    if stock == "stock-disabled":
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "kafka"
    pid = run_relay(app, receiver, env)
    check_relay_telemetry(store, pid, settings, parents, (source, target, group))


def test_processing_keeps_concurrent_asyncio_handlers_apart_and_never_raises_its_own_errors(telemetry: CapturedTelemetry) -> None:
    parents = [(uuid.uuid4().hex, uuid.uuid4().hex[:16]) for _ in range(2)]
    records = [
        ConsumerRecord("orders", 0, -1, offset, 0, 0, None, b"{}", [("traceparent", f"00-{trace_id}-{span_id}-01".encode())], None, 0, 2, 0)
        for offset, (trace_id, span_id) in enumerate(parents)
    ]
    seen: list[tuple[str, str]] = []

    async def handle(record: ConsumerRecord) -> None:
        with hoptrace.kafka.processing(record, consumer_group="async"):
            await asyncio.sleep(0.01)  # the other task runs meanwhile, in its own span
            seen.append((format(trace.get_current_span().get_span_context().trace_id, "032x"), str(record.offset)))

    async def both() -> None:
        await asyncio.gather(*(handle(record) for record in records))

    asyncio.run(both())
    assert sorted(seen) == sorted((trace_id, str(offset)) for offset, (trace_id, _) in enumerate(parents))
    assert sorted((span.trace_id, span.parent_span_id) for span in by_stage(telemetry, "async")) == sorted(parents)
    with hoptrace.kafka.processing("not a record") as span:  # type: ignore[arg-type]
        assert span is trace.INVALID_SPAN  # hoptrace could not make sense of it: the block runs untraced
    assert len(by_stage(telemetry, "async")) == 2


def test_metric_series_stay_bounded_however_many_topics_the_code_sends_to(
    settings: Settings,
    new_topic: Callable[..., str],
    telemetry: CapturedTelemetry,
    instrumented: HoptraceKafkaInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stages come from the messages (a topic per customer, say): past MAX_STAGES per pipeline, they are reported as one overflow stage."""
    monkeypatch.setattr(dropin, "MAX_STAGES", 2)
    topics = [new_topic(f"t{n}") for n in range(5)]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    with caplog.at_level(logging.WARNING, logger="hoptrace.instrumentation.dropin"):
        for topic in (*topics, topics[0], topics[4]):
            producer.send(topic, b"{}")
        producer.flush()
    producer.close()
    sent = {
        (point.attributes[semconv.STAGE], point.attributes[semconv.MESSAGING_DESTINATION]): point.value
        for point in telemetry.points(semconv.SENT_MESSAGES)
    }
    assert sent == {(topics[0], topics[0]): 2, (topics[1], topics[1]): 1, (dropin.OVERFLOW, dropin.OVERFLOW): 4}
    assert [span.name for span in telemetry.spans].count(f"send {dropin.OVERFLOW}") == 4
    assert len([record for record in caplog.records if "more than 2 stages" in record.getMessage()]) == 1


def test_settings_that_do_not_parse_leave_the_instrumented_code_running(
    settings: Settings,
    new_topic: Callable[..., str],
    telemetry: CapturedTelemetry,
    instrumented: HoptraceKafkaInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A secrets folder that is not there, or a setting that does not parse: logged; the app's sends go on, traced."""
    topic = new_topic("out")
    for variable, value in (("HOPTRACE_SECRETS_DIR", str(tmp_path / "nope")), ("HOPTRACE_RECORDER_MAX_BYTES", "lots")):
        dropin.reset()
        monkeypatch.setenv(variable, value)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
        with caplog.at_level(logging.WARNING, logger="hoptrace.instrumentation.dropin"):
            producer.send(topic, b"{}").get(timeout=30)
        producer.close()
        monkeypatch.delenv(variable)
        assert any("a HOPTRACE_ setting is not valid" in record.getMessage() for record in caplog.records), variable
        caplog.clear()
    assert [span.name for span in telemetry.spans].count(f"send {topic}") == 2
