"""The embedded trace store of ``hoptrace watch``: received spans and metric points in one bounded SQLite file.

Tables (JSON columns are written by ``queries.to_json``, lossless for bytes too):

- ``spans``: one row per span, keyed by (trace_id, span_id); a span received twice (an exporter
  retrying) replaces the first copy. What queries filter on are columns (kind, times, status,
  pipeline, stage, job id, messaging operation, outcome, attempt, system, destination); attributes,
  events and links are JSON. Indexed by end time, by (stage, trace_id), by resource, and error spans by trace.
- ``traces``: one row per trace: the earliest start and latest end of its spans, and when a span
  of it last arrived (``received_ns``); indexed by start and by arrival.
- ``resources``: each distinct resource once, as JSON; spans and points refer to it by id.
- ``metric_points``: name, time, pipeline and stage columns, the rest of the point as JSON;
  indexed by (name, pipeline, stage, time) and by time.

Log records are not kept: ``add_logs`` drops them. Each export request is written in one
transaction, which also enforces the bounds: whole traces go, least recently received first
(not by their start: spans dated in the future would outlive every new trace), while more
than ``max_spans`` spans are stored; the oldest metric points beyond ``max_metric_points`` go;
and while the data takes more than ``max_bytes`` of the file, a tenth of the traces and of the
points go at a time, oldest first. A store made by this version gives freed pages back to the
file system after each eviction (``auto_vacuum`` incremental); an older one reuses them. The
write-ahead log is cut back to ``MAX_WAL_BYTES`` after each checkpoint. What arrives is bounded
before (``otlp_decode``: strings, attributes), and span times later than ``MAX_AHEAD_NS`` after
their arrival (a sender's clock far ahead, or garbage) are moved back to that, the span marked
``TIME_CLAMPED``: no trace lasts into the future.
The file is in WAL mode, so other processes (``hoptrace traces``) read while ``watch`` writes.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from hoptrace.pipeline import semconv
from hoptrace.view.otlp_decode import Attributes, MetricPoint, ReceivedLog, ReceivedSpan, int_attribute, text_attribute
from hoptrace.view.queries import (
    POINT_FIELDS,
    StageStats,
    TraceSummary,
    read_metric_points,
    read_trace,
    recent_traces,
    stage_stats,
    to_json,
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS resources (id INTEGER PRIMARY KEY, attributes_json TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS traces (trace_id TEXT PRIMARY KEY, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,"
    " received_ns INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS traces_by_start ON traces (start_ns)",
    "CREATE INDEX IF NOT EXISTS traces_by_arrival ON traces (received_ns)",
    "CREATE TABLE IF NOT EXISTS spans (trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT, name TEXT NOT NULL,"
    " kind TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, status_code TEXT NOT NULL, status_message TEXT NOT NULL,"
    " pipeline TEXT, stage TEXT, job_id TEXT, operation TEXT, outcome TEXT, attempt INTEGER, system TEXT, destination TEXT,"
    " attributes_json TEXT NOT NULL, events_json TEXT NOT NULL, links_json TEXT NOT NULL,"
    " resource_id INTEGER NOT NULL REFERENCES resources (id), scope_name TEXT NOT NULL, PRIMARY KEY (trace_id, span_id))",
    "CREATE INDEX IF NOT EXISTS spans_by_end ON spans (end_ns)",
    "CREATE INDEX IF NOT EXISTS spans_by_stage ON spans (stage, trace_id)",
    "CREATE INDEX IF NOT EXISTS spans_by_resource ON spans (resource_id)",
    "CREATE INDEX IF NOT EXISTS spans_with_errors ON spans (trace_id) WHERE status_code = 'ERROR'",
    "CREATE TABLE IF NOT EXISTS metric_points (id INTEGER PRIMARY KEY, name TEXT NOT NULL, time_ns INTEGER NOT NULL, pipeline TEXT,"
    " stage TEXT, point_json TEXT NOT NULL, resource_id INTEGER NOT NULL REFERENCES resources (id))",
    "CREATE INDEX IF NOT EXISTS metric_points_by_stage ON metric_points (name, pipeline, stage, time_ns)",
    "CREATE INDEX IF NOT EXISTS metric_points_by_time ON metric_points (time_ns)",
    "CREATE INDEX IF NOT EXISTS metric_points_by_resource ON metric_points (resource_id)",
)
_SPAN_COLUMNS = (
    "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message, pipeline, stage, job_id, operation,"
    " outcome, attempt, system, destination, attributes_json, events_json, links_json, resource_id, scope_name"
)
_INSERT_SPAN = f"INSERT OR REPLACE INTO spans ({_SPAN_COLUMNS}) VALUES ({', '.join('?' * len(_SPAN_COLUMNS.split(',')))})"
_UPSERT_TRACE = (
    "INSERT INTO traces (trace_id, start_ns, end_ns, received_ns) VALUES (?, ?, ?, ?) ON CONFLICT (trace_id)"
    " DO UPDATE SET start_ns = MIN(start_ns, excluded.start_ns), end_ns = MAX(end_ns, excluded.end_ns), received_ns = excluded.received_ns"
)
_ADDED_COLUMNS = {"traces": {"received_ns": "INTEGER NOT NULL DEFAULT 0"}}
"""Columns a store made by an earlier hoptrace lacks: added when it is opened (its traces count as received before any new one)."""
_INSERT_POINT = "INSERT INTO metric_points (name, time_ns, pipeline, stage, point_json, resource_id) VALUES (?, ?, ?, ?, ?, ?)"
_DROP_UNUSED_RESOURCES = (
    "DELETE FROM resources WHERE NOT EXISTS (SELECT 1 FROM spans WHERE resource_id = resources.id)"
    " AND NOT EXISTS (SELECT 1 FROM metric_points WHERE resource_id = resources.id)"
)


MAX_WAL_BYTES = 64 * 2**20
"""What the write-ahead log file is cut back to after a checkpoint."""
MAX_AHEAD_NS = 3_600 * 10**9
"""How long after its arrival a span may say it started or ended (an hour of clock skew)."""
TIME_CLAMPED = "hoptrace.view.time_clamped"
"""Attribute (true) of a stored span whose start or end was more than ``MAX_AHEAD_NS`` after its arrival, and moved back to that."""
EVICTED_SHARE = 10
"""Over ``max_bytes``, one in this many traces and points goes per round."""


def _not_ahead(spans: list[ReceivedSpan], now_ns: int) -> list[ReceivedSpan]:
    """SPANS, each start or end later than ``MAX_AHEAD_NS`` after NOW_NS moved back to that, the span marked ``TIME_CLAMPED``."""
    latest = now_ns + MAX_AHEAD_NS

    def clamped(span: ReceivedSpan) -> ReceivedSpan:
        start, end = min(span.start_ns, latest), min(span.end_ns, latest)
        return dataclasses.replace(span, start_ns=start, end_ns=end, attributes={**span.attributes, TIME_CLAMPED: True})

    return [span if span.start_ns <= latest and span.end_ns <= latest else clamped(span) for span in spans]


def _resource_ids(db: sqlite3.Connection, resources: Iterable[Attributes]) -> dict[int, int]:
    """Row ids of RESOURCES (inserted when new), by ``id()`` of each dict: a request's records share their resource's dict."""
    ids: dict[int, int] = {}
    for resource in resources:
        if id(resource) not in ids:
            text = to_json(resource)
            db.execute("INSERT OR IGNORE INTO resources (attributes_json) VALUES (?)", (text,))
            [ids[id(resource)]] = db.execute("SELECT id FROM resources WHERE attributes_json = ?", (text,)).fetchone()
    return ids


def _span_row(span: ReceivedSpan, resource_id: int) -> tuple[Any, ...]:
    """The values of a span's row, in ``_SPAN_COLUMNS`` order."""
    attributes = span.attributes
    return (
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        span.kind,
        span.start_ns,
        span.end_ns,
        span.status_code,
        span.status_message,
        text_attribute(attributes, semconv.PIPELINE),
        text_attribute(attributes, semconv.STAGE),
        text_attribute(attributes, semconv.JOB_ID),
        text_attribute(attributes, semconv.MESSAGING_OPERATION_TYPE),
        text_attribute(attributes, semconv.OUTCOME),
        int_attribute(attributes, semconv.ATTEMPT),
        text_attribute(attributes, semconv.MESSAGING_SYSTEM),
        text_attribute(attributes, semconv.MESSAGING_DESTINATION),
        to_json(attributes),
        to_json(span.events),
        to_json(span.links),
        resource_id,
        span.scope_name,
    )


