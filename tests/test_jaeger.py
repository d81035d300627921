"""Reading a deployed Jaeger: its query API's JSON converted to spans and summaries, and errors that say what to do.

Jaeger is an external HTTP API hoptrace does not run, so these tests serve recorded answers in
Jaeger's JSON format from a local ``http.server``; no broker is involved.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hoptrace.view.jaeger import JaegerError, JaegerQuery, slowest_pool, spans_from_jaeger
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.queries import TraceSummary
from hoptrace.view.sqlite_store import SqliteTraceStore
from tests.conftest import free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
JOB = "9f86d081884c7d659a2feaa0c55ad015"
START_US = 1_700_000_000_000_000
# An older Jaeger drops the leading zeros of an id: this trace id is 0000000000000000 00000000000000ab.
SHORT_TRACE = "ab"


def _tag(key: str, kind: str, value: Any) -> dict[str, Any]:
    return {"key": key, "type": kind, "value": value}


def _child_of(span_id: str) -> dict[str, str]:
    return {"refType": "CHILD_OF", "traceID": TRACE, "spanID": span_id}


def _jaeger_span(
    span_id: str,
    name: str,
    start_us: int,
    duration_us: int,
    tags: list[dict[str, Any]],
    process_id: str,
    trace_id: str = TRACE,
    references: list[dict[str, str]] | None = None,
    logs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One span in Jaeger's JSON."""
    return {
        "traceID": trace_id,
        "spanID": span_id,
        "flags": 1,
        "operationName": name,
        "references": references or [],
        "startTime": start_us,
        "duration": duration_us,
        "tags": tags,
        "logs": logs or [],
        "processID": process_id,
        "warnings": None,
    }


def _orders_trace() -> dict[str, Any]:
    """One orders job as ``GET /api/traces/{id}`` returns it: a publish, a failed attempt, a retry, a handler span."""
    publisher = {
        "serviceName": "orders-publisher",
        "tags": [
            _tag("host.name", "string", "build-7"),
            _tag("process.pid", "int64", 4242),
            _tag("telemetry.sdk.language", "string", "python"),
        ],
    }
    worker = {"serviceName": "orders-worker", "tags": [_tag("process.pid", "int64", 4343), _tag("container", "bool", False)]}
    hop = [_tag("hoptrace.pipeline", "string", "orders"), _tag("hoptrace.stage", "string", "validate"), _tag("hoptrace.job.id", "string", JOB)]
    send_tags = [
        _tag("otel.scope.name", "string", "hoptrace"),
        _tag("otel.library.name", "string", "hoptrace"),
        _tag("messaging.system", "string", "kafka"),
        _tag("messaging.destination.name", "string", "orders.placed"),
        _tag("messaging.operation.type", "string", "send"),
        *hop,
        _tag("span.kind", "string", "producer"),
        _tag("internal.span.format", "string", "otlp"),
    ]
    send = _jaeger_span("00f067aa0ba902b7", "send orders.placed", START_US, 1500, send_tags, "p1")
    failed_tags = [
        _tag("otel.scope.name", "string", "hoptrace"),
        _tag("otel.scope.version", "string", "0.1.0"),
        _tag("messaging.system", "string", "kafka"),
        _tag("messaging.destination.name", "string", "orders.placed"),
        _tag("messaging.operation.type", "string", "process"),
        _tag("messaging.kafka.offset", "int64", 17),
        _tag("messaging.kafka.message.key", "binary", "AP+A"),
        _tag("hoptrace.ratio", "float64", 0.25),
        _tag("hoptrace.big", "int64", "9007199254740993"),  # beyond 2**53: Jaeger sends it as text
        _tag("hoptrace.tags", "string", '["a","b"]'),  # an array attribute, as the translation stores it
        *hop,
        _tag("hoptrace.attempt", "int64", 1),
        _tag("hoptrace.outcome", "string", "retried"),
        _tag("error.type", "string", "OrderRejected"),
        _tag("span.kind", "string", "consumer"),
        _tag("otel.status_code", "string", "ERROR"),
        _tag("otel.status_description", "string", "OrderRejected: order 7 asked to fail at validate"),
        _tag("error", "bool", True),
    ]
    failed_logs = [
        {
            "timestamp": START_US + 16000,
            "fields": [
                _tag("event", "string", "exception"),
                _tag("exception.type", "string", "OrderRejected"),
                _tag("exception.message", "string", "order 7 asked to fail at validate"),
                _tag("exception.escaped", "bool", False),
            ],
        },
        {"timestamp": START_US + 16500, "fields": [_tag("note", "string", "no event name")]},
    ]
    follows = {"refType": "FOLLOWS_FROM", "traceID": "0af7651916cd43dd8448eb211c80319c", "spanID": "53995c3f42cd8ad8"}
    references = [_child_of("00f067aa0ba902b7"), follows]
    failed = _jaeger_span(
        "b7ad6b7169203331", "process orders.placed", START_US + 5000, 12000, failed_tags, "p2", references=references, logs=failed_logs
    )
    retry_tags = [
        _tag("otel.library.name", "string", "hoptrace"),  # an older collector names the scope only this way
        *hop,
        _tag("hoptrace.attempt", "int64", 2),
        _tag("hoptrace.outcome", "string", "processed"),
        _tag("span.kind", "string", "consumer"),
        _tag("otel.status_code", "string", "OK"),
    ]
    retry = _jaeger_span(
        "0000000000000e01", "process orders.placed", START_US + 120000, 3000, retry_tags, "p2", references=[_child_of("00f067aa0ba902b7")]
    )
    # INTERNAL (no span.kind tag), failed as an OpenTracing client says it: the error flag only; its parent's leading zeros dropped.
    handler_tags = [_tag("error", "bool", True), _tag("card.country", "string", "NL")]
    handler = _jaeger_span("c0ffee", "charge card", START_US + 121000, 800, handler_tags, "p2", references=[_child_of("e01")])
    return {"traceID": TRACE, "spans": [failed, send, retry, handler], "processes": {"p1": publisher, "p2": worker}, "warnings": None}


