"""hoptrace's OTLP span exporters put on the wire what the SDK's exporters put there, configured and failing the same way.

Each test exports the same spans through hoptrace's exporter and the SDK's into a real
loopback receiver (a gRPC server with opentelemetry-proto's ``TraceServiceServicer``, or an
``http.server``) and compares what arrived: the request, the path, the headers/metadata.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as SDKGrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import trace_exporter as sdk_http
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as SDKHttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceServicer, add_TraceServiceServicer_to_server
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from hoptrace.pipeline.telemetry import otlp_exporters
from hoptrace.pipeline.telemetry.otlp_exporters import OTLPGrpcSpanExporter, OTLPHttpSpanExporter
from hoptrace.pipeline.telemetry.otlp_wire import SpanEncoder
from tests.conftest import SilentEndpoint, free_port
from tests.test_otlp_wire import sdk_spans

SPANS = sdk_spans()
TIMEOUT = 1.0  # seconds, for the unreachable-endpoint tests
ENV_HEADERS = "tenant=acme,x-api-key=secret%20value"  # percent-decoded by the SDK


class CountingEncoder(SpanEncoder):
    """A SpanEncoder that counts its batches, to see the exporter used it."""

    batches = 0

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        self.batches += 1
        return super().encode(spans)


class GrpcReceiver(TraceServiceServicer):
    """Keeps each request with its metadata; answers UNAVAILABLE to the first ``fail_first`` calls."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first, self.calls = fail_first, 0
        self.received: list[tuple[ExportTraceServiceRequest, dict[str, str]]] = []

    def Export(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        self.calls += 1
        if self.calls <= self.fail_first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        self.received.append((request, dict(context.invocation_metadata())))
        return ExportTraceServiceResponse()


@contextmanager
def grpc_receiver(fail_first: int = 0) -> Iterator[tuple[GrpcReceiver, int]]:
    """A receiver on an ephemeral loopback port: (receiver, port)."""
    receiver = GrpcReceiver(fail_first)
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(None)


class _HttpHandler(BaseHTTPRequestHandler):
    """Keeps (path, headers, decompressed body) of each POST and answers 200 with an empty response."""

    server: _HttpServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.received.append((self.path, {k.lower(): v for k, v in self.headers.items() if k.lower() != "content-length"}, body))
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _HttpServer(ThreadingHTTPServer):
    received: list[tuple[str, dict[str, str], bytes]]


@contextmanager
def http_receiver() -> Iterator[tuple[_HttpServer, int]]:
    """An OTLP/HTTP receiver on an ephemeral loopback port: (server, port)."""
    server = _HttpServer(("127.0.0.1", 0), _HttpHandler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def dead_port(silent: bool) -> Iterator[int]:
    """A loopback port that refuses connections, or (``silent``) accepts them and never answers."""
    if not silent:
        yield free_port()
        return
    with SilentEndpoint() as endpoint:
        yield endpoint.port


def test_grpc_export_sends_what_the_sdk_sends_with_the_same_env_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    with grpc_receiver() as (receiver, port):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ENV_HEADERS)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "5")
        encoder = CountingEncoder()
        for exporter in (SDKGrpcSpanExporter(), OTLPGrpcSpanExporter(encoder=encoder)):
            assert exporter.export(SPANS) is SpanExportResult.SUCCESS
            exporter.shutdown()
    assert encoder.batches == 1
    (sdk_request, sdk_metadata), (request, metadata) = receiver.received
    assert request == sdk_request == encode_spans(SPANS)
    assert request.SerializeToString(deterministic=True) == sdk_request.SerializeToString(deterministic=True)
    assert metadata == sdk_metadata
    assert metadata["tenant"] == "acme" and metadata["x-api-key"] == "secret value"


def test_http_export_posts_what_the_sdk_posts_with_the_same_env_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    with http_receiver() as (server, port):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ENV_HEADERS)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
        encoder = CountingEncoder()
        for exporter in (SDKHttpSpanExporter(), OTLPHttpSpanExporter(encoder=encoder)):
            assert exporter.export(SPANS) is SpanExportResult.SUCCESS
            exporter.shutdown()
    assert encoder.batches == 1
    (sdk_path, sdk_headers, sdk_body), (path, headers, body) = server.received
    assert path == sdk_path == "/v1/traces"
    assert headers == sdk_headers
    assert headers["content-encoding"] == "gzip" and headers["tenant"] == "acme"
    assert body == sdk_body == encode_spans(SPANS).SerializeToString()


