"""The read side of the SQLite trace store: trace summaries, whole traces, per-stage numbers.

Each function takes an open connection to a store's file (``SqliteTraceStore`` calls them in a
read transaction; its module docstring describes the tables) and returns frozen records.
Attributes, events, links, resources and metric points are stored as JSON through
``to_json``/``from_json``, which round-trip every value OTLP decodes to: bytes become
``{"$bytes": "<base64>"}``, and a map that would read as such a marker is wrapped as
``{"$map": {...}}``.

Percentiles are nearest-rank: the p-th percentile of n sorted values is the
``ceil(p * n / 100)``-th one, so it is always a value that was measured.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from hoptrace.pipeline import semconv
from hoptrace.pipeline.semconv import CONSUMER_LAG, QUEUE_DEPTH, QUEUE_STATE
from hoptrace.view.critical_path import critical_path, dominant_phrase
from hoptrace.view.hops import JobStatus, group_hops, job_status, kept_as
from hoptrace.view.otlp_decode import Attributes, MetricPoint, ReceivedSpan, text_attribute

POINT_FIELDS = tuple(f.name for f in fields(MetricPoint) if f.name not in ("name", "time_ns", "resource"))
"""The fields of a MetricPoint kept in its JSON column (name, time and resource have columns)."""
_BYTES, _MAP = "$bytes", "$map"


def _encode(value: Any) -> Any:
    """VALUE with bytes and marker-like maps made JSON-safe (tuples become lists)."""
    if isinstance(value, bytes):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        encoded = {key: _encode(item) for key, item in value.items()}
        return {_MAP: encoded} if len(encoded) == 1 and next(iter(encoded)) in (_BYTES, _MAP) else encoded
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    """The value ``_encode`` was given (lists stay lists)."""
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(key, item)] = value.items()
        if key == _BYTES:
            return base64.b64decode(item)
        if key == _MAP:
            return {name: _decode(each) for name, each in item.items()}
    return {name: _decode(each) for name, each in value.items()}


def to_json(value: Any) -> str:
    """VALUE (anything OTLP decodes to, in dicts, lists and tuples) as compact JSON text."""
    return json.dumps(_encode(value), separators=(",", ":"))


def from_json(text: str) -> Any:
    """What ``to_json`` was given, tuples read back as lists."""
    return _decode(json.loads(text))


@dataclass(frozen=True)
class TraceSummary:
    """One trace at a glance, as ``hoptrace traces`` lists it."""

    trace_id: str
    job_id: str | None
    """``hoptrace.job.id`` of its first span that has a non-empty one, else None."""
    root_name: str
    """Name of the root span; of the earliest span while the root has not arrived."""
    start_ns: int
    """Earliest start of its spans."""
    end_ns: int
    """Latest end of its spans: ``end_ns - start_ns`` is the end-to-end time."""
    span_count: int
    error_count: int
    """Spans with status ERROR."""
    stages: tuple[str, ...]
    """Distinct ``hoptrace.stage`` values in order of first appearance (span start)."""
    status: JobStatus
    """What became of the job: ``hops.job_status`` of its spans."""
    kept: str | None = None
    """Why a flight recorder kept the job though the sampler dropped it (``hops.kept_as``); None when it did not."""
    dominant: str | None = None
    """The longest segment of the job's critical path, as ``critical_path.dominant_phrase`` says it (``charge handler 62%``);
    None for a job that took no time."""


@dataclass(frozen=True)
class StageStats:
    """The numbers of one stage over a time window, from its CONSUMER ``process`` spans and depth gauges."""

    pipeline: str
    stage: str
    system: str | None
    """``messaging.system`` of its latest span (or depth point)."""
    destination: str | None
    """``messaging.destination.name`` of its latest span (or depth point)."""
    messages: int
    """Process spans (one per attempt) that ended in the window."""
    rate_per_s: float
    """``messages`` divided by the window."""
    handler_p50_s: float | None
    """Nearest-rank percentiles of the process span durations, seconds; None without spans."""
    handler_p95_s: float | None
    handler_p99_s: float | None
    queue_wait_p95_s: float | None
    """Nearest-rank p95 of first-attempt start minus its PRODUCER parent's start; None when no parent is stored."""
    errors: int
    """Spans with status ERROR."""
    retries: int
    """Spans with outcome ``retried``."""
    depth: int | float | None
    """Latest ``hoptrace.queue.depth`` (ready + unacked) or ``hoptrace.kafka.consumer.lag`` (all partitions); None without a point."""
    depth_ready: int | float | None
    """The ``ready`` part of a queue depth; None for lag or without a point."""
    depth_unacked: int | float | None
    """The ``unacked`` part of a queue depth; None for lag or without a point."""


