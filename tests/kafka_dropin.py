"""What the drop-in Kafka tests share (kafka-python's, confluent-kafka's, aiokafka's): records fed and read back with hand-written
traceparents, the exact relay span tree, and the end-to-end relay run under ``opentelemetry-instrument``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from hoptrace.instrumentation import dropin
from hoptrace.pipeline import semconv
from hoptrace.pipeline.messages import Owned
from hoptrace.pipeline.settings import Settings
from hoptrace.testing import CapturedPoint, CapturedSpan, CapturedTelemetry, capture_telemetry
from hoptrace.view.receiver import OtlpReceiver
from tests.memory_store import TelemetryStore
from tests.traces import latest_totals

InstrumentorT = TypeVar("InstrumentorT", bound=BaseInstrumentor)

REPOSITORY = Path(__file__).resolve().parent.parent
"""The repository root (the relays run from it)."""
N = 5
"""Records per in-process test."""
RELAY_N = 20
"""Records per end-to-end relay run."""

Parent = tuple[str, str]
"""(trace id, span id) written by hand into a record's ``traceparent``."""


@pytest.fixture
def telemetry() -> Iterator[CapturedTelemetry]:
    """Spans and metrics in memory; the drop-in hooks made afresh on these providers."""
    dropin.reset()  # hooks are made once per process on the global providers, which this swaps
    with capture_telemetry() as captured:
        yield captured
    dropin.reset()


Headers = list[tuple[str, bytes]]
"""A record's headers as kafka-python sends them."""


def feed(settings: Settings, topic: str, count: int, rewrite: Callable[[int, Headers], Headers] | None = None) -> list[Parent]:
    """COUNT records ``b"0"``… on TOPIC, each with a hand-written traceparent (the headers of record i: REWRITE(i, those)); their parents."""
    parents = [(uuid.uuid4().hex, uuid.uuid4().hex[:16]) for _ in range(count)]
    with Owned():  # hoptrace's own sends: the instrumentation leaves them alone
        producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
        for index, (trace_id, span_id) in enumerate(parents):
            headers = [("traceparent", f"00-{trace_id}-{span_id}-01".encode())]
            producer.send(topic, str(index).encode(), headers=rewrite(index, headers) if rewrite else headers)
        producer.flush()
        producer.close()
    return parents


def read_back(settings: Settings, topic: str, count: int) -> list[ConsumerRecord]:
    """The first COUNT records of TOPIC (partition 0), read without the instrumentation."""
    with Owned():
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        records: list[ConsumerRecord] = []
        for _ in range(50):
            for batch in consumer.poll(timeout_ms=200).values():
                records += batch
            if len(records) >= count:
                break
        consumer.close()
    return records


def traceparents(record: ConsumerRecord) -> list[Parent]:
    """(trace id, span id) of each ``traceparent`` header of RECORD."""
    found = []
    for key, value in record.headers:
        if key.lower() == "traceparent":
            _, trace_id, span_id, _ = value.decode().split("-")
            found.append((trace_id, span_id))
    return found


def named(telemetry: CapturedTelemetry, name: str) -> list[CapturedSpan]:
    """The finished spans called NAME."""
    return [span for span in telemetry.spans if span.name == name]