def _point_row(point: MetricPoint, resource_id: int) -> tuple[Any, ...]:
    """The values of a metric point's row, as ``_INSERT_POINT`` takes them."""
    attributes = point.attributes
    fields = to_json({name: getattr(point, name) for name in POINT_FIELDS})
    return point.name, point.time_ns, text_attribute(attributes, semconv.PIPELINE), text_attribute(attributes, semconv.STAGE), fields, resource_id


def _data_bytes(db: sqlite3.Connection) -> int:
    """The bytes of DB's file in pages that hold data (free pages aside)."""
    [size] = db.execute("PRAGMA page_size").fetchone()
    [pages] = db.execute("PRAGMA page_count").fetchone()
    [free] = db.execute("PRAGMA freelist_count").fetchone()
    return int((pages - free) * size)


def _drop_traces(db: sqlite3.Connection, doomed: list[tuple[str]]) -> None:
    """Delete the traces DOOMED (one-element rows of trace ids) and their spans."""
    db.executemany("DELETE FROM spans WHERE trace_id = ?", doomed)
    db.executemany("DELETE FROM traces WHERE trace_id = ?", doomed)


def _drop_oldest_points(db: sqlite3.Connection, count: int) -> int:
    """Delete the COUNT oldest metric points (none when COUNT is not positive); how many went."""
    if count <= 0:
        return 0
    return db.execute("DELETE FROM metric_points WHERE id IN (SELECT id FROM metric_points ORDER BY time_ns, id LIMIT ?)", (count,)).rowcount


