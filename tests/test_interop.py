"""hoptrace side by side with the stock OpenTelemetry instrumentations, on real Kafka, Redis and Celery.

1. A record sent by a plain ``KafkaProducer`` traced only by the stock ``KafkaInstrumentor``
   continues its trace through every hop of examples/orders.
2. A message hoptrace publishes continues its trace in a Celery worker traced only by the
   stock ``CeleryInstrumentor`` (tests/apps/stock_celery.py).
3. The orders workers run under ``opentelemetry-instrument`` (hoptrace's distro and
   configurator, and every installed instrumentor: hoptrace's Celery and kafka-python ones,
   the stock Redis one; the stock Celery and kafka-python ones step aside) and hoptrace still
   makes exactly one trace per job, with one ``traceparent`` per Kafka record and no
   duplicate span of its own stage tasks; with the SDK configured in every process (as
   opentelemetry-distro does) the consumer's own Redis traffic (acks, unacked bookkeeping)
   and the depth monitor's reads make no extra root traces.

Spans made in this process are captured in memory (``hoptrace.testing.capture_telemetry``) on
providers passed explicitly; worker processes export over OTLP to the test's receiver. No global
provider is set here.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from opentelemetry.context import Context, attach, detach
from opentelemetry.instrumentation.kafka import KafkaInstrumentor

from hoptrace.clients.celery.app import celery_app
from hoptrace.clients.celery.sender import CelerySender
from hoptrace.examples.orders import pipeline as orders_pipeline
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import CeleryTransport, Pipeline
from hoptrace.producers.publisher import PipelinePublisher
from hoptrace.testing import CapturedTelemetry
from hoptrace.view.otlp_decode import ReceivedSpan
from tests.conftest import run_hoptrace
from tests.processes import running
from tests.traces import PublishedJob, orders_chain_names, published_jobs, wait_for_outbox

if TYPE_CHECKING:
    from hoptrace.view.receiver import OtlpReceiver
    from tests.memory_store import TelemetryStore

ORDERS = "hoptrace.examples.orders:pipeline"
OPENTELEMETRY_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
JOBS = 20
POLLING_GRACE_S = 3.0
"""How long the instrumented workers keep running idle after the last job (returning early on an
extra root): a few of the Celery consumer's one-second polling cycles, for Redis commands traced
outside any job to show up."""

T = TypeVar("T")
Workers = list[tuple[list[str], str]]
"""Worker processes to start: (command, the text it prints when ready)."""

pytestmark = pytest.mark.usefixtures("namespace_cleanup")


@pytest.fixture
def stock_kafka(captured: CapturedTelemetry) -> Iterator[CapturedTelemetry]:
    """kafka-python traced by the stock KafkaInstrumentor alone, into the test's in-memory provider."""
    instrumentor = KafkaInstrumentor()
    instrumentor.instrument(tracer_provider=captured.tracer_provider)
    try:
        yield captured
    finally:
        instrumentor.uninstrument()


def _chain_below(spans: list[ReceivedSpan], parent_span_id: str) -> list[ReceivedSpan]:
    """SPANS as one chain hanging below PARENT_SPAN_ID (a span not among them); fails unless they form exactly that."""
    by_parent: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_parent.setdefault(span.parent_span_id or "", []).append(span)
    ordered: list[ReceivedSpan] = []
    below = parent_span_id
    while below in by_parent:
        children = by_parent[below]
        assert len(children) == 1, f"span {below} has {len(children)} children: {[s.name for s in children]}"
        ordered.append(children[0])
        below = children[0].span_id
    assert len(ordered) == len(spans), f"not one chain below {parent_span_id}: {[(s.name, s.span_id, s.parent_span_id) for s in spans]}"
    return ordered


def _only(spans: list[T]) -> T:
    assert len(spans) == 1, f"expected one span, got {spans}"
    return spans[0]


# --- 1. stock Kafka producer -> hoptrace workers ---------------------------------------------


