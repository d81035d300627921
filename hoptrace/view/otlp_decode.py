"""OTLP export requests decoded into plain, typed records: the only module that knows OTLP protobuf.

Both transports of the receiver (gRPC and HTTP/protobuf) hand the request bytes of a signal in
``SIGNALS`` to its ``decode``, so a store never sees a protobuf object. Ids become lowercase hex,
enums become names, times signed 64-bit nanoseconds (as stores keep them), and ``AnyValue`` becomes
the matching Python value.

Request bodies are untrusted: ``decode`` can bound the body, its gzip inflation (``gunzip`` stops
one byte past the limit, so a gzip bomb never inflates further) and the number of records,
raising ``ExportTooLarge``; anything that does not parse raises ``InvalidExport``. What is decoded
is bounded too, whatever the sender claims: strings and bytes (attribute keys and values, names,
status messages, log bodies) are cut at ``MAX_TEXT``, and a record keeps at most ``MAX_ITEMS``
attributes, events and links (an array or key-value list at most ``MAX_ITEMS`` items), as the
SDKs' default span limits keep them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from hoptrace.view import otlp_count

Attributes = dict[str, Any]
"""Attributes (and resources) with their ``AnyValue`` values decoded."""
SignalName = Literal["traces", "metrics", "logs"]
MetricKind = Literal["sum", "gauge", "histogram", "exponential_histogram", "summary"]
_PointValues = tuple[int | float | None, int | None, float | None, tuple[int, ...] | None, tuple[float, ...] | None]


# By Span.SpanKind and Status.StatusCode number; UNSPECIFIED (0) is read as INTERNAL, as OTLP allows.
def text_attribute(attributes: Attributes, key: str) -> str | None:
    """The attribute KEY when it is a string."""
    value = attributes.get(key)
    return value if isinstance(value, str) else None


def int_attribute(attributes: Attributes, key: str) -> int | None:
    """The attribute KEY when it is an integer (not a bool)."""
    value = attributes.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_SPAN_KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One finished span as it arrived over OTLP."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    """INTERNAL, SERVER, CLIENT, PRODUCER or CONSUMER."""
    start_ns: int
    end_ns: int
    attributes: Attributes
    status_code: str
    """UNSET, OK or ERROR."""
    status_message: str
    events: tuple[tuple[str, Attributes], ...]
    """``(name, attributes)`` per event, in recorded order."""
    links: tuple[tuple[str, str, Attributes], ...]
    """``(trace_id, span_id, attributes)`` per link."""
    resource: Attributes
    scope_name: str


@dataclass(frozen=True)
class MetricPoint:
    """One data point of one metric in one export."""

    name: str
    unit: str
    description: str
    kind: MetricKind
    monotonic: bool | None
    """Set for sums only."""
    attributes: Attributes
    resource: Attributes
    time_ns: int
    value: int | float | None
    """Set for sums and gauges only."""
    count: int | None
    """Set for histograms and summaries."""
    sum: float | None
    """Set for histograms (when recorded) and summaries."""
    bucket_counts: tuple[int, ...] | None
    """Set for explicit-bucket histograms only."""
    explicit_bounds: tuple[float, ...] | None
    """Set for explicit-bucket histograms only."""


@dataclass(frozen=True)
class ReceivedLog:
    """One log record as it arrived over OTLP."""

    body: Any
    severity_text: str
    severity_number: int
    trace_id: str | None
    span_id: str | None
    attributes: Attributes
    resource: Attributes
    time_ns: int
    """The event time, or the observed time when the sender did not know the event time."""


MAX_TEXT = 4096
"""The longest string (in characters) or bytes value kept of what arrives; a longer string is cut to this length, its last character ``CUT``."""
MAX_ITEMS = 128
"""The most attributes, events or links kept per record, and items per array or key-value list; the first ones are kept."""
CUT = "…"
"""The last character of a string that was cut at ``MAX_TEXT``."""


def text(value: str) -> str:
    """VALUE, cut to ``MAX_TEXT`` characters (ending with ``CUT``) when longer."""
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + CUT


def decode_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as Python: str, bool, int, float, bytes, list, dict, or None when empty; within ``MAX_TEXT`` and ``MAX_ITEMS``."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return text(value.string_value)
    if which == "bytes_value":
        return value.bytes_value[:MAX_TEXT]
    if which == "array_value":
        return [decode_value(item) for item in islice(value.array_value.values, MAX_ITEMS)]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return None if which is None else getattr(value, which)


def decode_attributes(pairs: Iterable[KeyValue]) -> Attributes:
    """OTLP key-value pairs as a dict: the first ``MAX_ITEMS``, keys and values within ``MAX_TEXT``."""
    return {text(pair.key): decode_value(pair.value) for pair in islice(pairs, MAX_ITEMS)}


_MAX_NS = 2**63 - 1


def _ns(value: int) -> int:
    """An OTLP time (unsigned 64-bit nanoseconds) as a signed 64-bit one, as stores keep them: past 2262 reads as 2262."""
    return min(value, _MAX_NS)


def _hex_id(raw: bytes) -> str | None:
    """A trace or span id as lowercase hex; None when it is empty or all zeros (invalid)."""
    return raw.hex() if raw.strip(b"\0") else None


def decode_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Every span of a trace export request, in request order."""
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_span(span, resource, text(scope_spans.scope.name)) for span in scope_spans.spans)
    return spans


