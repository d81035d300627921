"""The embedded OTLP receiver (``hoptrace watch``) against hostile requests, on gRPC and HTTP.

- Fuzzed bodies (hypothesis): valid export requests of every signal, generated, then
  truncated, flipped, spliced, replaced by garbage, gzip-compressed (and that mutated too),
  posted to every signal's endpoint. The answer is exactly what the OTLP specification asks:
  HTTP 200 / gRPC OK with every record stored when the body decodes (the protobuf library and
  zlib decide, as the oracle), HTTP 400 / ``INVALID_ARGUMENT`` when it does not; and a valid
  export still works after each bad one. The store is the SQLite one ``watch`` embeds.
- Wrong requests: content types, encodings, paths, methods, ``Content-Length`` values, short
  bodies, garbage on the wire: 415 / 404 / 405 / 411 / 400 with a ``google.rpc.Status`` body.
- Limits: ``MAX_MESSAGE_BYTES`` on the wire and once inflated, ``MAX_RECORDS`` per request, on
  both transports (413 / ``RESOURCE_EXHAUSTED``), exactly at the bound and one past it; busy
  (503 with ``Retry-After`` / ``RESOURCE_EXHAUSTED``) past ``MAX_CONCURRENT_EXPORTS``.
- Memory: gzip bombs of 1 GiB (one member and many) and a gRPC message inflating to 128 MiB
  are refused by a receiver in its own process, whose peak resident memory stays within a
  few times the limit (it would grow by the bomb's size if inflated).
- Binding: loopback unless asked, read back from the kernel's socket table.

Hypothesis runs derandomized, without an example database (see tests/test_fuzz_headers.py).
"""

from __future__ import annotations

import gzip
import http.client
import logging
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from google.rpc.status_pb2 import Status
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1 import metrics_pb2 as metrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as SpanStatus

from hoptrace.view import otlp_count, otlp_decode
from hoptrace.view import receiver as receiver_module
from hoptrace.view.otlp_decode import SIGNALS, ExportTooLarge, OtlpSignal
from hoptrace.view.receiver import MAX_CONCURRENT_EXPORTS, MAX_MESSAGE_BYTES, MAX_PARTS, MAX_RECORDS, PROTOBUF, OtlpReceiver
from hoptrace.view.sqlite_store import SqliteTraceStore
from tests.test_fuzz_headers import fuzz_settings

TIMEOUT_S = 10
TRACES, METRICS, LOGS = SIGNALS
MiB = 1024 * 1024


class CountingSink:
    """A ``TelemetrySink`` that counts what it is handed and passes it on (to the store ``watch`` uses, or nowhere)."""

    def __init__(self, store: Any = None) -> None:
        self.store = store
        self.records = 0
        self.release = threading.Event()
        self.release.set()
        """Cleared, every add waits for it: exports then stay in flight."""
        self._lock = threading.Lock()

    def _add(self, kind: str, records: Iterable[Any]) -> None:
        self.release.wait(timeout=60)
        records = list(records)
        with self._lock:
            self.records += len(records)
        if self.store is not None:
            getattr(self.store, kind)(records)

    def add_spans(self, spans: Iterable[Any]) -> None:
        """Count, then store the spans."""
        self._add("add_spans", spans)

    def add_metrics(self, points: Iterable[Any]) -> None:
        """Count, then store the points."""
        self._add("add_metrics", points)

    def add_logs(self, logs: Iterable[Any]) -> None:
        """Count, then store the log records."""
        self._add("add_logs", logs)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OtlpReceiver, CountingSink]]:
    """A receiver storing into a SQLite trace store, as ``hoptrace watch`` runs it."""
    with SqliteTraceStore(tmp_path_factory.mktemp("watch") / "traces.sqlite") as store:
        sink = CountingSink(store)
        with OtlpReceiver(sink) as receiver:
            yield receiver, sink


@pytest.fixture
def counted() -> Iterator[tuple[OtlpReceiver, CountingSink]]:
    """A receiver that only counts what it accepts (for requests too big for a store to be worth it)."""
    sink = CountingSink()
    with OtlpReceiver(sink) as receiver:
        yield receiver, sink


# --- talking to it -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> str:
        """The ``google.rpc.Status`` message of an error body."""
        return str(Status.FromString(self.body).message)


def request(port: int, head: str, body: bytes = b"", half_close: bool = False) -> Answer:
    """Send HEAD (request line and headers, ``\\r\\n``-separated, without the blank line) and BODY raw; read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as connection:
        connection.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return Answer(response.status, {name.lower(): value for name, value in response.getheaders()}, response.read())


def post(port: int, path: str, body: bytes, content_type: str = PROTOBUF, **headers: str) -> Answer:
    """POST BODY to PATH with a Content-Length, the content type and HEADERS (``Content_Encoding="gzip"``)."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return request(port, "\r\n".join(lines), body)