def test_grpc_retry_after_unavailable_reconnects_and_still_sends_the_encoded_bytes() -> None:
    with grpc_receiver(fail_first=1) as (receiver, port):
        exporter = OTLPGrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5)
        assert exporter.export(SPANS) is SpanExportResult.SUCCESS
        exporter.shutdown()
    assert receiver.calls == 2
    assert [request for request, _ in receiver.received] == [encode_spans(SPANS)]


def _timed_export(exporter: SpanExporter) -> tuple[SpanExportResult, float]:
    started = time.monotonic()
    result = exporter.export(SPANS)
    elapsed = time.monotonic() - started
    exporter.shutdown()
    return result, elapsed


@pytest.mark.parametrize("silent", [False, True], ids=["refused", "silent"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_unreachable_endpoint_fails_within_the_timeout_like_the_sdk(protocol: str, silent: bool) -> None:
    with dead_port(silent) as port:
        if protocol == "grpc":
            pair = [cls(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=TIMEOUT) for cls in (SDKGrpcSpanExporter, OTLPGrpcSpanExporter)]
        else:
            pair = [cls(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=TIMEOUT) for cls in (SDKHttpSpanExporter, OTLPHttpSpanExporter)]
        with ThreadPoolExecutor(max_workers=2) as pool:  # side by side: one timeout's wait for both
            (sdk_result, sdk_elapsed), (result, elapsed) = pool.map(_timed_export, pair)
    assert result is sdk_result is SpanExportResult.FAILURE
    assert elapsed < TIMEOUT + 0.75, f"hoptrace took {elapsed:.2f}s, the SDK {sdk_elapsed:.2f}s"


def test_http_max_request_size_drops_the_batch_like_the_sdk() -> None:
    with http_receiver() as (server, port):
        for cls in (SDKHttpSpanExporter, OTLPHttpSpanExporter):
            exporter = cls(endpoint=f"http://127.0.0.1:{port}/v1/traces", max_request_size=100)
            assert exporter.export(SPANS) is SpanExportResult.FAILURE
    assert server.received == []


@pytest.mark.parametrize("cls", [OTLPGrpcSpanExporter, OTLPHttpSpanExporter])
def test_export_after_shutdown_fails(cls: type[SpanExporter]) -> None:
    exporter = cls(endpoint="127.0.0.1:9" if cls is OTLPGrpcSpanExporter else "http://127.0.0.1:9/v1/traces")
    exporter.shutdown()
    assert exporter.export(SPANS) is SpanExportResult.FAILURE


def test_grpc_falls_back_to_the_sdk_encoder_with_one_warning_when_its_hook_is_gone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(otlp_exporters, "_warned", set())
    monkeypatch.setattr(OTLPGrpcSpanExporter, "_initialize_channel_and_stub", OTLPExporterMixin._initialize_channel_and_stub)
    with grpc_receiver() as (receiver, port), caplog.at_level(logging.WARNING, logger=otlp_exporters.__name__):
        exporters = [OTLPGrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5) for _ in range(2)]
        assert [exporter.export(SPANS) for exporter in exporters] == [SpanExportResult.SUCCESS] * 2
    assert [request for request, _ in receiver.received] == [encode_spans(SPANS)] * 2
    assert len([r for r in caplog.records if "using the SDK's encoder" in r.getMessage()]) == 1


def test_http_falls_back_to_the_sdk_encoder_with_one_warning_when_an_internal_is_gone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(otlp_exporters, "_warned", set())
    monkeypatch.delattr(sdk_http, "RequestPayloadTooLargeError")
    with http_receiver() as (server, port), caplog.at_level(logging.WARNING, logger=otlp_exporters.__name__):
        exporters = [OTLPHttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces") for _ in range(2)]
        assert [exporter.export(SPANS) for exporter in exporters] == [SpanExportResult.SUCCESS] * 2
    assert [body for _, _, body in server.received] == [encode_spans(SPANS).SerializeToString()] * 2
    assert len([r for r in caplog.records if "using the SDK's encoder" in r.getMessage()]) == 1
