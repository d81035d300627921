"""The SDK's OTLP span exporters (gRPC and HTTP/protobuf) with `SpanEncoder` in place of the SDK's encoder.

Everything else is the SDK's own code: the constructor arguments and the ``OTEL_EXPORTER_OTLP_*``
and ``OTEL_EXPORTER_OTLP_TRACES_*`` variables (endpoint, headers, timeout, compression,
certificates, insecure), the channel or HTTP session, retries with backoff, the deadline,
shutdown and the exporter's own metrics. Only the step that turns spans into request bytes
changes.

The hooks are internals of opentelemetry-exporter-otlp-proto-{grpc,http} 1.45:

- gRPC: ``OTLPExporterMixin._translate_data`` (returns the request) and
  ``_initialize_channel_and_stub`` (sets ``_client`` from ``_channel``, also on reconnection).
  The client is replaced by `PreEncodedTraceServiceStub`, whose request serializer passes
  bytes through, and ``_translate_data`` returns the encoded bytes.
- HTTP: ``export`` is rewritten around ``_client.export(bytes)``, ``_metrics.export_operation``,
  ``_max_request_size`` and ``RequestPayloadTooLargeError``, which the SDK's ``export`` uses
  the same way after its own ``encode_spans(...).SerializePartialToString()``.

Each exporter checks its hooks at construction; when one is missing it logs one warning per
process and keeps the SDK's own encoding path, so an SDK upgrade degrades speed, not export.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as sdk_grpc
from opentelemetry.exporter.otlp.proto.http import trace_exporter as sdk_http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from hoptrace.pipeline.telemetry.otlp_wire import SpanEncoder

if TYPE_CHECKING:
    import grpc

_logger = logging.getLogger(__name__)
_warned: set[str] = set()

TRACE_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
"""The full gRPC method name of OTLP's trace export."""


def _fall_back(protocol: str, missing: str) -> None:
    """Warn, once per process and protocol, that the SDK's encoder is used because a hook is missing."""
    if protocol not in _warned:
        _warned.add(protocol)
        _logger.warning("OTLP %s span exporter: the SDK has no %s; using the SDK's encoder instead of hoptrace's", protocol, missing)


class EncodedSpans:
    """Spans already encoded (a serialized ``ExportTraceServiceRequest``), which hoptrace's exporters send as they are.

    The span spool (``span_spool``) sends the spans of a dead process this way; its length is the number of spans.
    """

    __slots__ = ("body", "count")

    def __init__(self, body: bytes, count: int) -> None:
        """BODY holding COUNT spans."""
        self.body = body
        self.count = count

    def __len__(self) -> int:
        return self.count


def accepts_encoded(exporter: object) -> bool:
    """Whether EXPORTER sends `EncodedSpans` (one of hoptrace's OTLP exporters, with its encoding hook in place)."""
    return isinstance(exporter, OTLPGrpcSpanExporter | OTLPHttpSpanExporter) and exporter._pre_encoded  # noqa: SLF001


def _as_bytes(request: bytes | ExportTraceServiceRequest) -> bytes:
    """The request serializer of `PreEncodedTraceServiceStub`: bytes pass through, a message is serialized."""
    return request if isinstance(request, bytes) else request.SerializeToString()


class PreEncodedTraceServiceStub:
    """An OTLP ``TraceService`` client whose ``Export`` takes the request already serialized (or a message)."""

    def __init__(self, channel: grpc.Channel) -> None:
        """Bind ``Export`` to ``channel``."""
        self.Export = channel.unary_unary(
            TRACE_EXPORT_METHOD, request_serializer=_as_bytes, response_deserializer=ExportTraceServiceResponse.FromString
        )


class OTLPGrpcSpanExporter(sdk_grpc.OTLPSpanExporter):
    """The SDK's gRPC ``OTLPSpanExporter`` (same arguments, variables, retries and timeout) sending `SpanEncoder`'s bytes.

    ``encoder`` may be shared between exporters; by default each has its own.
    """

    def __init__(self, *args: Any, encoder: SpanEncoder | None = None, **kwargs: Any) -> None:
        """Build the SDK exporter from ``args`` and ``kwargs``, then check the encoding hook took effect."""
        self._encoder = encoder or SpanEncoder()
        self._pre_encoded = True
        super().__init__(*args, **kwargs)
        if not isinstance(getattr(self, "_client", None), PreEncodedTraceServiceStub):
            self._pre_encoded = False
            _fall_back("gRPC", "OTLPExporterMixin._initialize_channel_and_stub setting _client from _channel")

    def _initialize_channel_and_stub(self) -> None:
        """The SDK's channel, with the client replaced by one that sends bytes (also on reconnection)."""
        super()._initialize_channel_and_stub()
        channel = getattr(self, "_channel", None)
        if self._pre_encoded and channel is not None:
            self._client = PreEncodedTraceServiceStub(channel)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        """The serialized request of ``data`` (the SDK's message when the hook is missing)."""
        if isinstance(data, EncodedSpans):
            return data.body
        return self._encoder.encode(data) if self._pre_encoded else super()._translate_data(data)


class OTLPHttpSpanExporter(sdk_http.OTLPSpanExporter):
    """The SDK's HTTP/protobuf ``OTLPSpanExporter`` (same arguments, variables, retries and timeout) posting `SpanEncoder`'s bytes.

    ``encoder`` may be shared between exporters; by default each has its own.
    """

    def __init__(self, *args: Any, encoder: SpanEncoder | None = None, **kwargs: Any) -> None:
        """Build the SDK exporter from ``args`` and ``kwargs``, then check the internals `export` relies on."""
        super().__init__(*args, **kwargs)
        self._encoder = encoder or SpanEncoder()
        missing = _missing_http_internals(self)
        self._pre_encoded = missing is None
        if missing is not None:
            _fall_back("HTTP", missing)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode ``spans`` with `SpanEncoder` and post them as the SDK's ``export`` does, size limit and metrics included."""
        if not self._pre_encoded:
            return super().export(spans)
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = spans.body if isinstance(spans, EncodedSpans) else self._encoder.encode(spans)
            except Exception as error:  # noqa: BLE001 - reported as a failed export, like the SDK
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if sdk_http._is_request_too_large(data, self._max_request_size):  # noqa: SLF001 - the SDK's own check
                _logger.warning("Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.", len(data), self._max_request_size)
                result.error = sdk_http.RequestPayloadTooLargeError(
                    f"Serialized span request size {len(data)} bytes exceeds max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code} if sent.status_code is not None else None
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def _missing_http_internals(exporter: sdk_http.OTLPSpanExporter) -> str | None:
    """The first SDK internal that `OTLPHttpSpanExporter.export` needs and ``exporter`` lacks, or None."""
    needed = {
        "_client.export": callable(getattr(getattr(exporter, "_client", None), "export", None)),
        "_metrics.export_operation": callable(getattr(getattr(exporter, "_metrics", None), "export_operation", None)),
        "_max_request_size": isinstance(getattr(exporter, "_max_request_size", None), int),
        "_shutdown": isinstance(getattr(exporter, "_shutdown", None), bool),
        "RequestPayloadTooLargeError": isinstance(getattr(sdk_http, "RequestPayloadTooLargeError", None), type),
        "_is_request_too_large": callable(getattr(sdk_http, "_is_request_too_large", None)),
    }
    return next((name for name, present in needed.items() if not present), None)