def _received(**fields: Any) -> ReceivedSpan:
    """A span of TRACE as hoptrace reads it: UNSET, no message, events or links, scope hoptrace, unless FIELDS say otherwise."""
    defaults: dict[str, Any] = {"trace_id": TRACE, "status_code": "UNSET", "status_message": "", "events": (), "links": (), "scope_name": "hoptrace"}
    return ReceivedSpan(**(defaults | fields))


def _expected_spans() -> list[ReceivedSpan]:
    publisher = {"service.name": "orders-publisher", "host.name": "build-7", "process.pid": 4242, "telemetry.sdk.language": "python"}
    worker = {"service.name": "orders-worker", "process.pid": 4343, "container": False}
    hop = {"hoptrace.pipeline": "orders", "hoptrace.stage": "validate", "hoptrace.job.id": JOB}
    start = START_US * 1000
    return [
        _received(
            span_id="00f067aa0ba902b7",
            parent_span_id=None,
            name="send orders.placed",
            kind="PRODUCER",
            start_ns=start,
            end_ns=start + 1_500_000,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": "orders.placed",
                "messaging.operation.type": "send",
                **hop,
            },
            resource=publisher,
        ),
        _received(
            span_id="b7ad6b7169203331",
            parent_span_id="00f067aa0ba902b7",
            name="process orders.placed",
            kind="CONSUMER",
            start_ns=start + 5_000_000,
            end_ns=start + 17_000_000,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": "orders.placed",
                "messaging.operation.type": "process",
                "messaging.kafka.offset": 17,
                "messaging.kafka.message.key": b"\x00\xff\x80",
                "hoptrace.ratio": 0.25,
                "hoptrace.big": 9007199254740993,
                "hoptrace.tags": '["a","b"]',
                **hop,
                "hoptrace.attempt": 1,
                "hoptrace.outcome": "retried",
                "error.type": "OrderRejected",
            },
            status_code="ERROR",
            status_message="OrderRejected: order 7 asked to fail at validate",
            events=(
                (
                    "exception",
                    {"exception.type": "OrderRejected", "exception.message": "order 7 asked to fail at validate", "exception.escaped": False},
                ),
                ("", {"note": "no event name"}),
            ),
            links=(("0af7651916cd43dd8448eb211c80319c", "53995c3f42cd8ad8", {}),),
            resource=worker,
        ),
        _received(
            span_id="0000000000000e01",
            parent_span_id="00f067aa0ba902b7",
            name="process orders.placed",
            kind="CONSUMER",
            start_ns=start + 120_000_000,
            end_ns=start + 123_000_000,
            attributes={**hop, "hoptrace.attempt": 2, "hoptrace.outcome": "processed"},
            status_code="OK",
            resource=worker,
        ),
        _received(
            span_id="0000000000c0ffee",
            parent_span_id="0000000000000e01",
            name="charge card",
            kind="INTERNAL",
            start_ns=start + 121_000_000,
            end_ns=start + 121_800_000,
            attributes={"card.country": "NL"},
            status_code="ERROR",
            resource=worker,
            scope_name="",
        ),
    ]


