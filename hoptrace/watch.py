"""``hoptrace watch``, ``traces`` and ``trace``: the embedded receiver and store, and reading traces back.

``watch`` runs an OTLP receiver (gRPC and HTTP) whose spans and metric points go to the
bounded SQLite store under the state folder, and keeps a live view of the latest jobs and
of every stage. ``traces`` and ``trace`` read that store, or a deployed Jaeger.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from hoptrace.pipeline.settings import Settings
from hoptrace.view.formatting import to_text
from hoptrace.view.jaeger import JaegerQuery
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.queries import TraceSummary
from hoptrace.view.receiver import OtlpReceiver
from hoptrace.view.sqlite_store import SqliteTraceStore
from hoptrace.view.tables import stage_table
from hoptrace.view.tree import trace_tree


class TraceSource(Protocol):
    """Where stored traces are read from: the embedded store or a Jaeger query service."""

    def recent_traces(self, limit: int = 20) -> list[TraceSummary]:
        """The newest traces, newest first."""
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


def open_source(settings: Settings, db: Path | None, jaeger: str | None) -> TraceSource:
    """The Jaeger at JAEGER when given, else the embedded store (at DB, or the default file)."""
    if jaeger:
        return JaegerQuery(jaeger)
    return SqliteTraceStore(db or default_store_path(settings))


def filtered(summaries: Sequence[TraceSummary], stage: str | None, errors: bool) -> list[TraceSummary]:
    """SUMMARIES that went through STAGE (when given) and, with ERRORS, that had a failed span."""
    return [s for s in summaries if (stage is None or stage in s.stages) and (not errors or s.error_count > 0)]


def snapshot(store: SqliteTraceStore, jobs: int, window_s: float) -> RenderableType:
    """The watch view: trees of the latest JOBS traces, then the per-stage table over WINDOW_S seconds."""
    trees: list[RenderableType] = [trace_tree(store.trace(summary.trace_id)) for summary in store.recent_traces(jobs)]
    if not trees:
        trees = [Text("waiting for spans… point OTEL_EXPORTER_OTLP_ENDPOINT here and start a worker", style="dim")]
    return Group(*trees, stage_table(store.stage_stats(window_s)))


def _stop_event() -> threading.Event:
    stopped = threading.Event()

    def stop(number: int, frame: FrameType | None) -> None:
        stopped.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    return stopped


def watch(store: SqliteTraceStore, receiver: OtlpReceiver, console: Console, refresh_s: float, jobs: int, window_s: float) -> None:
    """Receive into STORE until SIGINT/SIGTERM, redrawing a live view (a terminal) or printing snapshots as text."""
    stopped = _stop_event()
    with receiver:
        console.print(
            f"hoptrace watch: OTLP gRPC on {receiver.grpc_endpoint}, HTTP on {receiver.http_endpoint}; store {store.path}",
            highlight=False,
        )
        if console.is_terminal:
            with Live(snapshot(store, jobs, window_s), console=console, auto_refresh=False) as live:
                while not stopped.wait(refresh_s):
                    live.update(snapshot(store, jobs, window_s), refresh=True)
            return
        seen = -1
        while not stopped.wait(refresh_s):
            if (count := store.span_count()) != seen:
                seen = count
                console.print(to_text(snapshot(store, jobs, window_s), width=console.width), highlight=False)