class StoreError(Exception):
    """The file at a store's path cannot be opened as one: not SQLite, damaged, another program's database, or no room to set it up."""


class SqliteTraceStore:
    """A ``TelemetrySink`` in a SQLite file, bounded in size; many threads may write, other processes may read; a context manager.

    Writes go through one connection and reads through another, each used by one thread at a
    time; SQLite's WAL and busy timeout coordinate with other processes using the same file.
    """

    def __init__(  # noqa: PLR0913 - its bounds
        self, path: Path, max_spans: int = 200_000, max_metric_points: int = 200_000, busy_timeout_s: float = 10.0, max_bytes: int = 256 * 2**20
    ) -> None:
        """Open the store at PATH, keeping at most MAX_SPANS spans and MAX_METRIC_POINTS points in at most about MAX_BYTES of data.

        When missing, the file is created readable by its owner only, and its directory with it.

        BUSY_TIMEOUT_S is how long a statement waits for another process's write to finish.
        """
        if max_spans < 1 or max_metric_points < 1 or max_bytes < 1:
            raise ValueError(f"the bounds must be positive, not max_spans={max_spans}, max_metric_points={max_metric_points}, max_bytes={max_bytes}")
        self.path = path
        self.max_spans = max_spans
        self.max_metric_points = max_metric_points
        self.max_bytes = max_bytes
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        if not path.exists():  # spans carry payload attributes and baggage: readable by its owner only (SQLite's -wal and -shm follow)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._writer = self._connect(busy_timeout_s, new)
            self._reader = self._connect(busy_timeout_s)
            with self._writing() as db:
                for table, columns in _ADDED_COLUMNS.items():
                    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                    for name, definition in columns.items():
                        if have and name not in have:
                            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
                for statement in _SCHEMA:
                    db.execute(statement)
        except sqlite3.DatabaseError as error:  # OperationalError (disk full, read-only, locked) included
            raise StoreError(f"cannot open the trace store at {path} ({error}); if it is damaged or not hoptrace's, move it aside") from error

    def _connect(self, busy_timeout_s: float, new: bool = False) -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit), usable from any thread, in WAL mode.

        The first connection to a NEW file makes it one that gives freed pages back (before WAL mode: it fixes the format).
        """
        db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        if new:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode: only a power loss may drop the last commits
        db.execute(f"PRAGMA journal_size_limit = {MAX_WAL_BYTES}")
        return db

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, holding SQLite's write lock from its start (so it never has to upgrade and fail)."""
        with self._write_lock:
            yield from self._transaction(self._writer, "BEGIN IMMEDIATE")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot while writers go on."""
        with self._read_lock:
            yield from self._transaction(self._reader, "BEGIN")

    @staticmethod
    def _transaction(db: sqlite3.Connection, begin: str) -> Iterator[sqlite3.Connection]:
        """Run the body between BEGIN and COMMIT, rolling back when it raises."""
        db.execute(begin)
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def add_spans(self, spans: Iterable[ReceivedSpan]) -> None:
        """Keep the spans of one export request in one transaction, then drop the oldest traces beyond ``max_spans``."""
        spans = _not_ahead(list(spans), time.time_ns())
        if not spans:
            return
        bounds: dict[str, tuple[int, int]] = {}
        for span in spans:
            start, end = bounds.get(span.trace_id, (span.start_ns, span.end_ns))
            bounds[span.trace_id] = (min(start, span.start_ns), max(end, span.end_ns))
        with self._writing() as db:
            resources = _resource_ids(db, (span.resource for span in spans))
            db.executemany(_INSERT_SPAN, [_span_row(span, resources[id(span.resource)]) for span in spans])
            now = time.time_ns()
            db.executemany(_UPSERT_TRACE, [(trace_id, start, end, now) for trace_id, (start, end) in bounds.items()])
            evicted = self._evict_traces(db) + self._evict_to_size(db)
            if evicted:
                db.execute(_DROP_UNUSED_RESOURCES)
        if evicted:
            self._give_back()

    def add_metrics(self, points: Iterable[MetricPoint]) -> None:
        """Keep the points of one export request in one transaction, then drop the oldest beyond ``max_metric_points``."""
        points = list(points)
        if not points:
            return
        with self._writing() as db:
            resources = _resource_ids(db, (point.resource for point in points))
            db.executemany(_INSERT_POINT, [_point_row(point, resources[id(point.resource)]) for point in points])
            [count] = db.execute("SELECT COUNT(*) FROM metric_points").fetchone()
            evicted = _drop_oldest_points(db, count - self.max_metric_points) + self._evict_to_size(db)
            if evicted:
                db.execute(_DROP_UNUSED_RESOURCES)
        if evicted:
            self._give_back()

    def add_logs(self, logs: Iterable[ReceivedLog]) -> None:
        """Drop log records: this store keeps traces and metric points only."""

    def _evict_traces(self, db: sqlite3.Connection) -> int:
        """Delete whole traces, least recently received first (earliest start first among those), until at most ``max_spans`` spans remain.

        How many went.
        """
        [excess] = db.execute("SELECT COUNT(*) - ? FROM spans", (self.max_spans,)).fetchone()
        doomed: list[tuple[str]] = []
        oldest = db.execute(
            "SELECT trace_id, (SELECT COUNT(*) FROM spans s WHERE s.trace_id = t.trace_id) FROM traces t ORDER BY received_ns, start_ns, trace_id"
        )
        while excess > 0 and (row := oldest.fetchone()) is not None:
            doomed.append((row[0],))
            excess -= row[1]
        oldest.close()
        _drop_traces(db, doomed)
        return len(doomed)

    def _evict_to_size(self, db: sqlite3.Connection) -> int:
        """While the data takes more than ``max_bytes`` of the file, delete the oldest tenth of the traces and of the points; how many went."""
        evicted = 0
        while _data_bytes(db) > self.max_bytes:
            [traces] = db.execute("SELECT COUNT(*) FROM traces").fetchone()
            [points] = db.execute("SELECT COUNT(*) FROM metric_points").fetchone()
            if traces + points == 0:
                break
            doomed = db.execute(
                "SELECT trace_id FROM traces ORDER BY received_ns, start_ns, trace_id LIMIT ?", (-(-traces // EVICTED_SHARE),)
            ).fetchall()
            _drop_traces(db, doomed)
            evicted += len(doomed) + _drop_oldest_points(db, -(-points // EVICTED_SHARE))
        return evicted

    def _give_back(self) -> None:
        """Return the pages evictions freed to the file system (a store made before ``auto_vacuum`` keeps them for reuse)."""
        with self._write_lock:
            self._writer.executescript("PRAGMA incremental_vacuum;")  # run to its end: execute() would step it once, freeing one page

    def recent_traces(
        self, limit: int = 20, stage: str | None = None, errors_only: bool = False, stuck_before_ns: int | None = None, slowest: bool = False
    ) -> list[TraceSummary]:
        """Summaries of the LIMIT newest traces by start, newest first; only traces through STAGE, or with an ERROR span, when asked.

        SLOWEST: the LIMIT slowest of all stored traces instead, by end-to-end time, slowest first (ordered in SQL).
        A job in flight with nothing new since STUCK_BEFORE_NS is ``stuck``.
        """
        with self._reading() as db:
            return recent_traces(db, limit, stage, errors_only, stuck_before_ns, slowest)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of a trace exactly as received, by start time; empty when the store does not have it."""
        with self._reading() as db:
            return read_trace(db, trace_id)

    def metric_points(self, name: str) -> list[MetricPoint]:
        """The stored points of the metric NAME exactly as received, oldest first."""
        with self._reading() as db:
            return read_metric_points(db, name)

    def stage_stats(self, window_s: float = 60.0, now_ns: int | None = None) -> list[StageStats]:
        """Per-stage numbers over the WINDOW_S seconds up to NOW_NS (default: now); see ``queries.stage_stats``."""
        with self._reading() as db:
            return stage_stats(db, window_s, now_ns)

    def clear(self) -> None:
        """Forget every span, trace and metric point (for every process using the file)."""
        with self._writing() as db:
            for table in ("spans", "traces", "metric_points", "resources"):
                db.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        """Close both connections; the store is unusable afterwards."""
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()

    def __enter__(self) -> SqliteTraceStore:
        """Return the store."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Close."""
        self.close()
