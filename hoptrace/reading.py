"""``hoptrace traces``, ``trace`` and ``stages``: read traces and stage numbers back, from the embedded store or deployed backends.

Traces come from the embedded store or a Jaeger query service; the stage table from the
embedded store or a Prometheus that scrapes the OpenTelemetry Collector's prometheus exporter.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from rich.console import Group, RenderableType

from hoptrace.errors import CommandError
from hoptrace.output import console
from hoptrace.pipeline.settings import Settings
from hoptrace.view.jaeger import JaegerError, JaegerQuery
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.prometheus import PrometheusError, PrometheusQuery
from hoptrace.view.prometheus_stages import PrometheusStages, PrometheusStageStats, outcomes_table
from hoptrace.view.queries import StageStats, TraceSummary
from hoptrace.view.sqlite_store import SqliteTraceStore, StoreError


class TraceSource(Protocol):
    """Where stored traces are read from: the embedded store or a Jaeger query service."""

    def recent_traces(
        self, limit: int = 20, stage: str | None = None, errors_only: bool = False, stuck_before_ns: int | None = None, slowest: bool = False
    ) -> list[TraceSummary]:
        """The LIMIT newest traces, newest first, filtered by the source itself (never fewer than exist); in flight before STUCK_BEFORE_NS: stuck.

        SLOWEST: the LIMIT slowest by end-to-end time instead, slowest first: of every stored trace in
        the embedded store, of a pool of the newest in Jaeger (``jaeger.slowest_pool``).
        """
        ...

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of one trace, by start time.

        An unknown trace is an empty list from the embedded store, and a ``JaegerError`` that
        says why from Jaeger; callers handle both.
        """
        ...


class StageSource(Protocol):
    """Where the stage table's numbers come from: the embedded store or a Prometheus."""

    def stage_stats(self, window_s: float = 60.0) -> Sequence[StageStats]:
        """Per (pipeline, stage), sorted: the numbers of the WINDOW_S seconds up to now."""
        ...


TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
"""A W3C trace id as the commands print it (either letter case)."""
STUCK_AFTER_S = 300.0
"""A job still in flight with nothing new for this long is shown as stuck (``--stuck-after``)."""


def stuck_before(stuck_after_s: float) -> int:
    """The time (ns) before which a job with nothing new is stuck."""
    return time.time_ns() - round(stuck_after_s * 1e9)


READ_ERRORS = (JaegerError, PrometheusError)
"""What a deployed backend raises when it cannot answer; the message says what to do."""


def default_store_path(settings: Settings) -> Path:
    """The embedded store's file: ``traces.sqlite`` in the state folder."""
    return settings.state_dir / "traces.sqlite"


def open_store(db: Path | None, create: bool = False, settings: Settings | None = None) -> SqliteTraceStore:
    """The embedded store at DB, or at the default file of SETTINGS (read now if not given); unless CREATE, a CommandError when there is none yet."""
    settings = settings or Settings()
    path = db or default_store_path(settings)
    if not create and not path.exists():
        raise CommandError(f"no trace store at {path} yet: hoptrace watch or hoptrace demo makes it as telemetry arrives; or read --jaeger")
    try:
        return SqliteTraceStore(path, max_bytes=settings.store_max_bytes)
    except StoreError as error:
        raise CommandError(error) from error


def open_source(db: Path | None, jaeger: str | None) -> TraceSource:
    """The Jaeger at JAEGER when given, else the embedded store (at DB, or the default file)."""
    if jaeger:
        return JaegerQuery(jaeger)
    return open_store(db)


def open_stages(db: Path | None, prometheus: str | None, pipeline: str | None = None) -> StageSource:
    """The Prometheus at PROMETHEUS (PIPELINE's stages only, when given) if given, else the embedded store (at DB, or the default file)."""
    if prometheus:
        return PrometheusStages(PrometheusQuery(prometheus), pipeline)
    return open_store(db)


def stages_view(stats: Sequence[StageStats], width: int | None = None) -> RenderableType:
    """The stage table; below it, when the numbers come from Prometheus, what only it knows (consumed, dead-lettered, job p95, oldest waiting)."""
    from hoptrace.view.tables import stage_table

    extra = [each for each in stats if isinstance(each, PrometheusStageStats)]
    return Group(stage_table(stats, width=width), outcomes_table(extra)) if extra else stage_table(stats, width=width)


def print_stages(window_s: float, db: Path | None, prometheus: str | None, pipeline: str | None) -> None:
    """``hoptrace stages``: the per-stage table of the last WINDOW_S seconds, from Prometheus or the embedded store."""
    try:
        stats = open_stages(db, prometheus, pipeline).stage_stats(window_s)
    except PrometheusError as error:  # unreachable, not Prometheus, or not a URL at all
        raise CommandError(error) from error
    if pipeline is not None and not prometheus:
        stats = [each for each in stats if each.pipeline == pipeline]
    console().print(stages_view(stats, width=console().width))


def print_traces(
    last: int | None,
    stage: str | None,
    errors: bool,
    db: Path | None,
    jaeger: str | None,
    stuck_after_s: float = STUCK_AFTER_S,
    slowest: int | None = None,
) -> None:
    """``hoptrace traces``: the LAST newest traces (20 when None), or the SLOWEST slowest, through STAGE, with ERRORS only, when asked, as a table.

    LAST and SLOWEST together are a usage error (exit status 2): one list is either the newest or the slowest.
    """
    from hoptrace.view.tables import traces_table

    if last is not None and slowest is not None:
        raise CommandError("--last and --slowest do not go together: --last N lists the N newest traces, --slowest N the N slowest", exit_code=2)
    count = slowest if slowest is not None else last if last is not None else 20
    try:
        summaries = open_source(db, jaeger).recent_traces(
            count, stage=stage, errors_only=errors, stuck_before_ns=stuck_before(stuck_after_s), slowest=slowest is not None
        )
    except JaegerError as error:
        raise CommandError(error) from error
    console().print(traces_table(summaries, width=console().width))


def print_trace(trace_id: str, as_json: bool, db: Path | None, jaeger: str | None, stuck_after_s: float = STUCK_AFTER_S) -> None:
    """``hoptrace trace``: one trace as a tree across queues with its critical path below, or as one JSON object of both."""
    from hoptrace.view.critical_path import critical_path
    from hoptrace.view.critical_view import critical_path_json, critical_path_table
    from hoptrace.view.formatting import trace_json
    from hoptrace.view.tree import trace_tree

    if not TRACE_ID.fullmatch(trace_id):
        raise CommandError(f"{trace_id!r} is not a trace id: 32 hex digits, as printed by publish, traces or demo", exit_code=2)
    try:
        spans = open_source(db, jaeger).trace(trace_id.lower())
    except JaegerError as error:
        raise CommandError(error) from error
    if not spans:
        raise CommandError(f"no trace {trace_id} in the store; list what there is with: hoptrace traces")
    path = critical_path(spans)
    if as_json:
        print(json.dumps({"trace_id": trace_id.lower(), "spans": trace_json(spans), "critical_path": critical_path_json(path)}, indent=2))
    else:
        console().print(trace_tree(spans, stuck_before(stuck_after_s)))
        console().print(critical_path_table(path))
