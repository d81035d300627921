"""``hoptrace traces`` and ``hoptrace trace``: read stored traces back, from the embedded store or a deployed Jaeger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from hoptrace.errors import CommandError
from hoptrace.output import console
from hoptrace.pipeline.settings import Settings
from hoptrace.view.jaeger import JaegerError, JaegerQuery
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.queries import TraceSummary
from hoptrace.view.sqlite_store import SqliteTraceStore


class TraceSource(Protocol):
    """Where stored traces are read from: the embedded store or a Jaeger query service."""

    def recent_traces(self, limit: int = 20, stage: str | None = None, errors_only: bool = False) -> list[TraceSummary]:
        """The LIMIT newest traces, newest first, filtered by the source itself (never fewer than exist)."""
        ...

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of one trace, by start time.

        An unknown trace is an empty list from the embedded store, and a ``JaegerError`` that
        says why from Jaeger; callers handle both.
        """
        ...


def default_store_path(settings: Settings) -> Path:
    """The embedded store's file: ``traces.sqlite`` in the state folder."""
    return settings.state_dir / "traces.sqlite"


def open_source(db: Path | None, jaeger: str | None) -> TraceSource:
    """The Jaeger at JAEGER when given, else the embedded store (at DB, or the default file)."""
    if jaeger:
        return JaegerQuery(jaeger)
    return SqliteTraceStore(db or default_store_path(Settings()))


def print_traces(last: int, stage: str | None, errors: bool, db: Path | None, jaeger: str | None) -> None:
    """``hoptrace traces``: the LAST newest traces (through STAGE, with ERRORS only, when asked) as a table."""
    from hoptrace.view.tables import traces_table

    try:
        summaries = open_source(db, jaeger).recent_traces(last, stage=stage, errors_only=errors)
    except JaegerError as error:
        raise CommandError(error) from error
    console().print(traces_table(summaries, width=console().width))


def print_trace(trace_id: str, as_json: bool, db: Path | None, jaeger: str | None) -> None:
    """``hoptrace trace``: one trace as a tree across queues, or as JSON."""
    from hoptrace.view.formatting import trace_json
    from hoptrace.view.tree import trace_tree

    try:
        spans = open_source(db, jaeger).trace(trace_id.lower())
    except JaegerError as error:
        raise CommandError(error) from error
    if not spans:
        raise CommandError(f"no trace {trace_id} in the store; list what there is with: hoptrace traces")
    if as_json:
        print(json.dumps(trace_json(spans), indent=2))
    else:
        console().print(trace_tree(spans))
