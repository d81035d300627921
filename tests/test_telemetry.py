"""hoptrace.pipeline.telemetry.providers and .exporters: set-up from OTEL_* variables, bounded shutdown.

No broker is needed; unreachable collectors are real sockets (one that never answers, one
that refuses). The SDK is used as it is, with in-memory processors and readers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import format_span_id, format_trace_id

from hoptrace.pipeline.instruments import SECONDS_BUCKETS, Instruments
from hoptrace.pipeline.telemetry import exporters
from hoptrace.pipeline.telemetry.otlp_exporters import OTLPGrpcSpanExporter, OTLPHttpSpanExporter
from hoptrace.pipeline.telemetry.providers import LOG_FORMAT, Telemetry, configure, install_log_correlation
from tests.conftest import SilentEndpoint, free_port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* from the machine, and no exporter unless a test asks for one."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name == "HOPTRACE_ENVIRONMENT":
            monkeypatch.delenv(name)
    for signal in ("TRACES", "METRICS", "LOGS"):
        monkeypatch.setenv(f"OTEL_{signal}_EXPORTER", "none")


@pytest.fixture
def make() -> Iterator[Callable[..., Telemetry]]:
    """``configure`` without touching the global providers; everything made is shut down after."""
    made: list[Telemetry] = []

    def make(service_name: str = "orders-worker", **kwargs: object) -> Telemetry:
        made.append(configure(service_name, set_global=False, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for telemetry in made:
        telemetry.shutdown(timeout_s=0.5)  # stops the threads; a test that cares waits itself


def _shut(built: list[Any]) -> list[type]:
    """The types of freshly built exporters, which are shut down (they hold channels)."""
    for exporter in built:
        exporter.shutdown()
    return [type(exporter) for exporter in built]


# --- exporter selection -------------------------------------------------------------------


def test_defaults_are_otlp_grpc_for_traces_and_metrics_and_no_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    for signal in ("TRACES", "METRICS", "LOGS"):
        monkeypatch.delenv(f"OTEL_{signal}_EXPORTER")
    assert _shut(exporters.span_exporters()) == [OTLPGrpcSpanExporter]  # the SDK's, with hoptrace's encoder
    assert _shut(exporters.metric_readers_and_exporters()[1]) == [GrpcMetricExporter]
    assert exporters.log_exporters() == []
    monkeypatch.setenv("HOPTRACE_SPAN_ENCODER", "sdk")
    assert _shut(exporters.span_exporters()) == [GrpcSpanExporter]


def test_console_and_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "console")
    assert _shut(exporters.span_exporters()) == [ConsoleSpanExporter]
    assert _shut(exporters.metric_readers_and_exporters()[1]) == [ConsoleMetricExporter]
    assert _shut(exporters.log_exporters()) == [ConsoleLogRecordExporter]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,none")
    assert exporters.span_exporters() == []


def test_otlp_http_by_shared_protocol_and_per_signal_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp, console, otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert _shut(exporters.span_exporters()) == [OTLPHttpSpanExporter, ConsoleSpanExporter]
    assert _shut(exporters.metric_readers_and_exporters()[1]) == [HttpMetricExporter]
    assert _shut(exporters.log_exporters()) == [HttpLogExporter]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    assert _shut(exporters.span_exporters()) == [OTLPGrpcSpanExporter, ConsoleSpanExporter]
    assert _shut(exporters.metric_readers_and_exporters()[1]) == [HttpMetricExporter]


def test_unknown_exporter_and_protocol_are_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-ish,console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with caplog.at_level(logging.WARNING, logger="hoptrace.pipeline.telemetry.exporters"):
        assert _shut(exporters.span_exporters()) == [ConsoleSpanExporter]
        assert exporters.metric_readers_and_exporters() == ([], [])
    assert "zipkin-ish" in caplog.text and "http/json" in caplog.text


CONSOLE_SCRIPT = """
import logging
from opentelemetry import metrics, trace
from hoptrace.pipeline.telemetry.providers import configure

configure("orders-worker")
with trace.get_tracer("script").start_as_current_span("wired-span") as span:
    metrics.get_meter("script").create_histogram("wired.duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1]).record(0.2)
    logging.getLogger("script").warning("wired log line")
print("trace", trace.format_trace_id(span.get_span_context().trace_id))
"""


def test_configure_wires_the_chosen_exporters_and_flushes_at_exit() -> None:
    """A process with console exporters set globally prints all three signals when it exits."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console", OTEL_LOGS_EXPORTER="console")
    done = subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=True)
    trace_line = next(line for line in done.stdout.splitlines() if line.startswith("trace "))
    trace_id = "0x" + trace_line.split()[1]
    documents = _json_documents(done.stdout.replace(trace_line, ""))
    spans = [doc for doc in documents if "kind" in doc]
    logs = [doc for doc in documents if "body" in doc]
    (histogram,) = [doc for doc in documents if "resource_metrics" in doc]
    assert [(span["name"], span["context"]["trace_id"]) for span in spans] == [("wired-span", trace_id)]
    assert [(log["body"], log["trace_id"]) for log in logs] == [("wired log line", trace_id)]
    (metric,) = histogram["resource_metrics"][0]["scope_metrics"][0]["metrics"]
    assert metric["name"] == "wired.duration"
    assert tuple(metric["data"]["data_points"][0]["explicit_bounds"]) == (0.1, 1)
    assert "Traceback" not in done.stderr


