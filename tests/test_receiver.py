"""The OTLP receiver, fed by the real SDK exporters over gRPC and HTTP (no broker needed)."""

from __future__ import annotations

import gzip
import http.client
import logging
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.receiver import MAX_MESSAGE_BYTES, OtlpReceiver
from tests.memory_store import TelemetryStore

RESOURCE = Resource.create({"service.name": "receiver-test"})
EXPORT_TIMEOUT_S = 5


@pytest.fixture
def store() -> TelemetryStore:
    """An empty store."""
    return TelemetryStore()


@pytest.fixture
def receiver(store: TelemetryStore) -> Iterator[OtlpReceiver]:
    """A running receiver on ephemeral ports, storing into ``store``."""
    with OtlpReceiver(store) as receiver:
        yield receiver


def _span_exporter(transport: str, receiver: OtlpReceiver) -> SpanExporter:
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
    compression = Compression.Gzip if transport == "http+gzip" else Compression.NoCompression
    return HttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces", compression=compression, timeout=EXPORT_TIMEOUT_S)


def _metric_exporter(transport: str, receiver: OtlpReceiver) -> MetricExporter:
    if transport == "grpc":
        return GrpcMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
    return HttpMetricExporter(endpoint=receiver.http_endpoint + "/v1/metrics", timeout=EXPORT_TIMEOUT_S)