def read_trace(db: sqlite3.Connection, trace_id: str) -> list[ReceivedSpan]:
    """The spans of a trace as received, by start time (then arrival); empty when unknown."""
    rows = db.execute(
        "SELECT s.trace_id, span_id, parent_span_id, name, kind, start_ns, s.end_ns, s.attributes_json, status_code, status_message,"
        " events_json, links_json, r.attributes_json, scope_name"
        " FROM spans s JOIN resources r ON r.id = s.resource_id WHERE s.trace_id = ? ORDER BY start_ns, s.rowid",
        (trace_id,),
    )
    return [
        ReceivedSpan(
            trace_id=tid,
            span_id=span_id,
            parent_span_id=parent,
            name=name,
            kind=kind,
            start_ns=start,
            end_ns=end,
            attributes=from_json(attributes),
            status_code=status,
            status_message=message,
            events=tuple((event, attrs) for event, attrs in from_json(events)),
            links=tuple((link_trace, link_span, attrs) for link_trace, link_span, attrs in from_json(links)),
            resource=from_json(resource),
            scope_name=scope,
        )
        for tid, span_id, parent, name, kind, start, end, attributes, status, message, events, links, resource, scope in rows
    ]


def read_metric_points(db: sqlite3.Connection, name: str) -> list[MetricPoint]:
    """The stored points of the metric NAME, oldest first."""
    rows = db.execute(
        "SELECT m.time_ns, m.point_json, r.attributes_json FROM metric_points m JOIN resources r ON r.id = m.resource_id"
        " WHERE m.name = ? ORDER BY m.time_ns, m.id",
        (name,),
    )
    points = []
    for time_ns, point, resource in rows:
        values = from_json(point)
        for key in ("bucket_counts", "explicit_bounds"):
            values[key] = None if values[key] is None else tuple(values[key])
        points.append(MetricPoint(name=name, time_ns=time_ns, resource=from_json(resource), **values))
    return points


def recent_traces(
    db: sqlite3.Connection,
    limit: int = 20,
    stage: str | None = None,
    errors_only: bool = False,
    stuck_before_ns: int | None = None,
    slowest: bool = False,
) -> list[TraceSummary]:
    """Summaries of the LIMIT newest traces by start, newest first, filtered and ordered in the query itself.

    STAGE keeps the traces that went through that stage; ERRORS_ONLY the traces with a failed span
    (with STAGE: a failed span of that stage, as Jaeger's tag search means it). SLOWEST: the LIMIT
    slowest instead, by end-to-end time (latest end minus earliest start), slowest first (newest
    first among equals). STUCK_BEFORE_NS: see ``summarize``.
    """
    span_conditions, params = [], []
    if stage is not None:
        span_conditions.append("stage = ?")
        params.append(stage)
    if errors_only:
        span_conditions.append("status_code = 'ERROR'")
    where = f"WHERE trace_id IN (SELECT trace_id FROM spans WHERE {' AND '.join(span_conditions)})" if span_conditions else ""
    order = "end_ns - start_ns DESC, start_ns DESC" if slowest else "start_ns DESC"
    query = f"SELECT trace_id FROM traces {where} ORDER BY {order}, trace_id DESC LIMIT ?"
    trace_ids = [trace_id for (trace_id,) in db.execute(query, (*params, limit))]
    return [summarize(trace_id, read_trace(db, trace_id), stuck_before_ns) for trace_id in trace_ids]


def summarize(trace_id: str, spans: Iterable[ReceivedSpan], stuck_before_ns: int | None = None) -> TraceSummary:
    """The summary of a trace (not empty) from its spans, the same for the embedded store and Jaeger.

    Its status is the job's status from its hops (``hops.job_status``), the one rule every view uses;
    a job still in flight with nothing new since STUCK_BEFORE_NS is ``stuck``. Its dominant cause is
    the longest segment of its critical path (``critical_path``).
    """
    ordered = sorted(spans, key=lambda span: span.start_ns)
    by_id = {span.span_id: span for span in ordered}
    roots = [span.name for span in ordered if span.parent_span_id is None]
    return TraceSummary(
        trace_id=trace_id,
        job_id=next((job for span in ordered if (job := text_attribute(span.attributes, semconv.JOB_ID))), None),
        root_name=roots[0] if roots else ordered[0].name,
        start_ns=ordered[0].start_ns,
        end_ns=max(span.end_ns for span in ordered),
        span_count=len(ordered),
        error_count=sum(span.status_code == "ERROR" for span in ordered),
        stages=tuple(dict.fromkeys(stage for span in ordered if (stage := text_attribute(span.attributes, semconv.STAGE)) is not None)),
        status=job_status(group_hops(ordered, by_id), ordered, stuck_before_ns),
        kept=kept_as(ordered),
        dominant=dominant_phrase(critical_path(ordered)),
    )