def _json_documents(text: str) -> list[dict[str, Any]]:
    """The JSON objects printed one after another by the console exporters."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while (position := text.find("{", position)) != -1:
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


def test_no_logger_provider_when_logs_exporter_is_none(make: Callable[..., Telemetry]) -> None:
    telemetry = make()
    assert telemetry.logger_provider is None and telemetry.log_handler is None


def test_log_handler_leaves_the_root_logger_at_shutdown(monkeypatch: pytest.MonkeyPatch, make: Callable[..., Telemetry]) -> None:
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "console")
    telemetry = make()
    assert telemetry.log_handler in logging.getLogger().handlers
    assert telemetry.shutdown(timeout_s=2)
    assert telemetry.log_handler not in logging.getLogger().handlers


# --- resource and sampler -----------------------------------------------------------------


def test_resource_defaults(make: Callable[..., Telemetry]) -> None:
    attributes = make("orders-worker").tracer_provider.resource.attributes
    assert attributes["service.name"] == "orders-worker"
    assert attributes["service.version"] == version("hoptrace")
    assert attributes["process.pid"] == os.getpid()
    assert attributes["host.name"] == socket.gethostname()
    assert "os.type" in attributes and "service.instance.id" in attributes
    assert "deployment.environment.name" not in attributes


def test_resource_from_environment_wins(monkeypatch: pytest.MonkeyPatch, make: Callable[..., Telemetry]) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=payments,region=eu-west-1")
    monkeypatch.setenv("HOPTRACE_ENVIRONMENT", "staging")
    reader = InMemoryMetricReader()
    telemetry = make("orders-worker", resource_attributes={"region": "us-east-1", "tier": "gold"}, metric_readers=[reader])
    telemetry.meter_provider.get_meter("test").create_counter("jobs").add(1)
    data = reader.get_metrics_data()
    assert data is not None
    attributes = data.resource_metrics[0].resource.attributes
    assert attributes["service.name"] == "billing"
    assert attributes["team"] == "payments" and attributes["region"] == "eu-west-1" and attributes["tier"] == "gold"
    assert attributes["deployment.environment.name"] == "staging"
    assert telemetry.tracer_provider.resource.attributes == attributes


def test_sampler_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, make: Callable[..., Telemetry]) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    sampler = make().tracer_provider.sampler
    assert isinstance(sampler, ParentBasedTraceIdRatio)
    assert "TraceIdRatioBased{0.5}" in sampler.get_description()


# --- metrics ------------------------------------------------------------------------------


def test_hoptrace_histograms_use_seconds_buckets_and_leave_others_theirs(make: Callable[..., Telemetry]) -> None:
    reader = InMemoryMetricReader()
    provider = make(metric_readers=[reader]).meter_provider
    Instruments(provider).queue_wait.record(0.3, {"hoptrace.stage": "charge"})
    meter = provider.get_meter("test")
    meter.create_histogram("http.server.request.duration", unit="s", explicit_bucket_boundaries_advisory=[0.005, 0.5, 5]).record(0.3)
    meter.create_histogram("payload.size", unit="By").record(300)
    meter.create_counter("busy.time", unit="s").add(2)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: metric.data.data_points[0]
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    assert isinstance(points["hoptrace.queue.wait"], HistogramDataPoint)
    assert tuple(points["hoptrace.queue.wait"].explicit_bounds) == SECONDS_BUCKETS
    assert tuple(points["http.server.request.duration"].explicit_bounds) == (0.005, 0.5, 5)  # hoptrace imposes no View on others
    assert tuple(points["payload.size"].explicit_bounds) != SECONDS_BUCKETS
    assert not isinstance(points["busy.time"], HistogramDataPoint)


# --- bounded flush and shutdown -----------------------------------------------------------


@pytest.fixture(params=["never-answers", "refuses"])
def dead_endpoint(request: pytest.FixtureRequest) -> str:
    """An OTLP endpoint that accepts TCP connections and never answers, or a closed port."""
    if request.param == "never-answers":
        return request.getfixturevalue("silent_endpoint").url
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_shutdown_is_bounded_when_the_collector_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    make: Callable[..., Telemetry],
    dead_endpoint: str,
    protocol: str,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", dead_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    for signal in ("TRACES", "METRICS", "LOGS"):
        monkeypatch.setenv(f"OTEL_{signal}_EXPORTER", "otlp")
    telemetry = make()
    tracer = telemetry.tracer_provider.get_tracer("test")
    histogram = telemetry.meter_provider.get_meter("test").create_histogram("messaging.process.duration", unit="s")
    for number in range(20):
        with tracer.start_as_current_span(f"process {number}"):
            histogram.record(0.01)
            logging.getLogger("test.bounded").warning("message %d", number)

    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="hoptrace.pipeline.telemetry.providers"):
        finished = telemetry.shutdown(timeout_s=2)
    elapsed = time.monotonic() - start

    assert elapsed < 3.5, f"shutdown(timeout_s=2) took {elapsed:.1f} s"
    assert finished is False
    gave_up = [record for record in caplog.records if record.name == "hoptrace.pipeline.telemetry.providers"]
    assert len(gave_up) == 1 and "dropped" in gave_up[0].getMessage() and gave_up[0].exc_info is None
    start = time.monotonic()
    assert telemetry.shutdown(timeout_s=0.5) is False  # idempotent, and bounded again
    assert time.monotonic() - start < 1.5


def test_flush_is_bounded_when_the_collector_never_answers(
    monkeypatch: pytest.MonkeyPatch, make: Callable[..., Telemetry], silent_endpoint: SilentEndpoint
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", silent_endpoint.url)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    telemetry = make()
    with telemetry.tracer_provider.get_tracer("test").start_as_current_span("stuck"):
        pass
    before = set(threading.enumerate())
    start = time.monotonic()
    assert telemetry.flush(timeout_s=1) is False
    assert time.monotonic() - start < 2.5
    assert telemetry.flush(timeout_s=0.2) is False  # waits for the stuck flush, starts no other
    assert [thread.name for thread in set(threading.enumerate()) - before] == ["hoptrace-telemetry-traces"]


def test_flush_and_shutdown_succeed_in_time_with_a_working_exporter(make: Callable[..., Telemetry]) -> None:
    exported = InMemorySpanExporter()
    telemetry = make(span_processors=[SimpleSpanProcessor(exported)])
    with telemetry.tracer_provider.get_tracer("test").start_as_current_span("fine"):
        pass
    assert telemetry.flush(timeout_s=2) is True
    assert telemetry.shutdown(timeout_s=2) is True
    assert telemetry.shutdown(timeout_s=2) is True
    assert telemetry.flush(timeout_s=2) is False
    assert [span.name for span in exported.get_finished_spans()] == ["fine"]


# --- log correlation ----------------------------------------------------------------------


def test_log_records_carry_the_current_span(make: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture) -> None:
    install_log_correlation()
    factory = logging.getLogRecordFactory()
    install_log_correlation()
    assert logging.getLogRecordFactory() is factory
    tracer = make().tracer_provider.get_tracer("test")
    log = logging.getLogger("test.correlation")
    with caplog.at_level(logging.INFO, logger="test.correlation"):
        log.info("outside")
        with tracer.start_as_current_span("handler") as span:
            log.info("inside")
    outside, inside = caplog.records
    context = span.get_span_context()
    assert (inside.trace_id, inside.span_id) == (format_trace_id(context.trace_id), format_span_id(context.span_id))
    assert (outside.trace_id, outside.span_id) == ("0", "0")
    assert f"trace_id={inside.trace_id} span_id={inside.span_id}] inside" in logging.Formatter(LOG_FORMAT).format(inside)


def test_otel_metrics_exporter_prometheus_serves_hoptrace_histograms(monkeypatch: pytest.MonkeyPatch, make: Callable[..., Telemetry]) -> None:
    """A pull reader chosen from the environment (the SDK's Prometheus reader) gets hoptrace's histograms too."""
    import urllib.request

    port = free_port()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    instruments = Instruments(make().meter_provider)
    for value in (0.0005, 0.3, 0.3):
        instruments.process_duration.record(value, {"hoptrace.stage": "charge"})
    instruments.consumed.add(3, {"hoptrace.stage": "charge"})

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()

    scope = 'otel_scope_name="hoptrace",otel_scope_schema_url="",otel_scope_version=""'
    assert f'messaging_process_duration_seconds_bucket{{hoptrace_stage="charge",le="0.001",{scope}}} 1.0' in text
    assert f'messaging_process_duration_seconds_bucket{{hoptrace_stage="charge",le="0.5",{scope}}} 3.0' in text
    assert f'messaging_process_duration_seconds_count{{hoptrace_stage="charge",{scope}}} 3.0' in text
    assert f'messaging_client_consumed_messages_total{{hoptrace_stage="charge",{scope}}} 3.0' in text
