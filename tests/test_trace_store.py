"""The SQLite trace store of ``hoptrace watch``: round trips, summaries, stage numbers, bounds, concurrency (no broker needed)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode, set_span_in_context
from opentelemetry.util.types import Attributes as SdkAttributes

from hoptrace.pipeline.semconv import CONSUMER_LAG, QUEUE_DEPTH
from hoptrace.view.otlp_decode import CUT, MAX_ITEMS, MAX_TEXT, SIGNALS, Attributes, MetricPoint, ReceivedLog, ReceivedSpan
from hoptrace.view.queries import StageStats, TraceSummary, nearest_rank
from hoptrace.view.receiver import OtlpReceiver
from hoptrace.view.sqlite_store import MAX_AHEAD_NS, TIME_CLAMPED, SqliteTraceStore, _data_bytes

REPO = Path(__file__).resolve().parents[1]
RESOURCE: Attributes = {"service.name": "orders-worker", "process.pid": 42}
S = 1_000_000_000
MS = 1_000_000
NOW = 1_700_000_000 * S


def _count(store: SqliteTraceStore, table: str) -> int:
    """How many rows STORE's TABLE (``spans``, ``traces``) holds, read from its file as another process would."""
    with closing(sqlite3.connect(store.path)) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _data_bytes_of(store: SqliteTraceStore) -> int:
    """The bytes of STORE's file that hold data now (free pages aside): what its ``max_bytes`` bounds."""
    with closing(sqlite3.connect(store.path)) as db:
        return _data_bytes(db)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    """An empty store in a fresh file (in a directory that does not exist yet)."""
    with SqliteTraceStore(tmp_path / "state" / "traces.sqlite") as store:
        yield store


def _span(
    trace: int,
    span: int,
    start_ns: int,
    end_ns: int,
    name: str = "work",
    kind: str = "INTERNAL",
    parent: int | None = None,
    status: str = "UNSET",
    resource: Attributes = RESOURCE,
    **attributes: Any,
) -> ReceivedSpan:
    """A span of trace number TRACE; ``hoptrace_stage="x"`` sets attribute ``hoptrace.stage``."""
    return ReceivedSpan(
        trace_id=f"{trace:032x}",
        span_id=f"{span:016x}",
        parent_span_id=None if parent is None else f"{parent:016x}",
        name=name,
        kind=kind,
        start_ns=start_ns,
        end_ns=end_ns,
        attributes={key.replace("_", "."): value for key, value in attributes.items()},
        status_code=status,
        status_message="boom" if status == "ERROR" else "",
        events=(),
        links=(),
        resource=resource,
        scope_name="hoptrace",
    )


def _point(name: str, value: int | float, time_ns: int, **attributes: Any) -> MetricPoint:
    """A gauge point; ``hoptrace_stage="x"`` sets attribute ``hoptrace.stage``."""
    return MetricPoint(
        name=name,
        unit="{message}",
        description="",
        kind="gauge",
        monotonic=None,
        attributes={key.replace("_", "."): value for key, value in attributes.items()},
        resource=RESOURCE,
        time_ns=time_ns,
        value=value,
        count=None,
        sum=None,
        bucket_counts=None,
        explicit_bounds=None,
    )