class SpanRecord(Protocol):
    """What the checks read of a span, captured in memory or received over OTLP."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: Mapping[str, Any]


def check_relay_tree(spans: Sequence[SpanRecord], parents: list[Parent], source: str, target: str) -> dict[str, SpanRecord]:
    """Each record: process (child of its hand-written parent) → relay → send (PRODUCER); the send spans by id.

    And nothing else about Kafka: no stock ``receive`` / ``{topic} send`` spans.
    """
    process = [span for span in spans if span.name == f"process {source}"]
    assert sorted((span.trace_id, span.parent_span_id) for span in process) == sorted(parents)
    assert {span.kind for span in process} == {"CONSUMER"}
    assert [span.attributes[semconv.OUTCOME] for span in process] == ["processed"] * len(parents)
    process_ids = {span.span_id: span.trace_id for span in process}
    relays = [span for span in spans if span.name == "relay"]
    assert sorted(span.parent_span_id for span in relays) == sorted(process_ids)  # one handler span per process span
    assert all(span.trace_id == process_ids[span.parent_span_id] for span in relays)
    relay_ids = {span.span_id: span.trace_id for span in relays}
    sends = [span for span in spans if span.name == f"send {target}"]
    assert sorted(span.parent_span_id for span in sends) == sorted(relay_ids)
    assert all(span.kind == "PRODUCER" and span.trace_id == relay_ids[span.parent_span_id] for span in sends)
    assert sorted({span.name for span in spans}) == sorted({f"process {source}", "relay", f"send {target}"})
    return {span.span_id: span for span in sends}


def check_forwarded(settings: Settings, target: str, sends: dict[str, SpanRecord], count: int) -> None:
    """Every forwarded record carries exactly one traceparent: the one of its send span."""
    forwarded = read_back(settings, target, count)
    assert len(forwarded) == count
    assert all(len(traceparents(record)) == 1 for record in forwarded)
    assert sorted(traceparents(record)[0] for record in forwarded) == sorted((span.trace_id, span.span_id) for span in sends.values())


def process_points(telemetry: CapturedTelemetry, name: str, group: str) -> float:
    """The total of metric NAME (a histogram's count) for consumer GROUP."""
    points = [point for point in telemetry.points(name) if point.attributes.get(semconv.MESSAGING_CONSUMER_GROUP) == group]
    return sum(point.count if point.count is not None else point.value or 0 for point in points)


def by_stage(telemetry: CapturedTelemetry, stage: str) -> list[CapturedSpan]:
    """The finished process spans of STAGE, in the order they ended."""
    return [span for span in telemetry.spans if span.kind == "CONSUMER" and span.attributes[semconv.STAGE] == stage]


OPENTELEMETRY_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
"""The venv's ``opentelemetry-instrument`` command."""


def run_relay(app: str, receiver: OtlpReceiver, env: Mapping[str, str]) -> int:
    """Run the plain relay ``tests.apps.APP`` under ``opentelemetry-instrument`` (ENV: its ``RELAY_*`` settings and more), exporting
    to RECEIVER; its pid (``opentelemetry-instrument`` execs the app: one process), once it said it relayed ``RELAY_N`` records."""
    full = {
        **{name: value for name, value in os.environ.items() if not name.startswith("OTEL_")},
        "RELAY_COUNT": str(RELAY_N),
        "OTEL_SERVICE_NAME": app,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        **env,
    }
    relay = subprocess.Popen(
        [str(OPENTELEMETRY_INSTRUMENT), sys.executable, "-m", f"tests.apps.{app}"],
        cwd=REPOSITORY,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = relay.communicate(timeout=90)
    assert relay.returncode == 0 and f"relayed {RELAY_N}" in output, output
    return relay.pid


def check_relay_telemetry(store: TelemetryStore, pid: int, settings: Settings, parents: list[Parent], relayed: tuple[str, str, str]) -> None:
    """What relay process PID exported of RELAYED (source topic, target topic, group): the exact tree of each of PARENTS' records,
    no stock instrumentation's span, the forwarded headers, and its stage metrics and lag."""
    source, target, group = relayed

    def mine(resource: Mapping[str, Any]) -> bool:
        return resource.get("process.pid") == pid

    store.wait_until(lambda s: len([span for span in s.spans() if span.name == "relay" and mine(span.resource)]) >= RELAY_N, timeout=10)
    spans = [span for span in store.spans() if mine(span.resource)]
    assert not [span for span in spans if span.scope_name.startswith("opentelemetry.instrumentation")]  # the stock one stayed silent
    check_forwarded(settings, target, check_relay_tree(spans, parents, source, target), RELAY_N)
    where = {semconv.MESSAGING_CONSUMER_GROUP: group, semconv.MESSAGING_DESTINATION: source}
    points = [point for point in store.metrics() if mine(point.resource)]
    assert latest_totals([point for point in points if point.name == semconv.PROCESS_DURATION], where, "count") == RELAY_N
    assert latest_totals([point for point in points if point.name == semconv.CONSUMED_MESSAGES], where) == RELAY_N
    lag = [point for point in points if point.name == semconv.CONSUMER_LAG and all(point.attributes.get(k) == v for k, v in where.items())]
    assert lag and {point.attributes[semconv.MESSAGING_PARTITION] for point in lag} == {"0"}
    assert all(0 <= point.value <= RELAY_N for point in lag)


def check_relayed(telemetry: CapturedTelemetry, settings: Settings, parents: list[Parent], relayed: tuple[str, str, str]) -> None:
    """An in-process relay of PARENTS' records, RELAYED (source topic, target topic, group): the exact tree, one traceparent per
    forwarded record (its send span's), the offset the broker gave each send span, and the stage's metrics."""
    source, target, group = relayed
    sends = check_relay_tree(telemetry.spans, parents, source, target)
    check_forwarded(settings, target, sends, len(parents))
    assert sorted(int(span.attributes[semconv.MESSAGING_KAFKA_OFFSET]) for span in sends.values()) == list(range(len(parents)))
    assert process_points(telemetry, semconv.PROCESS_DURATION, group) == len(parents)
    assert process_points(telemetry, semconv.CONSUMED_MESSAGES, group) == len(parents)


def lag_of(telemetry: CapturedTelemetry, group: str) -> list[CapturedPoint]:
    """The lag points of GROUP's consumers (other tests' consumers, alive until collected, left out)."""
    return [point for point in telemetry.points(semconv.CONSUMER_LAG) if point.attributes[semconv.MESSAGING_CONSUMER_GROUP] == group]


def check_lag(telemetry: CapturedTelemetry, group: str, most: int) -> None:
    """The consumer of GROUP reports its lag on its one partition, between 0 and MOST records."""
    lag = lag_of(telemetry, group)
    assert [point.attributes[semconv.MESSAGING_PARTITION] for point in lag] == ["0"]
    assert 0 <= lag[0].value <= most and lag[0].unit == "{message}"


def check_chain(spans: Sequence[CapturedSpan], order: list[str]) -> None:
    """SPANS are exactly one span per name of ORDER, one trace, each the parent of the next: a client span, then send/process per hop."""
    by_name = {span.name: span for span in spans}
    assert sorted(by_name) == sorted(order) and len(spans) == len(order)
    assert {span.trace_id for span in spans} == {by_name[order[0]].trace_id}
    assert [by_name[name].parent_span_id for name in order] == [None, *(by_name[name].span_id for name in order[:-1])]
    assert [by_name[name].kind for name in order] == ["INTERNAL", *["PRODUCER", "CONSUMER"] * ((len(order) - 1) // 2)]


@contextmanager
def instrumenting(instrumentor: InstrumentorT) -> Iterator[InstrumentorT]:
    """INSTRUMENTOR instrumented for the block, uninstrumented after (unless the block did it)."""
    instrumentor.instrument()
    try:
        yield instrumentor
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


@contextmanager
def beside_stock(stock: BaseInstrumentor, ours: BaseInstrumentor, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """STOCK instrumented, then OURS (twice: a no-op), then STOCK again, which says it steps aside; for the block, both undone after."""
    with instrumenting(stock), instrumenting(ours):
        ours.instrument()  # twice is a no-op
        with caplog.at_level("INFO", "hoptrace"):
            stock.instrument()
        assert f"{type(stock).__name__} skipped: {type(ours).__name__} instruments this library" in caplog.text
        yield