def _span(span: Span, resource: Attributes, scope_name: str) -> ReceivedSpan:
    """One OTLP span as a record."""
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=_hex_id(span.parent_span_id),
        name=text(span.name),
        kind=_SPAN_KINDS.get(span.kind, "INTERNAL"),
        start_ns=_ns(span.start_time_unix_nano),
        end_ns=_ns(span.end_time_unix_nano),
        attributes=decode_attributes(span.attributes),
        status_code=_STATUS_CODES.get(span.status.code, "UNSET"),
        status_message=text(span.status.message),
        events=tuple((text(event.name), decode_attributes(event.attributes)) for event in islice(span.events, MAX_ITEMS)),
        links=tuple((link.trace_id.hex(), link.span_id.hex(), decode_attributes(link.attributes)) for link in islice(span.links, MAX_ITEMS)),
        resource=resource,
        scope_name=scope_name,
    )


def decode_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[MetricPoint]:
    """Every data point of a metrics export request, in request order."""
    points: list[MetricPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = decode_attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points.extend(_metric_points(metric, resource))
    return points


def _metric_points(metric: Metric, resource: Attributes) -> Iterator[MetricPoint]:
    """The data points of one metric (none when the metric carries no data)."""
    kind: MetricKind | None = metric.WhichOneof("data")
    if kind is None:
        return
    data = getattr(metric, kind)
    for point in data.data_points:
        value, count, total, bucket_counts, explicit_bounds = _point_values(kind, point)
        yield MetricPoint(
            name=text(metric.name),
            unit=text(metric.unit),
            description=text(metric.description),
            kind=kind,
            monotonic=data.is_monotonic if kind == "sum" else None,
            attributes=decode_attributes(point.attributes),
            resource=resource,
            time_ns=_ns(point.time_unix_nano),
            value=value,
            count=count,
            sum=total,
            bucket_counts=bucket_counts,
            explicit_bounds=explicit_bounds,
        )


def _point_values(kind: MetricKind, point: Any) -> _PointValues:
    """``(value, count, sum, bucket_counts, explicit_bounds)`` of one data point of the given kind."""
    if kind in ("sum", "gauge"):
        which = point.WhichOneof("value")
        return (None if which is None else getattr(point, which)), None, None, None, None
    total = point.sum if kind == "summary" or point.HasField("sum") else None
    if kind == "histogram":
        return None, point.count, total, tuple(point.bucket_counts), tuple(point.explicit_bounds)
    return None, point.count, total, None, None


def decode_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> list[ReceivedLog]:
    """Every log record of a logs export request, in request order."""
    logs: list[ReceivedLog] = []
    for resource_logs in request.resource_logs:
        resource = decode_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            logs.extend(_log(record, resource) for record in scope_logs.log_records)
    return logs


def _log(record: LogRecord, resource: Attributes) -> ReceivedLog:
    """One OTLP log record as a record."""
    return ReceivedLog(
        body=decode_value(record.body),
        severity_text=record.severity_text,
        severity_number=record.severity_number,
        trace_id=_hex_id(record.trace_id),
        span_id=_hex_id(record.span_id),
        attributes=decode_attributes(record.attributes),
        resource=resource,
        time_ns=_ns(record.time_unix_nano or record.observed_time_unix_nano),
    )


class InvalidExport(ValueError):
    """An export request body that is not a (gzip-compressed) OTLP protobuf request of its signal."""


class ExportTooLarge(InvalidExport):
    """An export request over a limit: its body, its body once inflated, or its number of records."""


def gunzip(body: bytes, max_bytes: int | None = None) -> bytes:
    """BODY (gzip: one member or several in a row; empty is none) inflated.

    Inflating stops one byte past MAX_BYTES and raises ExportTooLarge, so a gzip bomb costs at
    most MAX_BYTES + 1 bytes of output, never its inflated size. Raises InvalidExport when BODY
    is not complete gzip.
    """
    inflated: list[bytes] = []
    size = 0
    rest = body
    while rest:
        member = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer, checked
        try:
            chunk = member.decompress(rest, 0 if max_bytes is None else max_bytes - size + 1)
        except zlib.error as error:
            raise InvalidExport(f"not gzip: {error}") from error
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise ExportTooLarge(f"more than {max_bytes} bytes once inflated")
        if not member.eof:
            raise InvalidExport("not gzip: the stream ends early")
        inflated.append(chunk)
        rest = member.unused_data.lstrip(b"\0")  # zero padding between members, as gzip.decompress allows
    return b"".join(inflated)


@dataclass(frozen=True)
class OtlpSignal:
    """One OTLP signal on the wire: its HTTP path, its gRPC service, and how its requests decode."""

    name: SignalName
    grpc_service: str
    """The full name of the collector service, whose only method is ``Export``."""
    request_type: type[Message]
    response: bytes
    """The serialized empty Export*ServiceResponse, the answer to every accepted request."""
    decoder: Callable[[Any], list[Any]]
    records: otlp_count.RecordPath
    """Where its records (spans, data points, log records) are in a request, to count them on the wire before parsing it."""

    @property
    def path(self) -> str:
        """The OTLP/HTTP path, e.g. ``/v1/traces``."""
        return f"/v1/{self.name}"

    def decode(
        self, body: bytes, gzipped: bool = False, max_bytes: int | None = None, max_records: int | None = None, max_parts: int | None = None
    ) -> list[Any]:
        """The records of one request body; raises InvalidExport when it does not parse.

        Raises ExportTooLarge when the body, or its inflation when GZIPPED, is over MAX_BYTES, or
        when it holds more than MAX_RECORDS records or more than MAX_PARTS fields in them (counted on
        the wire, before it is parsed: ``otlp_count``).
        """
        if max_bytes is not None and len(body) > max_bytes:
            raise ExportTooLarge(f"a body over {max_bytes} bytes")
        raw = gunzip(body, max_bytes) if gzipped else body
        if max_records is not None or max_parts is not None:
            try:
                otlp_count.count(raw, self.records, max_records or len(raw), max_parts or len(raw))
            except otlp_count.OverBound as error:
                raise ExportTooLarge(str(error)) from error
            except otlp_count.Malformed as error:
                raise InvalidExport(f"not an OTLP {self.name} export request: {error}") from error
        try:
            request = self.request_type.FromString(raw)
        except DecodeError as error:
            raise InvalidExport(f"not an OTLP {self.name} export request: {error}") from error
        return self.decoder(request)


def _signal(name: SignalName, module: Any, service: str, decoder: Callable[[Any], list[Any]], records: otlp_count.RecordPath) -> OtlpSignal:
    """The signal of an OTLP collector service module, e.g. ``trace_service_pb2`` and ``"Trace"``."""
    return OtlpSignal(
        name=name,
        grpc_service=module.DESCRIPTOR.services_by_name[f"{service}Service"].full_name,
        request_type=getattr(module, f"Export{service}ServiceRequest"),
        response=getattr(module, f"Export{service}ServiceResponse")().SerializeToString(),
        decoder=decoder,
        records=records,
    )


SIGNALS = (
    _signal("traces", trace_service_pb2, "Trace", decode_spans, otlp_count.SPANS),
    _signal("metrics", metrics_service_pb2, "Metrics", decode_metrics, otlp_count.DATA_POINTS),
    _signal("logs", logs_service_pb2, "Logs", decode_logs, otlp_count.LOG_RECORDS),
)
"""The three OTLP signals, decoding into ReceivedSpan, MetricPoint and ReceivedLog records."""