def test_spans_and_points_round_trip_exactly(store: SqliteTraceStore) -> None:
    tricky: Attributes = {
        "text": "naïve ✓",
        "flag": False,
        "big": 2**62,
        "ratio": 0.1,
        "negative zero": -0.0,
        "raw": b"\x00\xff\x80 not utf-8",
        "list": [b"\x01", "two", 3, 4.5, True, None, [], {}],
        "map": {"nested": {"deep": b"\xfe"}, "empty": {}},
        "looks like bytes": {"$bytes": "AAEC"},
        "looks like a map": {"$map": {"$bytes": "x"}},
        "$bytes": "a top-level key named like the marker",
    }
    root = _span(1, 1, 100, 900, name="send orders.placed", kind="PRODUCER", resource={"service.name": "publisher", "key": b"\x00"})
    child = ReceivedSpan(
        **{
            **_span(1, 2, 200, 800, name="process orders.placed", kind="CONSUMER", parent=1, status="ERROR").__dict__,
            "attributes": tricky,
            "events": (("exception", {"exception.type": "ValueError", "payload": b"\xff"}), ("retry", {})),
            "links": ((f"{7:032x}", f"{8:016x}", {"reason": b"batch"}), (f"{9:032x}", f"{10:016x}", {})),
        }
    )
    store.add_spans([child, root])
    assert store.trace(f"{1:032x}") == [root, child]
    assert store.trace(f"{2:032x}") == []

    histogram = MetricPoint(
        **{**_point("messaging.process.duration", 0, 5).__dict__, "kind": "histogram", "unit": "s", "value": None, "count": 3, "sum": 1.5}
        | {"bucket_counts": (1, 2, 0), "explicit_bounds": (0.25, 1.0), "attributes": {"hoptrace.stage": "validate", "raw": b"\x01"}}
    )
    counter = MetricPoint(**{**_point("messaging.process.duration", 7, 9).__dict__, "kind": "sum", "monotonic": True})
    store.add_metrics([counter, histogram])
    assert store.metric_points("messaging.process.duration") == [histogram, counter]