def grpc_export(
    port: int, signal: OtlpSignal, body: bytes, compression: grpc.Compression | None = None, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.StatusCode:
    """Call SIGNAL's Export with raw BODY (and METADATA); the status code (OK only with the empty response)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1)]) as channel:
        export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{signal.grpc_service}/Export")
        try:
            response = export(body, timeout=TIMEOUT_S, compression=compression, metadata=metadata)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[attr-defined,no-any-return]
    assert response == signal.response
    return grpc.StatusCode.OK


def one_span() -> bytes:
    """A small valid trace export request."""
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="still works", start_time_unix_nano=1, end_time_unix_nano=2)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]).SerializeToString()


def assert_still_works(receiver: OtlpReceiver, sink: CountingSink) -> None:
    """A valid export is accepted and stored on both transports."""
    before = sink.records
    assert post(receiver.http_port, "/v1/traces", one_span()).status == 200
    assert grpc_export(receiver.grpc_port, TRACES, one_span()) == grpc.StatusCode.OK
    assert sink.records == before + 2


# --- generated requests --------------------------------------------------------------------

_TEXT = st.text(max_size=8)
_TIME = st.integers(0, 2**64 - 1)  # fixed64: past 2262 too
_LEAVES = st.one_of(
    st.builds(lambda value: AnyValue(string_value=value), _TEXT),
    st.builds(lambda value: AnyValue(bool_value=value), st.booleans()),
    st.builds(lambda value: AnyValue(int_value=value), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda value: AnyValue(double_value=value), st.floats()),
    st.builds(lambda value: AnyValue(bytes_value=value), st.binary(max_size=8)),
    st.just(AnyValue()),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda values: AnyValue(array_value=ArrayValue(values=values))),
        st.lists(st.builds(KeyValue, key=_TEXT, value=inner), max_size=3).map(lambda pairs: AnyValue(kvlist_value=KeyValueList(values=pairs))),
    ),
    max_leaves=6,
)
_ATTRIBUTES = st.lists(st.builds(KeyValue, key=_TEXT, value=_VALUES), max_size=3)
_RESOURCE = st.builds(Resource, attributes=_ATTRIBUTES)
_SCOPE = st.builds(InstrumentationScope, name=_TEXT, version=_TEXT)
_IDS = (st.binary(min_size=16, max_size=16) | st.binary(max_size=20), st.binary(min_size=8, max_size=8) | st.binary(max_size=10))

_SPANS = st.builds(
    Span,
    trace_id=_IDS[0],
    span_id=_IDS[1],
    parent_span_id=_IDS[1],
    name=_TEXT,
    kind=st.integers(0, 5),
    start_time_unix_nano=_TIME,
    end_time_unix_nano=_TIME,
    attributes=_ATTRIBUTES,
    events=st.lists(st.builds(Span.Event, name=_TEXT, time_unix_nano=_TIME, attributes=_ATTRIBUTES), max_size=2),
    links=st.lists(st.builds(Span.Link, trace_id=_IDS[0], span_id=_IDS[1], attributes=_ATTRIBUTES), max_size=2),
    status=st.builds(SpanStatus, code=st.integers(0, 2), message=_TEXT),
)
_NUMBERS = st.one_of(
    st.builds(metrics.NumberDataPoint, as_int=st.integers(-(2**63), 2**63 - 1), time_unix_nano=_TIME, attributes=_ATTRIBUTES),
    st.builds(metrics.NumberDataPoint, as_double=st.floats(), time_unix_nano=_TIME, attributes=_ATTRIBUTES),
    st.builds(metrics.NumberDataPoint, time_unix_nano=_TIME),
)
_COUNTS = st.lists(st.integers(0, 2**64 - 1), max_size=4)
_DATA = st.one_of(
    st.builds(lambda points: {"gauge": metrics.Gauge(data_points=points)}, st.lists(_NUMBERS, max_size=3)),
    st.builds(
        lambda points, monotonic: {"sum": metrics.Sum(data_points=points, is_monotonic=monotonic, aggregation_temporality=2)},
        st.lists(_NUMBERS, max_size=3),
        st.booleans(),
    ),
    st.builds(
        lambda points: {"histogram": metrics.Histogram(data_points=points, aggregation_temporality=1)},
        st.lists(
            st.builds(
                metrics.HistogramDataPoint,
                count=st.integers(0, 2**64 - 1),
                sum=st.floats(),
                bucket_counts=_COUNTS,
                explicit_bounds=st.lists(st.floats(), max_size=3),
            ),
            max_size=2,
        ),
    ),
    st.builds(
        lambda points: {"exponential_histogram": metrics.ExponentialHistogram(data_points=points)},
        st.lists(st.builds(metrics.ExponentialHistogramDataPoint, count=st.integers(0, 99), scale=st.integers(-10, 20)), max_size=2),
    ),
    st.builds(
        lambda points: {"summary": metrics.Summary(data_points=points)},
        st.lists(st.builds(metrics.SummaryDataPoint, count=st.integers(0, 99), sum=st.floats()), max_size=2),
    ),
    st.just({}),
)
_METRICS = st.builds(lambda name, unit, data: metrics.Metric(name=name, unit=unit, **data), _TEXT, _TEXT, _DATA)
_LOGS = st.builds(
    LogRecord,
    time_unix_nano=_TIME,
    observed_time_unix_nano=_TIME,
    severity_number=st.integers(0, 24),
    severity_text=_TEXT,
    body=_VALUES,
    attributes=_ATTRIBUTES,
    trace_id=_IDS[0],
    span_id=_IDS[1],
)
_REQUESTS: dict[str, st.SearchStrategy[Message]] = {
    "traces": st.builds(
        lambda resource, scope, spans: ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])]
        ),
        _RESOURCE,
        _SCOPE,
        st.lists(_SPANS, max_size=3),
    ),
    "metrics": st.builds(
        lambda resource, scope, items: ExportMetricsServiceRequest(
            resource_metrics=[metrics.ResourceMetrics(resource=resource, scope_metrics=[metrics.ScopeMetrics(scope=scope, metrics=items)])]
        ),
        _RESOURCE,
        _SCOPE,
        st.lists(_METRICS, max_size=3),
    ),
    "logs": st.builds(
        lambda resource, scope, records: ExportLogsServiceRequest(
            resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(scope=scope, log_records=records)])]
        ),
        _RESOURCE,
        _SCOPE,
        st.lists(_LOGS, max_size=3),
    ),
}


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """DATA as it is, or truncated, with a byte flipped, bytes inserted or cut out, a bad field appended, or replaced by garbage."""
    how = draw(st.sampled_from(["as is", "as is", "truncate", "flip", "insert", "cut", "bad field", "garbage"]))
    if how == "garbage" or (not data and how != "as is"):
        return draw(st.binary(max_size=300))
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if how == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if how == "cut":
        return data[:at] + data[at + draw(st.integers(1, 16)) :]
    if how == "bad field":  # wire type 7 (none), a length past the end, a runaway varint, a group never closed
        return data + draw(st.sampled_from([b"\x0f", b"\x0a\x7f", b"\x08" + b"\xff" * 11, b"\x0b", b"\x00"]))
    return data


@st.composite
def bodies(draw: st.DrawFn) -> tuple[OtlpSignal, bytes, bool]:
    """``(signal, body, gzipped)``: a generated request of SIGNAL, maybe mutated, maybe gzip-compressed (and maybe mutated again)."""
    signal = draw(st.sampled_from(SIGNALS))
    body = draw(mutated(draw(_REQUESTS[signal.name]).SerializeToString()))
    gzipped = draw(st.booleans())
    if gzipped:
        body = gzip.compress(body, mtime=0)
        body = draw(st.one_of(st.just(body), mutated(body), st.sampled_from([body + b"\0\0", body + body, body + b"junk", body[:-4]])))
    return signal, body, gzipped


def inflate(body: bytes) -> bytes:
    """The oracle's gzip: zlib's reader (RFC 1952, header flags and trailer checked), member after member, zero padding between."""
    inflated, rest = b"", body
    while rest:
        member = zlib.decompressobj(wbits=31)
        inflated += member.decompress(rest)
        if not member.eof:
            raise ValueError("truncated")
        rest = member.unused_data.lstrip(b"\0")
    return inflated


def decodable(signal: OtlpSignal, body: bytes, gzipped: bool) -> int | None:
    """The oracle: how many records BODY holds when it decodes as SIGNAL's request (protobuf's own parser decides); else None."""
    try:
        request = signal.request_type.FromString(inflate(body) if gzipped else body)
    except (DecodeError, zlib.error, ValueError):
        return None
    return len(signal.decoder(request))


# --- fuzzed bodies -------------------------------------------------------------------------


@fuzz_settings(250)
@given(case=bodies())
def test_any_body_is_stored_or_answered_400_over_http_and_the_receiver_keeps_working(
    watched: tuple[OtlpReceiver, CountingSink], case: tuple[OtlpSignal, bytes, bool]
) -> None:
    """200 and every record stored when the body decodes; 400 with a Status, counted as rejected, when it does not."""
    receiver, sink = watched
    signal, body, gzipped = case
    records = decodable(signal, body, gzipped)
    before, rejected = sink.records, receiver.rejected

    answer = post(receiver.http_port, signal.path, body, **({"Content_Encoding": "gzip"} if gzipped else {}))

    assert answer.headers["content-type"] == PROTOBUF
    if records is None:
        assert (answer.status, sink.records, receiver.rejected) == (400, before, rejected + 1)
        assert answer.message.startswith(("not an OTLP", "not gzip"))
        assert_still_works(receiver, sink)
    else:
        assert (answer.status, answer.body, sink.records, receiver.rejected) == (200, signal.response, before + records, rejected)


@fuzz_settings(250)
@given(case=bodies().filter(lambda case: not case[2]))
def test_any_body_is_stored_or_invalid_argument_over_grpc_and_the_receiver_keeps_working(
    watched: tuple[OtlpReceiver, CountingSink], case: tuple[OtlpSignal, bytes, bool]
) -> None:
    """OK and every record stored when the message decodes; INVALID_ARGUMENT, counted as rejected, when it does not."""
    receiver, sink = watched
    signal, body, _ = case
    records = decodable(signal, body, False)
    before, rejected = sink.records, receiver.rejected

    code = grpc_export(receiver.grpc_port, signal, body)

    if records is None:
        assert (code, sink.records, receiver.rejected) == (grpc.StatusCode.INVALID_ARGUMENT, before, rejected + 1)
        assert_still_works(receiver, sink)
    else:
        assert (code, sink.records, receiver.rejected) == (grpc.StatusCode.OK, before + records, rejected)


@fuzz_settings(250)
@given(case=bodies().filter(lambda case: not case[2]))
def test_records_counted_on_the_wire_are_the_records_protobuf_parses(case: tuple[OtlpSignal, bytes, bool]) -> None:
    """The count before parsing agrees with the parser: every body it takes is counted whole, and one it finds broken does not parse."""
    signal, body, _ = case
    records = decodable(signal, body, False)
    try:
        counted = otlp_count.count(body, signal.records, len(body) + 1, len(body) + 1).records
    except otlp_count.Malformed:
        assert records is None
    else:
        assert records is None or counted == records


def test_a_span_timed_past_2262_is_stored_not_crashing_the_store(watched: tuple[OtlpReceiver, CountingSink]) -> None:
    """Shrunk from the fuzzer: a fixed64 time of 2**64 - 1 made SQLite raise OverflowError inside the request (no answer at all)."""
    receiver, sink = watched
    span = Span(trace_id=b"\x07" * 16, span_id=b"\x08" * 8, start_time_unix_nano=2**64 - 1, end_time_unix_nano=2**64 - 1)
    body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]).SerializeToString()
    before = sink.records
    assert post(receiver.http_port, "/v1/traces", body).status == 200
    assert sink.records == before + 1
    [received] = TRACES.decode(body)
    assert (received.start_ns, received.end_ns) == (2**63 - 1, 2**63 - 1)


# --- wrong requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "body", "status", "allow"),
    [
        pytest.param("POST /v1/traces HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2", b"{}", 415, None, id="json"),
        pytest.param("POST /v1/logs HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 0", b"", 415, None, id="text"),
        pytest.param("POST /v1/metrics HTTP/1.1\r\nContent-Length: 0", b"", 415, None, id="no-content-type"),
        pytest.param(f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Encoding: br\r\nContent-Length: 0", b"", 415, None, id="br"),
        pytest.param(
            f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Encoding: deflate\r\nContent-Length: 0", b"", 415, None, id="deflate"
        ),
        pytest.param(
            f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Encoding: gzip, br\r\nContent-Length: 0",
            b"",
            415,
            None,
            id="two-codings",
        ),
        pytest.param(f"POST /v1/trace HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: 0", b"", 404, None, id="trace"),
        pytest.param(f"POST /v1/traces/x HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: 0", b"", 404, None, id="below"),
        pytest.param(f"POST / HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: 3", b"abc", 404, None, id="root"),
        pytest.param("GET /v1/traces HTTP/1.1", b"", 405, "POST", id="get"),
        pytest.param("PUT /v1/metrics HTTP/1.1\r\nContent-Length: 0", b"", 405, "POST", id="put"),
        pytest.param("DELETE /v1/logs HTTP/1.1", b"", 405, "POST", id="delete"),
        pytest.param("PATCH /v1/traces HTTP/1.1", b"", 405, "POST", id="patch"),
        pytest.param("OPTIONS /v1/traces HTTP/1.1", b"", 405, "POST", id="options"),
        pytest.param("GET /metrics HTTP/1.1", b"", 404, None, id="get-elsewhere"),
        pytest.param(f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}", b"", 411, None, id="no-length"),
        pytest.param(f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: abc", b"", 400, None, id="length-abc"),
        pytest.param(f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: \xb2", b"", 400, None, id="length-superscript-two"),
        pytest.param(
            f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {'9' * 5000}", b"", 400, None, id="length-5000-digits"
        ),
        pytest.param(f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: -1", b"", 400, None, id="length-negative"),
        pytest.param(f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: 1e3", b"", 400, None, id="length-exponent"),
        pytest.param(
            f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {MAX_MESSAGE_BYTES + 1}", b"", 413, None, id="too-long"
        ),
    ],
)
def test_a_wrong_request_gets_the_status_the_specification_asks_for(
    watched: tuple[OtlpReceiver, CountingSink], head: str, body: bytes, status: int, allow: str | None
) -> None:
    """Wrong type, encoding, path, method or length: the exact status, a protobuf ``Status`` saying why, nothing stored or counted."""
    receiver, sink = watched
    before, rejected = sink.records, receiver.rejected

    answer = request(receiver.http_port, head, body)

    assert (answer.status, answer.headers["content-type"], answer.headers.get("allow")) == (status, PROTOBUF, allow)
    assert answer.message != ""
    assert (sink.records, receiver.rejected) == (before, rejected)
    assert_still_works(receiver, sink)


def test_head_gets_405_without_a_body(watched: tuple[OtlpReceiver, CountingSink]) -> None:
    """HEAD: the status and headers GET would get, and no body."""
    receiver, _ = watched
    with socket.create_connection(("127.0.0.1", receiver.http_port), timeout=TIMEOUT_S) as connection:
        connection.sendall(b"HEAD /v1/traces HTTP/1.1\r\n\r\n")
        response = http.client.HTTPResponse(connection, method="HEAD")
        response.begin()
        assert (response.status, response.getheader("Allow"), response.read()) == (405, "POST", b"")


def test_a_body_shorter_than_its_length_is_400(watched: tuple[OtlpReceiver, CountingSink]) -> None:
    """A client that sends 5 bytes of 100 and stops: 400, not a parse of what came."""
    receiver, sink = watched
    answer = request(
        receiver.http_port, f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: 100", b"\x0a\x03\x12\x01\x00", half_close=True
    )
    assert (answer.status, answer.message) == (400, "the body ended before Content-Length")
    assert_still_works(receiver, sink)


def test_a_query_string_and_content_type_parameters_are_fine(watched: tuple[OtlpReceiver, CountingSink]) -> None:
    """``/v1/traces?x=1`` and ``application/x-protobuf; charset=binary``: still the traces endpoint."""
    receiver, sink = watched
    before = sink.records
    assert post(receiver.http_port, "/v1/traces?x=1", one_span(), content_type=f"{PROTOBUF}; charset=binary").status == 200
    assert sink.records == before + 1


@pytest.mark.parametrize("garbage", [b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64, bytes(range(256))])
def test_garbage_on_either_port_leaves_both_transports_working(watched: tuple[OtlpReceiver, CountingSink], garbage: bytes) -> None:
    """Bytes that are not HTTP/1 on the HTTP port and not HTTP/2 on the gRPC port: the connection ends, the receiver stays."""
    receiver, sink = watched
    for port in (receiver.http_port, receiver.grpc_port):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as connection:
            connection.sendall(garbage)
            connection.shutdown(socket.SHUT_WR)
            while connection.recv(65536):
                pass
    assert_still_works(receiver, sink)


def test_an_unknown_grpc_method_is_unimplemented(watched: tuple[OtlpReceiver, CountingSink]) -> None:
    """Another service or method on the gRPC port: UNIMPLEMENTED (gRPC's own answer)."""
    receiver, _ = watched
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        for method in ("/opentelemetry.proto.collector.trace.v1.TraceService/Query", "/jaeger.api_v2.CollectorService/PostSpans"):
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(method)(b"", timeout=TIMEOUT_S)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


# --- limits --------------------------------------------------------------------------------


def traces_of_size(size: int) -> bytes:
    """A valid trace export request of exactly SIZE bytes: one span with a long attribute (and a name to step over varint widths)."""
    for name in ("", "n", "nn"):
        pad = size
        for _ in range(4):
            span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name=name, attributes=[KeyValue(key="k", value=AnyValue(string_value="x" * pad))])
            built = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
            if built.ByteSize() == size:
                return built.SerializeToString()
            pad -= built.ByteSize() - size
    raise AssertionError(f"no request of {size} bytes")