def _second_trace(trace_id: str, start_us: int, service: str, process_id: str = "p1") -> dict[str, Any]:
    """A one-span trace of SERVICE, as a search returns it."""
    tags = [_tag("hoptrace.stage", "string", "charge"), _tag("hoptrace.job.id", "string", ""), _tag("span.kind", "string", "producer")]
    span = _jaeger_span("1", "send payments", start_us, 250, tags, process_id, trace_id=trace_id)
    return {"traceID": trace_id, "spans": [span], "processes": {process_id: {"serviceName": service, "tags": []}}, "warnings": None}


def _answer(data: Any) -> dict[str, Any]:
    return {"data": data, "total": len(data) if isinstance(data, list) else 0, "limit": 0, "offset": 0, "errors": None}


NOT_FOUND = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": 404, "msg": "trace not found"}]}


class FakeJaeger:
    """A local HTTP server answering Jaeger query API paths with recorded JSON; it remembers every request."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str | bytes]] = {}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.delay_s = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                fake.requests.append((parts.path, parse_qs(parts.query)))
                time.sleep(fake.delay_s)
                status, body = fake.routes.get(parts.path, (404, "404 page not found\n"))
                content = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if content.startswith(b"{") else "text/plain")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def route(self, path: str, body: Any, status: int = 200) -> None:
        self.routes[path] = (status, body if isinstance(body, str | bytes) else json.dumps(body))


def test_a_trace_converts_exactly(jaeger: FakeJaeger) -> None:
    jaeger.route(f"/api/traces/{TRACE}", _answer([_orders_trace()]))
    with JaegerQuery(jaeger.url + "/") as query:
        spans = query.trace(TRACE.upper())
    expected = _expected_spans()
    assert spans == expected  # by start time, ids zero-filled, typed attributes, kinds, status, events, links, resources, scopes
    assert [type(value) for value in spans[1].attributes.values()][3:8] == [int, bytes, float, int, str]
    assert jaeger.requests == [(f"/api/traces/{TRACE}", {})]


def test_ids_without_leading_zeros_and_a_missing_trace(jaeger: FakeJaeger) -> None:
    jaeger.route(f"/api/traces/{SHORT_TRACE.zfill(32)}", _answer([_second_trace(SHORT_TRACE, START_US, "orders-publisher")]))
    [span] = JaegerQuery(jaeger.url).trace(SHORT_TRACE)
    assert (span.trace_id, span.span_id, span.kind, span.attributes) == (
        SHORT_TRACE.zfill(32),
        "0000000000000001",
        "PRODUCER",
        {"hoptrace.stage": "charge", "hoptrace.job.id": ""},
    )

    jaeger.route(f"/api/traces/{TRACE}", NOT_FOUND, status=404)
    with pytest.raises(JaegerError) as raised:
        JaegerQuery(jaeger.url).trace(TRACE)
    message = str(raised.value)
    assert message.startswith(f"trace {TRACE} is not in Jaeger at {jaeger.url}: check the id, or wait a few seconds")
    # A Jaeger that answers 200 with no trace means the same.
    jaeger.route(f"/api/traces/{TRACE}", _answer([]))
    with pytest.raises(JaegerError, match=f"trace {TRACE} is not in Jaeger"):
        JaegerQuery(jaeger.url).trace(TRACE)
    with pytest.raises(JaegerError, match="'job-7' is not a trace id: a trace id is 32 hex digits"):
        JaegerQuery(jaeger.url).trace("job-7")


def test_recent_traces_from_every_service_summarised_as_the_store_does(jaeger: FakeJaeger, tmp_path: Path) -> None:
    orders = _orders_trace()
    newest = _second_trace("1" * 32, START_US + 9_000_000, "orders-publisher")
    older = _second_trace("2" * 32, START_US - 9_000_000, "refunds-worker")
    jaeger.route("/api/services", _answer(["orders-worker", "orders-publisher", "refunds-worker"]))
    # Each service's search returns whole traces; a trace of two services comes back twice.
    jaeger.route("/api/traces", _answer([orders, newest, older]))

    summaries = JaegerQuery(jaeger.url).recent_traces(limit=2)

    assert summaries == [
        TraceSummary(
            "1" * 32,
            None,
            "send payments",
            (START_US + 9_000_000) * 1000,
            (START_US + 9_000_250) * 1000,
            1,
            0,
            ("charge",),
            "in flight",
            None,
            "charge publish 100%",
        ),
        # Its critical path: the backoff between the failed attempt's end (17 ms) and the retry (120 ms) is 103 of 123 ms.
        TraceSummary(
            TRACE,
            JOB,
            "send orders.placed",
            START_US * 1000,
            (START_US + 123_000) * 1000,
            4,
            2,
            ("validate",),
            "retried",
            None,
            "validate retry_backoff 84%",
        ),
    ]
    assert [path for path, _ in jaeger.requests] == ["/api/services", "/api/traces", "/api/traces", "/api/traces"]
    searches = [query for path, query in jaeger.requests if path == "/api/traces"]
    assert [query["service"] for query in searches] == [["orders-publisher"], ["orders-worker"], ["refunds-worker"]]
    for query in searches:
        assert (query["limit"], query["lookback"]) == (["2"], ["1h"])
        start, end = int(query["start"][0]), int(query["end"][0])
        assert end - start == 3_600_000_000 and abs(end - time.time_ns() // 1000) < 60_000_000

    # The embedded store summarises the same spans the same way.
    with SqliteTraceStore(tmp_path / "traces.sqlite") as store:
        for trace in (orders, newest, older):
            store.add_spans(spans_from_jaeger(trace))
        assert store.recent_traces(limit=2) == summaries
        assert JaegerQuery(jaeger.url).recent_traces(limit=10) == store.recent_traces(limit=10)


def test_slowest_traces_from_a_larger_pool_sorted_here_as_the_store_sorts(jaeger: FakeJaeger, tmp_path: Path) -> None:
    long = _second_trace("3" * 32, START_US + 1_000_000, "refunds-worker")
    long["spans"][0]["duration"] = 50_000
    traces = [
        _orders_trace(),
        _second_trace("1" * 32, START_US + 9_000_000, "orders-publisher"),
        _second_trace("2" * 32, START_US - 9_000_000, "x"),
        long,
    ]
    jaeger.route("/api/services", _answer(["orders-worker", "refunds-worker"]))
    jaeger.route("/api/traces", _answer(traces))

    slowest = JaegerQuery(jaeger.url).recent_traces(limit=2, slowest=True)

    # 123 ms, 50 ms; then the two of 250 µs, the newer first.
    assert [(summary.trace_id, summary.dominant) for summary in slowest] == [(TRACE, "validate retry_backoff 84%"), ("3" * 32, "charge publish 100%")]
    searches = [query for path, query in jaeger.requests if path == "/api/traces"]
    assert [(query["service"], query["limit"]) for query in searches] == [(["orders-worker"], ["100"]), (["refunds-worker"], ["100"])]
    assert [slowest_pool(limit) for limit in (1, 10, 20, 50, 80, 600)] == [100, 100, 200, 500, 500, 600]
    with SqliteTraceStore(tmp_path / "traces.sqlite") as store:
        for trace in traces:
            store.add_spans(spans_from_jaeger(trace))
        assert store.recent_traces(limit=2, slowest=True) == slowest
        every = JaegerQuery(jaeger.url).recent_traces(limit=10, slowest=True)
        assert every == store.recent_traces(limit=10, slowest=True)
        assert [summary.trace_id for summary in every] == [TRACE, "3" * 32, "1" * 32, "2" * 32]


def test_recent_traces_of_one_service(jaeger: FakeJaeger) -> None:
    jaeger.route("/api/traces", _answer([_second_trace("3" * 32, START_US, "orders-worker")]))
    [summary] = JaegerQuery(jaeger.url).recent_traces(limit=5, service="orders-worker", lookback_s=900)
    assert summary.trace_id == "3" * 32
    [(path, query)] = jaeger.requests
    assert (path, query["service"], query["limit"], query["lookback"]) == ("/api/traces", ["orders-worker"], ["5"], ["15m"])
    assert int(query["end"][0]) - int(query["start"][0]) == 900_000_000

    jaeger.route("/api/services", _answer(None))  # a Jaeger without any span yet
    assert JaegerQuery(jaeger.url).recent_traces() == []


def test_failed_traces_are_searched_by_error_and_by_outcome_and_checked(jaeger: FakeJaeger) -> None:
    # Jaeger v2's in-memory storage answers error=true with the traces that have an OK span: a trace without a
    # failed span comes back too, and is dropped; hoptrace's outcome tags find its failed attempts on every storage.
    jaeger.route("/api/services", _answer(["orders-worker"]))
    jaeger.route("/api/traces", _answer([_orders_trace(), _second_trace("1" * 32, START_US + 9_000_000, "orders-worker")]))

    [summary] = JaegerQuery(jaeger.url).recent_traces(limit=5, errors_only=True)
    assert (summary.trace_id, summary.error_count) == (TRACE, 2)
    searches = [json.loads(query["tags"][0]) for path, query in jaeger.requests if path == "/api/traces"]
    assert searches == [{"error": "true"}, {"hoptrace.outcome": "retried"}, {"hoptrace.outcome": "dead_lettered"}, {"hoptrace.outcome": "failed"}]

    # With a stage, the failed span must be of that stage: the orders trace failed at validate, not at charge.
    jaeger.requests.clear()
    assert JaegerQuery(jaeger.url).recent_traces(limit=5, stage="charge", errors_only=True) == []
    searches = [json.loads(query["tags"][0]) for path, query in jaeger.requests if path == "/api/traces"]
    assert searches[0] == {"hoptrace.stage": "charge", "error": "true"} and len(searches) == 4
    assert [summary.trace_id for summary in JaegerQuery(jaeger.url).recent_traces(limit=5, stage="validate", errors_only=True)] == [TRACE]


def test_unreachable_jaeger_says_what_to_do() -> None:
    port = free_port()
    query = JaegerQuery(f"http://127.0.0.1:{port}", timeout_s=2)
    for ask in (lambda: query.trace(TRACE), lambda: query.recent_traces()):
        with pytest.raises(JaegerError) as raised:
            ask()
        message = str(raised.value)
        assert message.startswith(f"cannot reach Jaeger at http://127.0.0.1:{port} (")
        assert "refused" in message.lower()
        assert message.endswith("start Jaeger, or give the address of Jaeger's query service (the UI address, port 16686 by default)")


def test_slow_jaeger_times_out(jaeger: FakeJaeger) -> None:
    jaeger.route("/api/services", _answer([]))
    jaeger.delay_s = 1.0
    with pytest.raises(JaegerError, match=rf"cannot reach Jaeger at {jaeger.url} \(.*timed out"):
        JaegerQuery(jaeger.url, timeout_s=0.2).services()


def test_not_a_jaeger_api_says_what_to_do(jaeger: FakeJaeger) -> None:
    # Nothing at /api/services: a wrong address, or Jaeger's base path left out.
    with pytest.raises(JaegerError) as raised:
        JaegerQuery(jaeger.url + "/jaeger").recent_traces()
    assert str(raised.value) == (
        f"Jaeger at {jaeger.url}/jaeger answered 404 Not Found for /api/services: this is not Jaeger's query API; give the address of "
        "Jaeger's query service (the UI address, port 16686 by default), with its base path if Jaeger runs with --query.base-path"
    )
    # An HTML page where JSON was expected.
    jaeger.route("/api/services", "<!doctype html><title>Grafana</title>")
    with pytest.raises(JaegerError, match=r"/api/services did not answer with Jaeger's JSON: is http://127\.0\.0\.1:\d+ the address of"):
        JaegerQuery(jaeger.url).services()
    # Jaeger's own error, passed on.
    jaeger.route("/api/traces", {"data": None, "errors": [{"code": 500, "msg": "storage unavailable"}]}, status=500)
    with pytest.raises(JaegerError, match="answered 500 Internal Server Error for /api/traces: storage unavailable$"):
        JaegerQuery(jaeger.url).recent_traces(service="orders-worker")
    # A trace not shaped like Jaeger's.
    jaeger.route(f"/api/traces/{TRACE}", _answer([{"traceID": TRACE, "spans": [{"spanID": "1"}], "processes": {}}]))
    with pytest.raises(JaegerError, match="not shaped like Jaeger's JSON"):
        JaegerQuery(jaeger.url).trace(TRACE)


def test_a_url_that_is_no_url() -> None:
    with pytest.raises(JaegerError, match="'localhost:16686' is not a Jaeger URL: .* e.g. http://localhost:16686"):
        JaegerQuery("localhost:16686")