def test_logs_are_dropped_and_the_file_outlives_the_store(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite"
    with SqliteTraceStore(path) as first:
        first.add_spans([_span(1, 1, 10, 20)])
        first.add_logs([ReceivedLog("hello", "INFO", 9, None, None, {}, RESOURCE, 15)])
    with SqliteTraceStore(path) as again:
        assert again.trace(f"{1:032x}") == [_span(1, 1, 10, 20)]
        assert (_count(again, "spans"), _count(again, "traces")) == (1, 1)
        again.clear()
        assert (_count(again, "spans"), _count(again, "traces"), again.recent_traces(), again.metric_points("x")) == (0, 0, [], [])


def _orders_traces() -> list[list[ReceivedSpan]]:
    """Four traces, oldest first: a clean two-stage job, a retried one, a dead-lettered one, one whose root has not arrived."""
    clean = [
        _span(1, 11, 1000, 1100, "send orders.placed", "PRODUCER", None, hoptrace_stage="validate", hoptrace_job_id="job-1"),
        _span(
            1, 12, 1200, 1300, "process orders.placed", "CONSUMER", 11, hoptrace_stage="validate", hoptrace_attempt=1, hoptrace_outcome="processed"
        ),
        _span(1, 13, 1250, 1290, "send payments", "PRODUCER", 12, hoptrace_stage="charge", hoptrace_job_id="job-1"),
        _span(1, 14, 1400, 1900, "process payments", "CONSUMER", 13, hoptrace_stage="charge", hoptrace_attempt=1, hoptrace_outcome="processed"),
    ]
    retried = [
        _span(2, 21, 2000, 2100, "send orders.placed", "PRODUCER", None, hoptrace_stage="validate", hoptrace_job_id="job-2"),
        _span(2, 22, 2200, 2300, "process orders.placed", "CONSUMER", 21, "ERROR", hoptrace_stage="validate", hoptrace_outcome="retried"),
        _span(2, 23, 2400, 2500, "process orders.placed", "CONSUMER", 21, hoptrace_stage="validate", hoptrace_attempt=2),
    ]
    dead = [
        _span(3, 31, 3000, 3100, "send payments", "PRODUCER", None, hoptrace_stage="charge", hoptrace_job_id=""),
        _span(3, 32, 3200, 3700, "process payments", "CONSUMER", 31, "ERROR", hoptrace_stage="charge", hoptrace_outcome="dead_lettered"),
    ]
    rootless = [
        _span(4, 42, 4300, 4400, "process payments", "CONSUMER", 41, hoptrace_stage="charge", hoptrace_job_id=""),
        _span(4, 43, 4350, 4390, "charge card", "INTERNAL", 42),
    ]
    return [clean, retried, dead, rootless]


def test_recent_traces_newest_first_with_filters(store: SqliteTraceStore) -> None:
    clean, retried, dead, rootless = _orders_traces()
    store.add_spans(clean[1:] + retried)  # the clean trace's root arrives later, with another batch
    store.add_spans([*dead, *rootless, clean[0]])

    summaries = {summary.trace_id[-1]: summary for summary in store.recent_traces()}
    assert [summary.trace_id for summary in store.recent_traces()] == [f"{n:032x}" for n in (4, 3, 2, 1)]
    # The dominant cause: charge's handler took 500 of 900 ns; five segments of 100 ns, the earliest (the publish) counts.
    assert summaries["1"] == TraceSummary(
        f"{1:032x}", "job-1", "send orders.placed", 1000, 1900, 4, 0, ("validate", "charge"), "ok", dominant="charge handler 56%"
    )
    assert summaries["2"] == TraceSummary(
        f"{2:032x}", "job-2", "send orders.placed", 2000, 2500, 3, 1, ("validate",), "retried", dominant="validate publish 20%"
    )
    assert summaries["3"] == TraceSummary(
        f"{3:032x}", None, "send payments", 3000, 3700, 2, 1, ("charge",), "dead-lettered", dominant="charge handler 71%"
    )
    assert summaries["4"] == TraceSummary(f"{4:032x}", None, "process payments", 4300, 4400, 2, 0, ("charge",), "ok", dominant="charge handler 100%")

    def ids(**query: Any) -> list[str]:
        return [summary.trace_id[-1] for summary in store.recent_traces(**query)]

    assert ids(limit=2) == ["4", "3"]
    assert ids(stage="validate") == ["2", "1"]
    assert ids(errors_only=True) == ["3", "2"]
    assert ids(stage="charge", errors_only=True) == ["3"]
    assert ids(stage="ship") == []
    assert (_count(store, "spans"), _count(store, "traces")) == (11, 4)


def test_slowest_traces_by_end_to_end_time_with_filters(store: SqliteTraceStore) -> None:
    """End-to-end times: 1 takes 900 ns, 2 500, 3 700, 4 100; a fifth, newest, also takes 700: equals newest first."""
    clean, retried, dead, rootless = _orders_traces()
    twin = [_span(5, 51, 5000, 5700, "send payments", "PRODUCER", None, hoptrace_stage="charge")]
    store.add_spans([*clean, *retried, *dead, *rootless, *twin])

    def ids(**query: Any) -> list[str]:
        return [summary.trace_id[-1] for summary in store.recent_traces(slowest=True, **query)]

    assert ids(limit=2) == ["1", "5"]
    assert ids() == ["1", "5", "3", "2", "4"]
    assert ids(stage="validate") == ["1", "2"]
    assert ids(errors_only=True) == ["3", "2"]
    assert ids(stage="charge", errors_only=True, limit=1) == ["3"]
    assert [summary.dominant for summary in store.recent_traces(2, slowest=True)] == ["charge handler 56%", "charge publish 100%"]


def _process(trace: int, start_ns: int, duration_ns: int, stage: str, parent: int | None, **attributes: Any) -> ReceivedSpan:
    """A process span of the orders pipeline (span id 100 + trace, unless given)."""
    system, destination = {"validate": ("kafka", "orders.placed"), "charge": ("celery", "payments")}[stage]
    span_id, kind, status = attributes.pop("span_id", 100 + trace), attributes.pop("kind", "CONSUMER"), attributes.pop("status", "UNSET")
    defaults: dict[str, Any] = {"messaging_system": system, "messaging_destination_name": destination, "hoptrace_pipeline": "orders"}
    defaults |= {"hoptrace_stage": stage, "messaging_operation_type": "process", "hoptrace_attempt": 1, "hoptrace_outcome": "processed"}
    return _span(
        trace, span_id, start_ns, start_ns + duration_ns, f"process {destination}", kind, parent, status, RESOURCE, **(defaults | attributes)
    )


def test_stage_stats_exact(store: SqliteTraceStore) -> None:
    spans: list[ReceivedSpan] = []
    for i in range(1, 21):  # validate: handler i ms, queue wait i * 100 ms after its producer started
        start = NOW - 30 * S + i * S
        spans.append(_span(i, i, start - i * 100 * MS, start - i * 100 * MS + MS, "send orders.placed", "PRODUCER", None))
        failed = {"status": "ERROR", "hoptrace_outcome": "retried"} if i == 20 else {}
        spans.append(_process(i, start, i * MS, "validate", i, **failed))
    # The second attempt of job 20 (same producer parent): counted, but its wait is no queue wait.
    spans.append(_process(20, NOW - 5 * S, 5 * MS, "validate", 20, span_id=999, hoptrace_attempt=2))
    # Not counted: ended when the window began, or after now; not a process span; a producer; no stage.
    spans.append(_process(50, NOW - 60 * S - MS, MS, "validate", None))
    spans.append(_process(51, NOW, MS, "validate", None))
    spans.append(_process(52, NOW - S, MS, "validate", None, messaging_operation_type="receive"))
    spans.append(_process(53, NOW - S, MS, "validate", None, kind="PRODUCER"))
    spans.append(_span(54, 1, NOW - S, NOW - S + MS, "process orders.placed", "CONSUMER"))
    # charge: handler 10, 20, 30, 40 ms; parents unknown or not producers; the last one dead-lettered.
    spans.append(_span(60, 1, NOW - 20 * S, NOW - 20 * S + MS, "celery apply", "INTERNAL"))
    for n, parent in enumerate((1, 2, 3, 4), start=1):
        last = {"status": "ERROR", "hoptrace_outcome": "dead_lettered", "hoptrace_attempt": 3} if n == 4 else {}
        spans.append(_process(60, NOW - 10 * S + n * S, n * 10 * MS, "charge", parent, span_id=10 + n, **last))
    store.add_spans(spans)

    orders = {"hoptrace_pipeline": "orders"}
    store.add_metrics(
        [_point(CONSUMER_LAG, 10, NOW - 20 * S, hoptrace_stage="validate", messaging_destination_partition_id=p, **orders) for p in "012"]
        + [
            _point(CONSUMER_LAG, lag, NOW - 5 * S, hoptrace_stage="validate", messaging_destination_partition_id=p, **orders)
            for p, lag in zip("012", (3, 4, 0), strict=True)
        ]
        + [_point(CONSUMER_LAG, 100, NOW + S, hoptrace_stage="validate", messaging_destination_partition_id="0", **orders)]
        + [_point(QUEUE_DEPTH, 9, NOW - 30 * S, hoptrace_stage="charge", hoptrace_queue_state=state, **orders) for state in ("ready", "unacked")]
        + [
            _point(QUEUE_DEPTH, n, NOW - 2 * S, hoptrace_stage="charge", hoptrace_queue_state=state, **orders)
            for state, n in (("ready", 5), ("unacked", 2))
        ]
        + [
            _point(
                CONSUMER_LAG, 12, NOW - 10 * S, hoptrace_stage="ship", messaging_system="kafka", messaging_destination_name="orders.charged", **orders
            )
        ]
        + [_point(CONSUMER_LAG, 999, NOW - S, hoptrace_stage="validate", hoptrace_pipeline="billing")]
        + [_point(CONSUMER_LAG, 5, NOW - 100 * S, hoptrace_stage="notify", **orders)]  # before the window, and no spans: not listed
    )

    assert store.stage_stats(window_s=60, now_ns=NOW) == [
        StageStats("billing", "validate", None, None, 0, 0.0, None, None, None, None, 0, 0, 999, None, None),
        StageStats("orders", "charge", "celery", "payments", 4, 4 / 60, 0.02, 0.04, 0.04, None, 1, 0, 7, 5, 2),
        StageStats("orders", "ship", "kafka", "orders.charged", 0, 0.0, None, None, None, None, 0, 0, 12, None, None),
        # 21 durations (1..20 ms and 5 ms): ranks 11, 20, 21; 20 first-attempt waits (0.1..2.0 s): rank 19.
        StageStats("orders", "validate", "kafka", "orders.placed", 21, 21 / 60, 0.010, 0.019, 0.020, 1.9, 1, 1, 7, None, None),
    ]
    # A window that starts after the validate spans: only the latest charge span and the gauges remain.
    [charge] = [stats for stats in store.stage_stats(window_s=6.5, now_ns=NOW) if stats.stage == "charge"]
    assert (charge.messages, charge.handler_p50_s, charge.errors, charge.depth) == (1, 0.04, 1, 7)
    with pytest.raises(ValueError):
        store.stage_stats(window_s=0)


def test_nearest_rank_percentiles() -> None:
    values = [35, 20, 15, 50, 40]
    assert [nearest_rank(values, p) for p in (0, 5, 30, 40, 50, 95, 100)] == [15, 15, 20, 20, 35, 50, 50]
    assert nearest_rank([7], 99) == 7


def _trace_of(trace: int, start_ns: int, resource: Attributes) -> list[ReceivedSpan]:
    return [_span(trace, n, start_ns + n, start_ns + 10, resource=resource) for n in range(1, 5)]


def test_the_oldest_traces_go_whole_beyond_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "bounded.sqlite"
    with SqliteTraceStore(path, max_spans=10, max_metric_points=5) as store:
        oldest, middle, newest = _trace_of(1, 100, {"pid": 1}), _trace_of(2, 200, RESOURCE), _trace_of(3, 300, RESOURCE)
        store.add_spans(oldest)
        store.add_spans(middle + newest)  # 12 spans > 10: the trace received first goes, all four spans
        assert store.trace(f"{1:032x}") == []
        assert store.trace(f"{2:032x}") == middle and store.trace(f"{3:032x}") == newest
        assert (_count(store, "spans"), _count(store, "traces")) == (8, 2)
        # The resource only the evicted trace used is gone too.
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT attributes_json FROM resources").fetchall() == [('{"service.name":"orders-worker","process.pid":42}',)]

        store.add_spans(_trace_of(4, 50, RESOURCE) + _trace_of(5, 400, RESOURCE))  # received last: the traces received before go
        assert [summary.trace_id[-1] for summary in store.recent_traces()] == ["5", "4"]

        store.add_metrics([_point("g", n, time_ns=t) for n, t in enumerate((70, 10, 30, 60, 20, 50, 40))])
        assert [point.time_ns for point in store.metric_points("g")] == [30, 40, 50, 60, 70]


def test_spans_dated_in_the_future_do_not_push_out_every_new_trace(tmp_path: Path) -> None:
    """Eviction follows arrival, not the start a sender claims: ten spans dated 2100 used to outlive every trace received after them."""
    year_2100 = 4_102_444_800 * 10**9
    with SqliteTraceStore(tmp_path / "future.sqlite", max_spans=8) as store:
        store.add_spans(_trace_of(9, year_2100, RESOURCE))
        for trace in (1, 2, 3):
            store.add_spans(_trace_of(trace, 100 * trace, RESOURCE))
        assert [store.trace(f"{trace:032x}") != [] for trace in (9, 1, 2, 3)] == [False, False, True, True]


def test_a_span_dated_ahead_of_its_arrival_is_moved_back_and_marked(tmp_path: Path) -> None:
    year_2100 = 4_102_444_800 * 10**9
    with SqliteTraceStore(tmp_path / "ahead.sqlite") as store:
        before = time.time_ns()
        store.add_spans([_span(9, 1, NOW, year_2100), _span(9, 2, NOW, NOW + S)])
        late, fine = store.trace(f"{9:032x}")
    assert late.start_ns == NOW and before + MAX_AHEAD_NS <= late.end_ns <= time.time_ns() + MAX_AHEAD_NS
    assert late.attributes == {TIME_CLAMPED: True}
    assert (fine.end_ns, fine.attributes) == (NOW + S, {})


def test_the_store_stays_within_its_bytes_and_gives_the_space_back(tmp_path: Path) -> None:
    path, bound = tmp_path / "small.sqlite", 2**20
    blob = "x" * 3000
    with SqliteTraceStore(path, max_bytes=bound) as store:
        for trace in range(1, 1001):  # about 3 MB of spans, one trace after another
            store.add_spans([_span(trace, n, NOW + trace, NOW + trace + n, payload=blob) for n in (1, 2)])
            assert _data_bytes_of(store) <= bound
        kept = _count(store, "traces")
        assert 100 < kept < 500  # the oldest went, a tenth at a time...
        assert store.trace(f"{1000:032x}") != [] and store.trace(f"{1:032x}") == []  # ...and the newest stayed
        assert _count(store, "spans") == 2 * kept
    with SqliteTraceStore(path, max_bytes=bound // 4) as store:  # opened again with a smaller bound
        store.add_spans([_span(1001, 1, NOW, NOW + 1, payload=blob)])
        assert _data_bytes_of(store) <= bound // 4
    assert path.stat().st_size <= bound // 4 * 1.25  # the pages freed went back to the file system: the file shrank with the data


def test_what_arrives_is_bounded_before_it_is_kept(tmp_path: Path) -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="n" * 100_000)
    span.status.message = "m" * 100_000
    span.attributes.add(key="blob", value=AnyValue(string_value="x" * 2**21))
    span.attributes.add(key="raw", value=AnyValue(bytes_value=b"\xff" * 2**21))
    span.attributes.add(key="list", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=n) for n in range(1000)])))
    for n in range(1000):
        span.attributes.add(key=f"k{n:04}", value=AnyValue(int_value=n))
    for _ in range(1000):
        span.events.add(name="e" * 10_000)
    [decoded] = SIGNALS[0].decode(request.SerializeToString())  # traces
    assert (len(decoded.name), len(decoded.status_message)) == (MAX_TEXT, MAX_TEXT) and decoded.name.endswith(CUT)
    assert len(decoded.attributes) == MAX_ITEMS and list(decoded.attributes)[-1] == f"k{MAX_ITEMS - 4:04}"  # the first ones
    assert (len(decoded.attributes["blob"]), len(decoded.attributes["raw"]), len(decoded.attributes["list"])) == (MAX_TEXT, MAX_TEXT, MAX_ITEMS)
    assert len(decoded.events) == MAX_ITEMS and {len(name) for name, _ in decoded.events} == {MAX_TEXT}
    with SqliteTraceStore(tmp_path / "bounded.sqlite") as store:
        store.add_spans([decoded])
        assert store.trace("01" * 16) == [decoded]