def test_stock_kafka_producer_trace_continues_through_every_hop(
    settings: Settings,
    namespace: str,
    unique: str,
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
    stock_kafka: CapturedTelemetry,
) -> None:
    _, store = telemetry_store
    topic = f"{namespace}orders.placed"
    order_id = f"stock-{unique}"
    with hoptrace_worker(ORDERS):
        producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, client_id=f"stock-{unique}")
        try:
            producer.send(topic, value=json.dumps({"order_id": order_id}).encode()).get(timeout=30)
        finally:
            producer.close(timeout=5)
        stock = _only(stock_kafka.spans)
        trace_id, stock_span_id = stock.trace_id, stock.span_id
        delivered = wait_for_outbox(settings, namespace, 1, timeout=40)
        assert store.wait_until(lambda s: len(s.traces().get(trace_id, [])) >= 7, timeout=20)

    # The stock producer span: PRODUCER, made in this process by the stock instrumentation.
    assert (stock.name, stock.kind, stock.parent_span_id) == (f"{topic} send", "PRODUCER", None)
    assert stock.scope_name == "opentelemetry.instrumentation.kafka"
    # The job went all the way, and nothing but this one trace was exported by the workers.
    assert [note["order_id"] for note in delivered] == [order_id]
    traces = store.traces()
    assert set(traces) == {trace_id}
    # hoptrace's chain hangs under the stock span: process placed -> ... -> process notifications.
    ordered = _chain_below(traces[trace_id], stock_span_id)
    assert [(span.name, span.kind) for span in ordered] == orders_chain_names(namespace)[1:]
    process_validate = ordered[0]
    assert process_validate.parent_span_id == stock_span_id
    assert process_validate.attributes["messaging.consumer.group.name"] == f"{namespace}validate"
    assert all(span.status_code == "UNSET" for span in ordered)
    # The stock producer sent no job baggage: the job starts at hoptrace's first publish, and
    # from there on every span and the delivered note carry that one job id.
    job_id = delivered[0]["job_id"]
    assert job_id and {span.attributes["hoptrace.job.id"] for span in ordered[1:]} == {job_id}


# --- 2. hoptrace publisher -> stock-instrumented Celery worker --------------------------------


def test_hoptrace_publish_continues_in_stock_instrumented_celery_task(
    settings: Settings,
    namespace: str,
    unique: str,
    hoptrace_env: dict[str, str],
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
    captured: CapturedTelemetry,
    tmp_path: Path,
) -> None:
    _, store = telemetry_store
    # Only the stage the stock worker stands in for: the publisher needs no Kafka sender then.
    stage = replace(orders_pipeline.namespaced(namespace)["charge"], forwards_to=())
    pipeline = Pipeline(orders_pipeline.name)
    pipeline.add(stage)
    transport = stage.transport
    assert isinstance(transport, CeleryTransport)
    assert transport.task == "hoptrace.orders.charge"
    done_key = f"{namespace}stock:done"
    env = {**hoptrace_env, "TEST_QUEUE": transport.queue, "TEST_TASK": transport.task, "TEST_DONE_KEY": done_key}
    worker = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.apps.stock_celery",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "--queues",
        transport.queue,
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]
    senders = {"celery": CelerySender(celery_app(pipeline, settings))}
    publisher = PipelinePublisher(pipeline, senders, captured.tracer_provider, Instruments(captured.meter_provider))
    run_name = f"run/{transport.task}"

    with running(worker, tmp_path / "stock-worker.log", env, ready=" ready.") as process:
        token = attach(Context())  # a new job and trace, whatever pytest's context holds
        try:
            published = publisher.publish(stage, {"order_id": f"order-{unique}"})
        finally:
            detach(token)
        assert store.wait_until(lambda s: any(span.name == run_name for span in s.spans()), timeout=30), process.output()

    send = _only(captured.spans)
    assert (send.name, send.kind) == (f"send {transport.queue}", "PRODUCER")
    assert send.attributes["hoptrace.stage"] == "charge"
    send_trace_id, send_span_id = send.trace_id, send.span_id
    assert send_trace_id == published.trace_id

    run = _only([span for span in store.spans() if span.name == run_name])
    assert (run.trace_id, run.parent_span_id, run.kind) == (send_trace_id, send_span_id, "CONSUMER")
    assert run.scope_name == "opentelemetry.instrumentation.celery"
    assert run.attributes["celery.task_name"] == transport.task
    assert set(store.traces()) == {send_trace_id}
    # The task body ran inside the stock span, with hoptrace's job in its baggage.
    client = redis.Redis.from_url(settings.redis_url)
    try:
        notes = [json.loads(item) for item in client.lrange(done_key, 0, -1)]
    finally:
        client.close()
    assert notes == [{"payload": {"order_id": f"order-{unique}"}, "trace_id": send_trace_id, "span_id": run.span_id, "job_id": published.job_id}]