def _post(url: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str) -> int:
    """POST ``body`` and return the HTTP status."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=EXPORT_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("transport", ["grpc", "http", "http+gzip"])
def test_traces_arrive_decoded(transport: str, receiver: OtlpReceiver, store: TelemetryStore) -> None:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(_span_exporter(transport, receiver)))
    tracer = provider.get_tracer("tests.receiver")
    linked = tracer.start_span("earlier job")
    linked.end()
    with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as parent:
        with tracer.start_as_current_span(
            "orders process",
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.kafka.offset": 42, "hoptrace.retry": False},
            links=[Link(linked.get_span_context(), {"reason": "batch"})],
            record_exception=False,
            set_status_on_exception=False,
        ) as child:
            child.set_attribute("hoptrace.stages", ["validate", "ship"])
            child.set_attribute("hoptrace.ratio", 0.25)
            child.record_exception(ValueError("bad order"))
            child.set_status(StatusCode.ERROR, "handler failed")
    provider.shutdown()
    assert isinstance(child, ReadableSpan)

    trace_id = format(parent.get_span_context().trace_id, "032x")
    spans = {span.name: span for span in store.traces()[trace_id]}
    assert set(spans) == {"publish", "orders process"}
    received = spans["orders process"]
    assert received.span_id == format(child.get_span_context().span_id, "016x")
    assert received.parent_span_id == format(parent.get_span_context().span_id, "016x")
    assert spans["publish"].parent_span_id is None
    assert (received.kind, spans["publish"].kind) == ("CONSUMER", "PRODUCER")
    assert received.attributes == {
        "messaging.system": "kafka",
        "messaging.kafka.offset": 42,
        "hoptrace.retry": False,
        "hoptrace.stages": ["validate", "ship"],
        "hoptrace.ratio": 0.25,
    }
    assert (received.status_code, received.status_message) == ("ERROR", "handler failed")
    assert (spans["publish"].status_code, spans["publish"].status_message) == ("UNSET", "")
    [(event_name, event_attributes)] = received.events
    assert event_name == "exception"
    assert event_attributes["exception.type"] == "ValueError"
    assert event_attributes["exception.message"] == "bad order"
    assert event_attributes == dict(child.events[0].attributes or {})  # exactly what the SDK recorded
    linked_context = linked.get_span_context()
    assert received.links == ((format(linked_context.trace_id, "032x"), format(linked_context.span_id, "016x"), {"reason": "batch"}),)
    assert received.resource["service.name"] == "receiver-test"
    assert received.scope_name == "tests.receiver"
    assert child.start_time == received.start_ns and child.end_time == received.end_ns
    assert len(store.traces()) == 2 and len(store.spans()) == 3 and receiver.rejected == 0


def _record_metrics(provider: MeterProvider) -> None:
    """A counter, a histogram with explicit boundaries, and an observable gauge, as the pipeline has."""

    def depth(options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(3, {"queue": "orders"})
        yield Observation(0.5, {"queue": "ship"})

    meter = provider.get_meter("tests.receiver")
    sent = meter.create_counter("messaging.client.sent.messages", unit="{message}", description="sent")
    for count, stage in ((2, "validate"), (3, "validate"), (1, "ship")):
        sent.add(count, {"hoptrace.stage": stage})
    duration = meter.create_histogram("messaging.process.duration", unit="s", explicit_bucket_boundaries_advisory=[0.25, 1.0, 5.0])
    for seconds in (0.125, 0.5, 0.75, 2.0, 10.0):
        duration.record(seconds, {"hoptrace.stage": "validate"})
    meter.create_observable_gauge("hoptrace.queue.depth", callbacks=[depth], unit="{message}")


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_metrics_arrive_decoded(transport: str, receiver: OtlpReceiver, store: TelemetryStore) -> None:
    reader = PeriodicExportingMetricReader(_metric_exporter(transport, receiver), export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    try:  # shutdown() exports once more: assert on the first export, before it
        _record_metrics(provider)
        assert provider.force_flush(timeout_millis=EXPORT_TIMEOUT_S * 1000)
        sums = store.metrics("messaging.client.sent.messages")
        [histogram] = store.metrics("messaging.process.duration")
        gauges = {point.attributes["queue"]: point for point in store.metrics("hoptrace.queue.depth")}
        assert len(store.metrics()) == 5
    finally:
        provider.shutdown()

    assert {point.attributes["hoptrace.stage"]: point.value for point in sums} == {"validate": 5, "ship": 1}
    counter = sums[0]
    assert (counter.kind, counter.monotonic, counter.unit) == ("sum", True, "{message}")
    assert counter.description == "sent"
    assert (counter.count, counter.sum, counter.bucket_counts, counter.explicit_bounds) == (None,) * 4
    assert counter.resource["service.name"] == "receiver-test" and counter.time_ns > 0

    assert (histogram.kind, histogram.unit, histogram.monotonic, histogram.value) == ("histogram", "s", None, None)
    assert (histogram.count, histogram.sum) == (5, 13.375)
    assert histogram.explicit_bounds == (0.25, 1.0, 5.0)
    assert histogram.bucket_counts == (1, 2, 1, 1)
    assert histogram.attributes == {"hoptrace.stage": "validate"}

    assert {queue: point.value for queue, point in gauges.items()} == {"orders": 3, "ship": 0.5}
    assert isinstance(gauges["orders"].value, int)
    assert {(point.kind, point.monotonic, point.unit) for point in gauges.values()} == {("gauge", None, "{message}")}


def test_logs_carry_the_active_span(receiver: OtlpReceiver, store: TelemetryStore) -> None:
    logger_provider = LoggerProvider(resource=RESOURCE)
    exporter = GrpcLogExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    with warnings.catch_warnings():  # the SDK's LoggingHandler is deprecated in favour of a contrib package
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=logger_provider)
    logger = logging.getLogger("tests.receiver.logs")
    logger.addHandler(handler)
    logger.propagate = False
    tracer = TracerProvider(resource=RESOURCE).get_tracer("tests.receiver")
    try:
        with tracer.start_as_current_span("work") as span:
            logger.warning("order %s rejected", "o-1", extra={"hoptrace.job.id": "job-7"})
    finally:
        logger.removeHandler(handler)
        logger_provider.shutdown()

    [log] = store.logs()
    assert log.trace_id == format(span.get_span_context().trace_id, "032x")
    assert log.span_id == format(span.get_span_context().span_id, "016x")
    assert (log.body, log.severity_text, log.severity_number) == ("order o-1 rejected", "WARN", 13)
    assert log.attributes["hoptrace.job.id"] == "job-7"
    assert log.resource["service.name"] == "receiver-test" and log.time_ns > 0


def test_garbage_is_rejected_and_the_receiver_keeps_working(receiver: OtlpReceiver, store: TelemetryStore) -> None:
    traces = receiver.http_endpoint + "/v1/traces"
    assert _post(traces, b"not a protobuf") == 400
    assert receiver.rejected == 1
    assert _post(traces, b"\x1f\x8b not gzip", **{"Content-Encoding": "gzip"}) == 400
    assert receiver.rejected == 2
    assert _post(receiver.http_endpoint + "/v1/spans", b"") == 404
    assert _post(traces, b"{}", content_type="application/json") == 415
    assert _post(traces, b"", **{"Content-Encoding": "br"}) == 415
    assert receiver.rejected == 2 and store.spans() == []

    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(_span_exporter("grpc", receiver)))
    provider.get_tracer("tests.receiver").start_span("after garbage").end()
    provider.shutdown()
    assert [span.name for span in store.spans()] == ["after garbage"]


def test_a_body_without_length_or_too_long_is_refused_unread(receiver: OtlpReceiver) -> None:
    statuses = []
    for length_header in ({}, {"Content-Length": str(MAX_MESSAGE_BYTES + 1)}):
        connection = http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=EXPORT_TIMEOUT_S)
        connection.putrequest("POST", "/v1/traces")
        for name, value in {"Content-Type": "application/x-protobuf", **length_header}.items():
            connection.putheader(name, value)
        connection.endheaders()
        statuses.append(connection.getresponse().status)
        connection.close()
    assert statuses == [411, 413] and receiver.rejected == 0


def test_garbage_over_grpc_is_invalid_argument_and_counted(receiver: OtlpReceiver) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        method = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as raised:
            export(b"not a protobuf", timeout=EXPORT_TIMEOUT_S)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert receiver.rejected == 1
        assert export(b"", timeout=EXPORT_TIMEOUT_S) == b""
    assert receiver.rejected == 1


def test_an_empty_export_is_accepted(receiver: OtlpReceiver, store: TelemetryStore) -> None:
    assert _post(receiver.http_endpoint + "/v1/logs", gzip.compress(b""), **{"Content-Encoding": "gzip"}) == 200
    assert _post(receiver.http_endpoint + "/v1/metrics", b"") == 200
    assert receiver.rejected == 0 and store.logs() == [] and store.metrics() == []


def _span(trace_id: str = "ab" * 16, span_id: str = "cd" * 8, start_ns: int = 1) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=None,
        name="s",
        kind="INTERNAL",
        start_ns=start_ns,
        end_ns=start_ns + 1,
        attributes={},
        status_code="UNSET",
        status_message="",
        events=(),
        links=(),
        resource={},
        scope_name="",
    )


def test_wait_until_wakes_up_on_the_add_that_makes_it_true(store: TelemetryStore) -> None:
    checked = threading.Event()
    seen: list[int] = []

    def has_two_spans(store: TelemetryStore) -> bool:
        seen.append(len(store.spans()))
        checked.set()
        return seen[-1] == 2

    def add_after_the_first_check() -> None:
        checked.wait(timeout=5)  # the waiter holds the store's lock until it is waiting
        for number in range(2):
            store.add_spans([_span(span_id=f"{number:016x}")])

    adder = threading.Thread(target=add_after_the_first_check)
    started = time.monotonic()
    adder.start()
    assert store.wait_until(has_two_spans, timeout=30)
    assert time.monotonic() - started < 5
    assert seen[0] == 0 and seen[-1] == 2
    adder.join()


def test_wait_until_gives_up_after_the_timeout(store: TelemetryStore) -> None:
    store.add_spans([_span()])
    assert store.wait_until(lambda store: len(store.spans()) == 1, timeout=0)
    started = time.monotonic()
    assert not store.wait_until(lambda store: len(store.spans()) > 1, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2


def test_traces_groups_by_trace_in_start_order_and_clear_forgets(store: TelemetryStore) -> None:
    first, second = "01" * 16, "02" * 16
    store.add_spans([_span(first, "0" * 15 + "2", start_ns=20), _span(second), _span(first, "0" * 15 + "1", 10)])
    traces = store.traces()
    assert {trace_id: [span.span_id for span in spans] for trace_id, spans in traces.items()} == {
        first: ["0" * 15 + "1", "0" * 15 + "2"],
        second: ["cd" * 8],
    }
    store.clear()
    assert (store.spans(), store.traces(), store.metrics(), store.logs()) == ([], {}, [], [])


def test_stop_is_prompt_and_idempotent_and_the_ports_are_reusable(store: TelemetryStore) -> None:
    receiver = OtlpReceiver(store)
    receiver.start()
    ports = (receiver.grpc_port, receiver.http_port)
    assert all(port > 0 for port in ports) and receiver.grpc_endpoint == f"http://127.0.0.1:{ports[0]}"
    with pytest.raises(RuntimeError):
        receiver.start()
    started = time.monotonic()
    receiver.stop()
    receiver.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(receiver.http_endpoint + "/v1/traces", data=b"", timeout=EXPORT_TIMEOUT_S)
    with receiver:
        assert (receiver.grpc_port, receiver.http_port) == ports
        assert _post(receiver.http_endpoint + "/v1/traces", b"") == 200