def test_a_store_made_before_arrival_order_is_opened_and_bounded(tmp_path: Path) -> None:
    """A store without ``received_ns`` gets the column when opened; its traces count as received before any new one."""
    path = tmp_path / "old.sqlite"
    with SqliteTraceStore(path) as store:
        store.add_spans(_trace_of(7, 700, RESOURCE))
    with closing(sqlite3.connect(path)) as db:  # back to the table as an earlier hoptrace made it
        db.executescript(
            "DROP INDEX traces_by_arrival;"
            " CREATE TABLE old (trace_id TEXT PRIMARY KEY, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL) WITHOUT ROWID;"
            " INSERT INTO old SELECT trace_id, start_ns, end_ns FROM traces; DROP TABLE traces; ALTER TABLE old RENAME TO traces;"
        )
    with SqliteTraceStore(path, max_spans=8) as store:
        store.add_spans(_trace_of(1, 100, RESOURCE))
        assert [summary.trace_id[-1] for summary in store.recent_traces()] == ["7", "1"]
        store.add_spans(_trace_of(2, 200, RESOURCE))
        assert [summary.trace_id[-1] for summary in store.recent_traces()] == ["2", "1"]


def _received(span: ReadableSpan) -> ReceivedSpan:
    """What a span the SDK recorded should look like once received (sequences decode as lists)."""

    def plain(attributes: SdkAttributes) -> Attributes:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in (attributes or {}).items()}

    context, parent = span.get_span_context(), span.parent
    assert context is not None and span.start_time is not None and span.end_time is not None and span.instrumentation_scope
    return ReceivedSpan(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_span_id=None if parent is None else f"{parent.span_id:016x}",
        name=span.name,
        kind=span.kind.name,
        start_ns=span.start_time,
        end_ns=span.end_time,
        attributes=plain(span.attributes),
        status_code=span.status.status_code.name,
        status_message=span.status.description or "",
        events=tuple((event.name, plain(event.attributes)) for event in span.events),
        links=tuple((f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}", plain(link.attributes)) for link in span.links),
        resource=plain(span.resource.attributes),
        scope_name=span.instrumentation_scope.name,
    )


def _export_jobs(endpoint: str, worker: int, captured: InMemorySpanExporter) -> None:
    """One 'worker process': its own provider and gRPC exporter, 50 three-span traces in batches of 16 spans."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"worker-{worker}", "worker.number": worker}))
    provider.add_span_processor(BatchSpanProcessor(GrpcSpanExporter(endpoint=endpoint, insecure=True, timeout=5), max_export_batch_size=16))
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("tests.trace_store")
    for job in range(50):
        stage = {"hoptrace.pipeline": "orders", "hoptrace.stage": "validate", "hoptrace.job.id": f"job-{worker}-{job}"}
        with tracer.start_as_current_span("send orders.placed", kind=SpanKind.PRODUCER, attributes=stage) as producer:
            pass
        with tracer.start_as_current_span(
            "process orders.placed",
            context=set_span_in_context(producer),  # its parent, as a worker's extract() would make it
            kind=SpanKind.CONSUMER,
            attributes={**stage, "hoptrace.attempt": 1, "messaging.kafka.offset": job, "tags": ("a", "b")},
            links=[Link(producer.get_span_context(), {"why": "batch", "weights": (0.5, 1.5)})],
        ) as consumer:
            consumer.add_event("handler started", {"worker": worker})
            with tracer.start_as_current_span("charge card", record_exception=False) as work:
                work.record_exception(ValueError(f"declined {job}"))
                work.set_status(StatusCode.ERROR, "declined")
    assert provider.force_flush(10_000)
    provider.shutdown()


def test_concurrent_otlp_exports_round_trip_exactly(tmp_path: Path) -> None:
    captured = [InMemorySpanExporter() for _ in range(4)]  # one each: a provider's shutdown stops its exporters
    with SqliteTraceStore(tmp_path / "watch.sqlite") as store, OtlpReceiver(store) as receiver:
        workers = [threading.Thread(target=_export_jobs, args=(receiver.grpc_endpoint, n, captured[n])) for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert (_count(store, "spans"), _count(store, "traces")) == (600, 200)
        expected: dict[str, list[ReceivedSpan]] = {}
        for span in (span for exporter in captured for span in exporter.get_finished_spans()):
            expected.setdefault(f"{span.context.trace_id:032x}", []).append(_received(span))
        assert len(expected) == 200
        for trace_id, spans in expected.items():
            stored = store.trace(trace_id)
            assert sorted(stored, key=lambda span: span.span_id) == sorted(spans, key=lambda span: span.span_id)
            assert [span.start_ns for span in stored] == sorted(span.start_ns for span in spans)
        summaries = store.recent_traces(limit=1000, errors_only=True)
        assert len(summaries) == 200 and all(summary.span_count == 3 and summary.stages == ("validate",) for summary in summaries)
        assert receiver.rejected == 0


_WRITER = """
import sys, time
from pathlib import Path
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.sqlite_store import MAX_AHEAD_NS, TIME_CLAMPED, SqliteTraceStore

with SqliteTraceStore(Path(sys.argv[1])) as store:
    for trace in range(1, 201):
        store.add_spans([
            ReceivedSpan(f"{trace:032x}", f"{n:016x}", None if n == 1 else f"{1:016x}", "s", "INTERNAL", trace * 10 + n, trace * 10 + 9,
                         {"n": n}, "UNSET", "", (), (), {"service.name": "writer"}, "w")
            for n in range(1, 4)
        ])
        time.sleep(0.003)
"""


def test_another_process_reads_while_one_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_WRITER), str(path)], cwd=REPO)
    seen: list[int] = []
    try:
        while not path.exists() and writer.poll() is None:
            time.sleep(0.01)
        with SqliteTraceStore(path) as reader:
            while writer.poll() is None:
                seen.append(_count(reader, "traces"))
                # One export request is one transaction: a reader never sees part of one.
                assert all(summary.span_count == 3 for summary in reader.recent_traces(limit=5))
                time.sleep(0.01)
            assert writer.wait(30) == 0
            assert seen == sorted(seen) and any(0 < count < 200 for count in seen), seen
            assert (_count(reader, "spans"), _count(reader, "traces")) == (600, 200)
            assert reader.trace(f"{200:032x}")[2].attributes == {"n": 3}
    finally:
        writer.kill()


def _failed_and_retried(trace: int, start_ns: int) -> list[ReceivedSpan]:
    """A job whose validate hop was retried and passed, and whose charge hop then failed without a retry."""
    return [
        _span(trace, 1, start_ns, start_ns + 10, "send orders.placed", "PRODUCER", None, hoptrace_stage="validate", hoptrace_job_id=f"job-{trace}"),
        _span(
            trace,
            2,
            start_ns + 20,
            start_ns + 30,
            "process orders.placed",
            "CONSUMER",
            1,
            "ERROR",
            hoptrace_stage="validate",
            hoptrace_outcome="retried",
        ),
        _span(trace, 3, start_ns + 40, start_ns + 50, "process orders.placed", "CONSUMER", 1, hoptrace_stage="validate", hoptrace_attempt=2),
        _span(trace, 4, start_ns + 45, start_ns + 48, "send payments", "PRODUCER", 3, hoptrace_stage="charge", hoptrace_job_id=f"job-{trace}"),
        _span(trace, 5, start_ns + 60, start_ns + 70, "process payments", "CONSUMER", 4, "ERROR", hoptrace_stage="charge", hoptrace_attempt=1),
    ]


def test_traces_and_trace_give_a_job_the_same_status(store: SqliteTraceStore) -> None:
    from hoptrace.view.formatting import to_text
    from hoptrace.view.tables import traces_table
    from hoptrace.view.tree import trace_tree

    store.add_spans(_failed_and_retried(1, 1000))

    [summary] = store.recent_traces()
    assert summary.status == "failed"  # a failure outranks a retry that passed, in every view
    assert to_text(trace_tree(store.trace(summary.trace_id)), 120).splitlines()[0].endswith("failed")
    assert to_text(traces_table([summary], 120), 120).splitlines()[2].rstrip().endswith("failed")


def test_traces_filters_in_the_query_so_last_n_finds_older_matches(store: SqliteTraceStore, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hoptrace.cli import app

    store.add_spans([span for trace in range(1, 6) for span in _failed_and_retried(trace, trace * S)])  # five old failures at charge
    store.add_spans([_span(trace, 1, 10 * S + trace, 10 * S + trace + 5, "send payments", "PRODUCER") for trace in range(100, 400)])  # 300 newer

    assert [summary.trace_id for summary in store.recent_traces(3, stage="charge", errors_only=True)] == [f"{n:032x}" for n in (5, 4, 3)]
    result = CliRunner().invoke(app, ["traces", "--stage", "charge", "--errors", "--last", "3", "--db", str(store.path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines() if line.startswith("0000")] == [f"{n:032x}" for n in (5, 4, 3)]


def test_a_job_in_flight_with_nothing_new_for_too_long_is_stuck(store: SqliteTraceStore) -> None:
    now = time.time_ns()
    for trace, age_s in ((1, 600), (2, 5)):  # a message published 10 minutes ago, and one 5 seconds ago, neither taken
        start = now - age_s * S
        store.add_spans(
            [_span(trace, 1, start, start + MS, "send payments", "PRODUCER", None, hoptrace_stage="charge", hoptrace_job_id=f"job-{trace}")]
        )

    statuses = {summary.job_id: summary.status for summary in store.recent_traces(stuck_before_ns=now - 300 * S)}
    assert statuses == {"job-1": "stuck", "job-2": "in flight"}
    assert {summary.status for summary in store.recent_traces()} == {"in flight"}  # no limit given: nothing is stuck
    from hoptrace.view.formatting import to_text
    from hoptrace.view.tree import trace_tree

    assert to_text(trace_tree(store.trace(f"{1:032x}"), now - 300 * S), 120).splitlines()[0].endswith("stuck")