def empty_records(signal: OtlpSignal, count: int) -> bytes:
    """A request of SIGNAL holding COUNT empty records (2 bytes each on the wire)."""
    if signal is TRACES:
        return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[Span()] * count)])]).SerializeToString()
    if signal is LOGS:
        return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord()] * count)])]).SerializeToString()
    gauge = metrics.Metric(name="g", gauge=metrics.Gauge(data_points=[metrics.NumberDataPoint()] * count))
    return ExportMetricsServiceRequest(
        resource_metrics=[metrics.ResourceMetrics(scope_metrics=[metrics.ScopeMetrics(metrics=[gauge])])]
    ).SerializeToString()


@pytest.mark.parametrize("shape", ["4 million empty spans", "a span of a million empty attributes"])
def test_a_body_that_would_take_hundreds_of_megabytes_to_parse_is_refused_before_it_is_parsed(
    counted: tuple[OtlpReceiver, CountingSink], shape: str
) -> None:
    """Shapes from the review: parsing first made one 8 MiB body of 4 million empty spans cost ~670 MB before it was refused."""
    receiver, sink = counted

    def field(number: int, payload: bytes) -> bytes:  # a length-delimited field, written by hand: building these as messages is the cost itself
        length, size = b"", len(payload)
        while size > 0x7F:
            length, size = length + bytes([size & 0x7F | 0x80]), size >> 7
        return bytes([number << 3 | 2]) + length + bytes([size]) + payload

    if shape == "4 million empty spans":
        spans, said = field(2, b"") * 4_000_000, f"more than {MAX_RECORDS} records"
    else:
        spans, said = field(2, field(9, b"") * (MAX_PARTS + 1)), f"more than {MAX_PARTS} fields in its records"
    body = field(1, field(2, spans))  # resource_spans { scope_spans { spans... } }
    assert len(body) <= MAX_MESSAGE_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(ExportTooLarge, match=said):
            TRACES.decode(body, max_bytes=MAX_MESSAGE_BYTES, max_records=MAX_RECORDS, max_parts=MAX_PARTS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # counted on the wire: not one message was built
    answer = post(receiver.http_port, "/v1/traces", body)
    assert (answer.status, answer.message) == (413, said)
    assert grpc_export(receiver.grpc_port, TRACES, body) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (sink.records, receiver.rejected) == (0, 2)


def test_a_request_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413_or_resource_exhausted(
    counted: tuple[OtlpReceiver, CountingSink],
) -> None:
    """MAX_MESSAGE_BYTES on the wire: accepted on both transports; one byte more: refused on both."""
    receiver, sink = counted
    at_limit, over = traces_of_size(MAX_MESSAGE_BYTES), traces_of_size(MAX_MESSAGE_BYTES + 1)
    assert post(receiver.http_port, "/v1/traces", at_limit).status == 200
    assert grpc_export(receiver.grpc_port, TRACES, at_limit) == grpc.StatusCode.OK
    head = f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {len(over)}"
    answer = request(receiver.http_port, head)  # refused on its Content-Length, before any byte of the body
    assert (answer.status, answer.message) == (413, f"the body is over {MAX_MESSAGE_BYTES} bytes")
    assert grpc_export(receiver.grpc_port, TRACES, over) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (sink.records, receiver.rejected) == (2, 0)
    assert_still_works(receiver, sink)


def test_a_body_inflating_past_the_limit_is_413_or_resource_exhausted(counted: tuple[OtlpReceiver, CountingSink]) -> None:
    """Compressed small, inflated MAX_MESSAGE_BYTES: accepted; inflated one byte more: refused (HTTP counts it as rejected)."""
    receiver, sink = counted
    at_limit, over = traces_of_size(MAX_MESSAGE_BYTES), traces_of_size(MAX_MESSAGE_BYTES + 1)
    assert post(receiver.http_port, "/v1/traces", gzip.compress(at_limit), Content_Encoding="gzip").status == 200
    answer = post(receiver.http_port, "/v1/traces", gzip.compress(over), Content_Encoding="gzip")
    assert (answer.status, answer.message, receiver.rejected) == (413, f"more than {MAX_MESSAGE_BYTES} bytes once inflated", 1)
    assert grpc_export(receiver.grpc_port, TRACES, at_limit, grpc.Compression.Gzip) == grpc.StatusCode.OK
    assert grpc_export(receiver.grpc_port, TRACES, over, grpc.Compression.Gzip) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sink.records == 2
    assert_still_works(receiver, sink)


@pytest.mark.parametrize("signal", SIGNALS, ids=[signal.name for signal in SIGNALS])
def test_more_than_max_records_is_413_or_resource_exhausted_before_decoding(counted: tuple[OtlpReceiver, CountingSink], signal: OtlpSignal) -> None:
    """MAX_RECORDS + 1 empty records (a small body, a huge decode): refused on both transports, nothing stored."""
    receiver, sink = counted
    body = empty_records(signal, MAX_RECORDS + 1)
    assert len(body) < MAX_MESSAGE_BYTES
    answer = post(receiver.http_port, signal.path, body)
    assert (answer.status, answer.message) == (413, f"more than {MAX_RECORDS} records")
    assert grpc_export(receiver.grpc_port, signal, body) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (sink.records, receiver.rejected) == (0, 2)
    assert_still_works(receiver, sink)


def test_max_records_is_accepted(counted: tuple[OtlpReceiver, CountingSink]) -> None:
    """Exactly MAX_RECORDS spans: accepted, all of them."""
    receiver, sink = counted
    assert post(receiver.http_port, "/v1/traces", empty_records(TRACES, MAX_RECORDS)).status == 200
    assert sink.records == MAX_RECORDS


def _bomb(inflated_mib: int, members: int = 1) -> bytes:
    """Gzip of INFLATED_MIB MiB of zeros (about 1 KiB a MiB): one member, or MEMBERS members of equal size."""
    zero = bytes(MiB)
    if members > 1:
        each = gzip.compress(bytes(inflated_mib // members * MiB), compresslevel=9, mtime=0)
        return each * members
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: a full flush makes every MiB compress to the same block
    first = deflate.compress(zero) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zero) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(zero, crc)
    trailer = struct.pack("<II", crc, (inflated_mib * MiB) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first + block * (inflated_mib - 1) + deflate.flush() + trailer


@pytest.mark.parametrize("members", [1, 64])
def test_gunzip_stops_one_byte_past_the_limit(members: int) -> None:
    """A 1 GiB gzip bomb is refused having allocated about twice the limit, not a GiB (Python's allocations, traced)."""
    bomb = _bomb(1024, members)
    assert len(bomb) < 2 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(ExportTooLarge, match=f"more than {MAX_MESSAGE_BYTES} bytes once inflated"):
            otlp_decode.gunzip(bomb, MAX_MESSAGE_BYTES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_MESSAGE_BYTES
    assert zlib.decompressobj(wbits=31).decompress(bomb, 1) == b"\0"  # real gzip, of zeros


_CHILD = """
import sys
from hoptrace.view.receiver import OtlpReceiver

class Drop:
    def add_spans(self, records): pass
    def add_metrics(self, records): pass
    def add_logs(self, records): pass

with OtlpReceiver(Drop()) as receiver:
    print(receiver.grpc_port, receiver.http_port, flush=True)
    sys.stdin.read()
"""


def _peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def receiver_process() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """A receiver in a process of its own (so its peak memory is its own): ``(process, grpc port, http port)``."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read a process's peak memory")
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    grpc_port, http_port = map(int, child.stdout.readline().split())
    yield child, grpc_port, http_port
    child.stdin.close()
    assert child.wait(timeout=TIMEOUT_S) == 0


def test_gzip_bombs_are_refused_with_bounded_memory_on_both_transports(receiver_process: tuple[subprocess.Popen[str], int, int]) -> None:
    """1 GiB HTTP bombs (one member, many) and a gRPC message inflating to 128 MiB: refused; the process grows by a few times the limit at most."""
    child, grpc_port, http_port = receiver_process
    assert post(http_port, "/v1/traces", gzip.compress(one_span()), Content_Encoding="gzip").status == 200
    assert grpc_export(grpc_port, TRACES, one_span(), grpc.Compression.Gzip) == grpc.StatusCode.OK
    baseline = _peak_rss_mib(child.pid)

    assert grpc_export(grpc_port, TRACES, bytes(128 * MiB), grpc.Compression.Gzip) == grpc.StatusCode.RESOURCE_EXHAUSTED
    after_grpc = _peak_rss_mib(child.pid)
    for bomb in (_bomb(1024), _bomb(1024, members=64)):
        answer = post(http_port, "/v1/traces", bomb, Content_Encoding="gzip")
        assert (answer.status, answer.message) == (413, f"more than {MAX_MESSAGE_BYTES} bytes once inflated")
    after_http = _peak_rss_mib(child.pid)

    assert after_grpc - baseline < 4 * MAX_MESSAGE_BYTES / MiB  # inflated whole: + 128 MiB at least
    assert after_http - baseline < 6 * MAX_MESSAGE_BYTES / MiB  # inflated whole: + 1024 MiB at least
    assert post(http_port, "/v1/traces", one_span()).status == 200
    assert grpc_export(grpc_port, TRACES, one_span()) == grpc.StatusCode.OK


# --- busy ----------------------------------------------------------------------------------


def test_http_past_max_concurrent_exports_is_503_then_recovers(counted: tuple[OtlpReceiver, CountingSink]) -> None:
    """MAX_CONCURRENT_EXPORTS clients each stuck in the middle of a body: the next export is 503 with Retry-After; once they end, 200."""
    receiver, sink = counted
    stuck = [socket.create_connection(("127.0.0.1", receiver.http_port), timeout=TIMEOUT_S) for _ in range(MAX_CONCURRENT_EXPORTS)]
    try:
        for connection in stuck:
            connection.sendall(f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: 10\r\n\r\n\x0a".encode())
        answers = [post(receiver.http_port, "/v1/traces", one_span()) for _ in range(200)]
        busy = next(answer for answer in answers if answer.status == 503)  # some may come before every stuck one holds its slot
        assert (busy.headers["retry-after"], busy.message) == ("1", "too many exports at once; retry")
    finally:
        statuses = set()
        for connection in stuck:
            connection.shutdown(socket.SHUT_WR)
            response = http.client.HTTPResponse(connection)
            response.begin()
            statuses.add(response.status)
            connection.close()
    assert statuses <= {400, 503}  # the body ended before Content-Length; or busy, for one that came after a probe took a slot
    assert_still_works(receiver, sink)


def test_grpc_past_max_concurrent_exports_is_resource_exhausted_then_recovers(counted: tuple[OtlpReceiver, CountingSink]) -> None:
    """With every export held in the store, exactly MAX_CONCURRENT_EXPORTS calls are taken; the others get RESOURCE_EXHAUSTED."""
    receiver, sink = counted
    sink.release.clear()
    calls: list[Future[bytes]] = []
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{TRACES.grpc_service}/Export")
        try:
            for _ in range(4 * MAX_CONCURRENT_EXPORTS):
                call = export.future(one_span(), timeout=60)
                calls.append(call)
                try:
                    if call.exception(timeout=0.3) is not None:
                        break  # refused: the calls before it are all held
                except grpc.FutureTimeoutError:
                    pass  # held, as expected
        finally:
            sink.release.set()
        codes = [call.code() for call in calls]
    assert codes.count(grpc.StatusCode.OK) == MAX_CONCURRENT_EXPORTS
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert_still_works(receiver, sink)


# --- where it listens ----------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on PORT, from the kernel's tables (IPv4 and IPv6)."""
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is in host (little-endian) order
            found.add(socket.inet_ntop(family, raw).removeprefix("::ffff:"))  # an IPv4-mapped address is that IPv4 address
    return found


@pytest.mark.parametrize("host", [None, "127.0.0.2"], ids=["default", "asked"])
def test_it_listens_on_loopback_unless_asked(host: str | None) -> None:
    """By default both transports listen on 127.0.0.1 only; given a host, exactly there."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc/net/tcp")
    sink = CountingSink()
    receiver = OtlpReceiver(sink) if host is None else OtlpReceiver(sink, host=host)
    with receiver:
        expected = host or "127.0.0.1"
        assert receiver.host == expected and receiver.grpc_endpoint == f"http://{expected}:{receiver.grpc_port}"
        assert listening_addresses(receiver.grpc_port) == {expected}
        assert listening_addresses(receiver.http_port) == {expected}


def test_hoptrace_watch_listens_on_loopback_by_default() -> None:
    """``hoptrace watch`` without ``--host``: 127.0.0.1."""
    import inspect

    from hoptrace import cli

    option = inspect.signature(cli.watch).parameters["host"].default
    assert option.default == "127.0.0.1"


def test_the_documented_limits() -> None:
    """The numbers the receiver's docstring and the report promise."""
    assert (MAX_MESSAGE_BYTES, MAX_RECORDS, MAX_CONCURRENT_EXPORTS) == (8 * MiB, 65_536, 16)


# --- who may export, and how slowly ----------------------------------------------------------


def test_with_a_token_only_exports_that_carry_it_are_taken() -> None:
    sink = CountingSink()
    with OtlpReceiver(sink, token="s3cret") as receiver:
        body = one_span()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            answer = post(receiver.http_port, "/v1/traces", body, **headers)
            assert (answer.status, answer.message) == (401, "this receiver takes exports with its token only: Authorization: Bearer <token>")
        assert grpc_export(receiver.grpc_port, TRACES, body) == grpc.StatusCode.UNAUTHENTICATED
        assert grpc_export(receiver.grpc_port, TRACES, body, metadata=(("authorization", "Bearer wrong"),)) == grpc.StatusCode.UNAUTHENTICATED
        assert sink.records == 0
        assert post(receiver.http_port, "/v1/traces", body, Authorization="Bearer s3cret").status == 200
        assert grpc_export(receiver.grpc_port, TRACES, body, metadata=(("authorization", "Bearer s3cret"),)) == grpc.StatusCode.OK
        assert sink.records == 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(certificate, key) for 127.0.0.1 the receiver serves, and the CA clients trust: made as ``services up`` makes the local ones."""
    state = tmp_path_factory.mktemp("receiver-tls")
    lib = Path(__file__).parent.parent / "deploy" / "local" / "lib.sh"
    subprocess.run(["bash", "-c", f". {lib} && tls_files 127.0.0.1"], env={"HOPTRACE_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"}, check=True)
    return state / "tls" / "server.pem", state / "tls" / "server.key", state / "tls" / "ca.pem"


def test_with_tls_both_transports_take_exports_over_tls_only(certificate: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415

    served, key, pem = certificate
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # requests lets these win over the HTTP exporter's certificate_file
        monkeypatch.delenv(variable, raising=False)
    sink = CountingSink()
    with OtlpReceiver(sink, tls=(served, key)) as receiver:
        assert (receiver.grpc_endpoint, receiver.http_endpoint) == (
            f"https://127.0.0.1:{receiver.grpc_port}",
            f"https://127.0.0.1:{receiver.http_port}",
        )
        exporters = [
            GrpcSpanExporter(endpoint=receiver.grpc_endpoint, credentials=grpc.ssl_channel_credentials(pem.read_bytes()), timeout=TIMEOUT_S),
            HttpSpanExporter(endpoint=f"{receiver.http_endpoint}/v1/traces", certificate_file=str(pem), timeout=TIMEOUT_S),
        ]
        for exporter in exporters:  # the SDK's own exporters, as a process with OTEL_EXPORTER_OTLP_CERTIFICATE sends
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            provider.get_tracer("tls").start_span("over tls").end()
            provider.shutdown()
        assert sink.records == 2
        assert grpc_export(receiver.grpc_port, TRACES, one_span()) == grpc.StatusCode.UNAVAILABLE  # in clear text: no answer
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            post(receiver.http_port, "/v1/traces", one_span())
        stranger = http.client.HTTPSConnection("127.0.0.1", receiver.http_port, timeout=TIMEOUT_S)  # trusts the system's CAs only
        with pytest.raises(ssl.SSLCertVerificationError):
            stranger.request("POST", "/v1/traces", one_span(), {"Content-Type": PROTOBUF})
        assert sink.records == 2


def test_a_client_stalled_in_the_tls_handshake_does_not_hold_the_others(certificate: tuple[Path, Path, Path]) -> None:
    served, key, pem = certificate
    sink = CountingSink()
    with OtlpReceiver(sink, tls=(served, key)) as receiver, socket.create_connection(("127.0.0.1", receiver.http_port), timeout=TIMEOUT_S):
        connection = http.client.HTTPSConnection("127.0.0.1", receiver.http_port, timeout=TIMEOUT_S, context=ssl.create_default_context(cafile=pem))
        connection.request("POST", "/v1/traces", one_span(), {"Content-Type": PROTOBUF})
        assert connection.getresponse().status == 200
        assert sink.records == 1


def test_beyond_loopback_without_a_token_or_tls_is_a_warning(caplog: pytest.LogCaptureFixture, certificate: tuple[Path, Path, Path]) -> None:
    tls = certificate[:2]
    cases = [("127.0.0.1", None, None, set()), ("0.0.0.0", "s3cret", tls, set())]  # noqa: S104 - the point
    cases += [("0.0.0.0", None, tls, {"without a token"}), ("0.0.0.0", "s3cret", None, {"without TLS"})]  # noqa: S104
    for host, token, served, warned in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hoptrace.view.receiver"), OtlpReceiver(CountingSink(), host=host, token=token, tls=served):
            pass
        said = {words for words in ("without a token", "without TLS") if any(words in record.getMessage() for record in caplog.records)}
        assert said == warned, (host, token, served)


def test_a_client_trickling_its_body_is_cut_off_and_the_others_are_served(
    counted: tuple[OtlpReceiver, CountingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the deadline, 16 such clients held every slot for as long as they kept sending: every other exporter got 503."""
    monkeypatch.setattr(receiver_module, "BODY_DEADLINE_S", 1.0)
    receiver, sink = counted
    body = one_span()
    head = f"POST /v1/traces HTTP/1.1\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    slow = [socket.create_connection(("127.0.0.1", receiver.http_port), timeout=TIMEOUT_S) for _ in range(MAX_CONCURRENT_EXPORTS)]
    try:
        for connection in slow:
            connection.sendall(head + body[:1])
        began = time.monotonic()
        for byte in body[1:4]:  # a byte every 0.4 s: never silent long enough for a socket timeout
            time.sleep(0.4)
            for connection in slow:
                connection.sendall(bytes([byte]))
        answers = []
        for connection in slow:
            response = http.client.HTTPResponse(connection)
            response.begin()
            answers.append(response.status)
        assert answers == [408] * MAX_CONCURRENT_EXPORTS and time.monotonic() - began < 1.0 + 2 * TIMEOUT_S
    finally:
        for connection in slow:
            connection.close()
    assert_still_works(receiver, sink)


def test_a_certificate_without_its_key_is_a_settings_error_that_names_both() -> None:
    from pydantic import ValidationError  # noqa: PLC0415

    from hoptrace.pipeline.settings import Settings  # noqa: PLC0415

    with pytest.raises(ValidationError, match="HOPTRACE_RECEIVER_TLS_CERTFILE and HOPTRACE_RECEIVER_TLS_KEYFILE"):
        Settings(receiver_tls_certfile=Path("receiver.pem"))
    assert Settings(receiver_tls_certfile=Path("a.pem"), receiver_tls_keyfile=Path("a.key")).receiver_tls == (Path("a.pem"), Path("a.key"))