# --- 3. every stock instrumentation on, through opentelemetry-instrument ----------------------


def _kafka_headers(settings: Settings, topics: list[str], group: str, count: int, timeout: float = 30) -> dict[str, list[list[tuple[str, bytes]]]]:
    """The headers of the first COUNT records of each of TOPICS, read as consumer group GROUP."""
    consumer = KafkaConsumer(
        *topics, bootstrap_servers=settings.kafka_servers, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    found: dict[str, list[list[tuple[str, bytes]]]] = {topic: [] for topic in topics}
    deadline = time.monotonic() + timeout
    try:
        while any(len(headers) < count for headers in found.values()) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    found[record.topic].append(list(record.headers or []))
    finally:
        consumer.close(autocommit=False)
    return found


class ExtraRootTraces(AssertionError):
    """Spans made outside any job started traces of their own."""


def _roots(store: TelemetryStore) -> list[ReceivedSpan]:
    return [span for span in store.spans() if span.parent_span_id is None]


@pytest.fixture
def run_jobs(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], telemetry_store: tuple[OtlpReceiver, TelemetryStore], tmp_path: Path
) -> Callable[[Workers, int], list[PublishedJob]]:
    """``run_jobs(workers, jobs)``: start WORKERS, publish JOBS orders with ``hoptrace publish``, wait until all are delivered.

    Then idle for a few of Celery's polling cycles: a Redis command traced outside any job would
    show up as an extra root meanwhile. The workers are stopped (and have flushed) on return.
    """
    _, store = telemetry_store

    def run(workers: Workers, jobs: int) -> list[PublishedJob]:
        with ExitStack() as stack:
            processes = [
                stack.enter_context(running(command, tmp_path / f"worker-{index}.log", hoptrace_env, ready=ready))
                for index, (command, ready) in enumerate(workers)
            ]
            published = published_jobs(run_hoptrace(hoptrace_env, "publish", ORDERS, "validate", "--count", str(jobs)).stdout)
            delivered = wait_for_outbox(settings, namespace, jobs, timeout=40)
            assert len(delivered) == jobs, "\n".join(process.output() for process in processes)
            store.wait_until(lambda s: len(_roots(s)) > jobs, timeout=POLLING_GRACE_S)
        assert len(published) == jobs
        assert len({job.trace_id for job in published}) == jobs
        assert sorted(str(note["job_id"]) for note in delivered) == sorted(job.job_id for job in published)
        return published

    return run


def _assert_job_traces(store: TelemetryStore, published: list[PublishedJob], namespace: str) -> None:
    """Each job's trace: rooted at its publish, no span's parent missing, hoptrace's 8 spans with the job's id."""
    traces = store.traces()
    job_of_trace = {job.trace_id: job.job_id for job in published}
    assert set(job_of_trace) <= set(traces)
    for trace_id in job_of_trace:
        spans = traces[trace_id]
        ids = {span.span_id for span in spans}
        assert all(span.parent_span_id is None or span.parent_span_id in ids for span in spans), f"a span of {trace_id} lost its parent"
        assert [span.name for span in spans if span.parent_span_id is None] == [f"send {namespace}orders.placed"]
        own = [span for span in spans if span.scope_name == "hoptrace"]
        assert sorted((span.name, span.kind) for span in own) == sorted(orders_chain_names(namespace))
        assert {span.attributes["hoptrace.job.id"] for span in own} == {job_of_trace[trace_id]}
    # No span of a job strayed into another trace.
    for span in store.spans():
        if span.attributes.get("hoptrace.job.id"):
            assert job_of_trace[span.trace_id] == span.attributes["hoptrace.job.id"], span


def _assert_no_extra_roots(store: TelemetryStore, published: list[PublishedJob], namespace: str) -> None:
    """Exactly one root span, one trace, per job: its publish. Raises ExtraRootTraces naming any other root."""
    publish = f"send {namespace}orders.placed"
    roots = _roots(store)
    jobs = {job.trace_id for job in published}
    extra = Counter((span.name, span.scope_name, span.resource.get("service.name")) for span in roots if span.trace_id not in jobs)
    if extra:
        raise ExtraRootTraces(f"{len(roots)} root spans for {len(published)} jobs; the extra ones: {extra.most_common()}")
    assert Counter(span.name for span in roots) == {publish: len(published)}
    assert set(store.traces()) == {job.trace_id for job in published}