def nearest_rank(values: list[int], percent: int) -> int:
    """The nearest-rank PERCENT-th percentile of VALUES (not empty): the ceil(percent * n / 100)-th smallest."""
    return sorted(values)[max(1, (percent * len(values) + 99) // 100) - 1]


@dataclass
class _StageSpans:
    """What the process spans of one stage in the window add up to."""

    system: str | None = None
    destination: str | None = None
    durations_ns: list[int] = field(default_factory=list)
    waits_ns: list[int] = field(default_factory=list)
    errors: int = 0
    retries: int = 0


_PROCESS_SPANS = (
    "SELECT c.pipeline, c.stage, c.system, c.destination, c.start_ns, c.end_ns, c.status_code, c.outcome, c.attempt, p.start_ns"
    " FROM spans c LEFT JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id AND p.kind = 'PRODUCER'"
    " WHERE c.end_ns > ? AND c.end_ns <= ? AND c.kind = 'CONSUMER' AND c.operation = 'process'"
    " AND c.pipeline IS NOT NULL AND c.stage IS NOT NULL ORDER BY c.end_ns"
)


def stage_stats(db: sqlite3.Connection, window_s: float = 60.0, now_ns: int | None = None) -> list[StageStats]:
    """Per (pipeline, stage), sorted: the process spans that ended in the WINDOW_S seconds up to NOW_NS, and the latest depth.

    Stages without spans in the window are listed too when a depth gauge point of theirs falls in it.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be positive, not {window_s}")
    now_ns = time.time_ns() if now_ns is None else now_ns
    since_ns = now_ns - round(window_s * 1e9)
    stages: dict[tuple[str, str], _StageSpans] = {}
    for pipeline, stage, system, destination, start, end, status, outcome, attempt, parent_start in db.execute(_PROCESS_SPANS, (since_ns, now_ns)):
        spans = stages.setdefault((pipeline, stage), _StageSpans())
        spans.system, spans.destination = system, destination
        spans.durations_ns.append(end - start)
        if parent_start is not None and (attempt or 1) == 1:
            spans.waits_ns.append(start - parent_start)
        spans.errors += status == "ERROR"
        spans.retries += outcome == "retried"
    gauged = db.execute(
        "SELECT DISTINCT pipeline, stage FROM metric_points WHERE name IN (?, ?) AND time_ns > ? AND time_ns <= ? AND stage IS NOT NULL",
        (QUEUE_DEPTH, CONSUMER_LAG, since_ns, now_ns),
    )
    for key in gauged:
        stages.setdefault(key, _StageSpans())
    return [_stage_stats(db, pipeline, stage, spans, window_s, now_ns) for (pipeline, stage), spans in sorted(stages.items())]


def _stage_stats(db: sqlite3.Connection, pipeline: str, stage: str, spans: _StageSpans, window_s: float, now_ns: int) -> StageStats:
    """One stage's numbers from its spans in the window and its latest depth point."""
    durations = spans.durations_ns
    depth, ready, unacked, gauge_attributes = _latest_depth(db, pipeline, stage, now_ns)

    def seconds(values: list[int], percent: int) -> float | None:
        return nearest_rank(values, percent) / 1e9 if values else None

    return StageStats(
        pipeline=pipeline,
        stage=stage,
        system=spans.system if durations else gauge_attributes.get(semconv.MESSAGING_SYSTEM),
        destination=spans.destination if durations else gauge_attributes.get(semconv.MESSAGING_DESTINATION),
        messages=len(durations),
        rate_per_s=len(durations) / window_s,
        handler_p50_s=seconds(durations, 50),
        handler_p95_s=seconds(durations, 95),
        handler_p99_s=seconds(durations, 99),
        queue_wait_p95_s=seconds(spans.waits_ns, 95),
        errors=spans.errors,
        retries=spans.retries,
        depth=depth,
        depth_ready=ready,
        depth_unacked=unacked,
    )


_DepthValues = tuple[int | float | None, int | float | None, int | float | None, Attributes]


def _latest_depth(db: sqlite3.Connection, pipeline: str, stage: str, now_ns: int) -> _DepthValues:
    """(total, ready, unacked, attributes of a point) of the latest depth or lag collection of a stage up to NOW_NS.

    The SDK stamps every point of one gauge collection with the same time, so the points at the
    latest time are one whole collection (all states, or all partitions) of one process.
    """
    latest: tuple[int, str] | None = None
    for name in (QUEUE_DEPTH, CONSUMER_LAG):
        [time_ns] = db.execute(
            "SELECT MAX(time_ns) FROM metric_points WHERE name = ? AND pipeline = ? AND stage = ? AND time_ns <= ?", (name, pipeline, stage, now_ns)
        ).fetchone()
        if time_ns is not None and (latest is None or time_ns > latest[0]):
            latest = (time_ns, name)
    if latest is None:
        return None, None, None, {}
    time_ns, name = latest
    rows = db.execute(
        "SELECT point_json FROM metric_points WHERE name = ? AND pipeline = ? AND stage = ? AND time_ns = ?", (name, pipeline, stage, time_ns)
    )
    points = [from_json(point) for (point,) in rows]
    total = sum(point["value"] or 0 for point in points)
    if name == CONSUMER_LAG:
        return total, None, None, points[0]["attributes"]

    def state(wanted: str) -> int | float:
        return sum(point["value"] or 0 for point in points if point["attributes"].get(QUEUE_STATE) == wanted)

    return total, state("ready"), state("unacked"), points[0]["attributes"]