def _instrumented_orders_worker(*args: str) -> list[str]:
    return [str(OPENTELEMETRY_INSTRUMENT), sys.executable, "-m", "hoptrace", "worker", ORDERS, *args]


def test_orders_under_opentelemetry_instrument_keep_one_trace_per_job(
    settings: Settings, namespace: str, unique: str, telemetry_store: tuple[OtlpReceiver, TelemetryStore], run_jobs: Callable
) -> None:
    # With hoptrace installed, opentelemetry-instrument loads hoptrace's distro and configurator
    # and every installed instrumentor; the stock Celery and kafka-python ones step aside.
    _, store = telemetry_store
    published = run_jobs([(_instrumented_orders_worker(), " ready.")], JOBS)

    _assert_job_traces(store, published, namespace)
    # The stock Redis instrumentation was really on, and its spans joined the jobs' traces;
    # the stock Celery and kafka-python ones made nothing (hoptrace's instrument those).
    scopes = Counter(span.scope_name for span in store.spans())
    assert scopes["opentelemetry.instrumentation.redis"] >= 2 * JOBS, scopes
    assert scopes["opentelemetry.instrumentation.celery"] == scopes["opentelemetry.instrumentation.kafka"] == 0, scopes
    # One traceparent, naming hoptrace's send span, and at most one baggage per Kafka record.
    sends = {(span.trace_id, span.span_id): span.name for span in store.spans() if span.scope_name == "hoptrace" and span.kind == "PRODUCER"}
    topics = [f"{namespace}orders.placed", f"{namespace}orders.charged"]
    headers = _kafka_headers(settings, topics, f"interop-{unique}", JOBS)
    for topic in topics:
        assert len(headers[topic]) == JOBS, (topic, len(headers[topic]))
        for record_headers in headers[topic]:
            keys = Counter(key for key, _ in record_headers)
            assert keys["traceparent"] == 1 and keys["baggage"] <= 1, (topic, record_headers)
            _, trace_id, span_id, _ = dict(record_headers)["traceparent"].decode().split("-")
            assert sends[(trace_id, span_id)] == f"send {topic}"
    # Last, as the known gap: no Redis command outside a job started a trace of its own.
    _assert_no_extra_roots(store, published, namespace)


def test_hoptrace_stage_tasks_get_no_second_span_from_drop_in_instrumentation(
    namespace: str, telemetry_store: tuple[OtlpReceiver, TelemetryStore], run_jobs: Callable
) -> None:
    _, store = telemetry_store
    jobs = 4
    # Without the depth monitor, whose own gap the test above covers.
    published = run_jobs([(_instrumented_orders_worker("--no-monitor"), " ready.")], jobs)

    _assert_job_traces(store, published, namespace)
    _assert_no_extra_roots(store, published, namespace)
    for trace_id, spans in store.traces().items():
        # hoptrace's own stage tasks and publishes are traced once, by the stages; drop-in leaves them alone.
        messaging = Counter((span.kind, span.scope_name) for span in spans if span.kind in ("PRODUCER", "CONSUMER"))
        assert messaging == {("PRODUCER", "hoptrace"): 4, ("CONSUMER", "hoptrace"): 4}, (trace_id, messaging)


def test_orders_with_sdk_configured_by_a_distro_keep_one_trace_per_job(
    namespace: str, telemetry_store: tuple[OtlpReceiver, TelemetryStore], run_jobs: Callable
) -> None:
    _, store = telemetry_store
    # One stage group per process, each through the launcher; no depth monitor (the test above covers it).
    configured = [str(OPENTELEMETRY_INSTRUMENT), sys.executable, "-m", "tests.apps.sdk_configured", "worker", ORDERS, "--no-monitor"]
    workers: Workers = [
        ([*configured, "--stage", "validate"], "consuming"),
        ([*configured, "--stage", "ship"], "consuming"),
        ([*configured, "--stage", "charge", "--stage", "notify"], " ready."),
    ]
    published = run_jobs(workers, JOBS)

    _assert_job_traces(store, published, namespace)
    _assert_no_extra_roots(store, published, namespace)
