"""``hoptrace watch``: a live view of the latest jobs and every stage, received here or read from deployed backends.

Receiving (the default): the embedded OTLP receiver (gRPC and HTTP) writes spans and metric
points into the bounded SQLite store under the state folder, and the view reads it back
(``hoptrace traces`` and ``trace`` read the same store, see ``reading``).

Reading (``--jaeger URL`` and/or ``--prometheus URL``): no receiver; the trees come from Jaeger
(else the store) and the stage table from Prometheus (else the store), as a deployment has them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from hoptrace.errors import CommandError
from hoptrace.output import console
from hoptrace.pipeline.settings import Settings
from hoptrace.reading import (
    READ_ERRORS,
    STUCK_AFTER_S,
    StageSource,
    TraceSource,
    open_source,
    open_stages,
    open_store,
    stages_view,
    stuck_before,
)
from hoptrace.view.formatting import shown, to_text
from hoptrace.view.queries import TraceSummary
from hoptrace.view.receiver import OtlpReceiver
from hoptrace.view.sqlite_store import SqliteTraceStore
from hoptrace.view.tree import trace_tree

WAITING = "waiting for spans… point OTEL_EXPORTER_OTLP_ENDPOINT here and start a worker"


def _job(traces: TraceSource, summary: TraceSummary, stuck_before_ns: int) -> RenderableType:
    """One job of the watch view: its tree, then the slowest part of its critical path (when it took any time)."""
    tree = trace_tree(traces.trace(summary.trace_id), stuck_before_ns)
    if summary.dominant is None:
        return tree
    return Group(tree, shown(Text(f"slowest part: {summary.dominant}", style="dim")))


def snapshot(traces: TraceSource, stages: StageSource, jobs: int, window_s: float, empty: str = WAITING) -> RenderableType:
    """The watch view: trees of the latest JOBS traces, each with its slowest part (EMPTY when there are none), then the per-stage
    table over WINDOW_S seconds.

    A backend that cannot answer is shown as its message instead of its part of the view.
    """
    parts: list[RenderableType] = []
    try:
        stuck = stuck_before(STUCK_AFTER_S)
        latest = traces.recent_traces(jobs, stuck_before_ns=stuck)
        parts += [_job(traces, summary, stuck) for summary in latest] or [Text(empty, style="dim")]
    except READ_ERRORS as error:
        parts.append(Text(str(error), style="red"))
    try:
        parts.append(stages_view(stages.stage_stats(window_s)))
    except READ_ERRORS as error:
        parts.append(Text(str(error), style="red"))
    return Group(*parts)


def _stop_event() -> threading.Event:
    stopped = threading.Event()

    def stop(number: int, frame: FrameType | None) -> None:
        stopped.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    return stopped


def show(view: Callable[[], RenderableType], console: Console, refresh_s: float, stopped: threading.Event) -> None:
    """Until STOPPED: redraw VIEW every REFRESH_S seconds (a terminal), or print it as plain text whenever it changed."""
    if console.is_terminal:
        with Live(view(), console=console, auto_refresh=False) as live:
            while not stopped.wait(refresh_s):
                live.update(view(), refresh=True)
        return
    shown = ""
    while not stopped.wait(refresh_s):
        if (text := to_text(view(), width=console.width)) != shown:
            shown = text
            console.print(text, highlight=False)


def watch(store: SqliteTraceStore, receiver: OtlpReceiver, console: Console, refresh_s: float, jobs: int, window_s: float) -> None:
    """Receive into STORE until SIGINT/SIGTERM, showing the latest jobs and stages (live on a terminal, else as text snapshots)."""
    stopped = _stop_event()
    with receiver:
        console.print(
            f"hoptrace watch: OTLP gRPC on {receiver.grpc_endpoint}, HTTP on {receiver.http_endpoint}; store {store.path}",
            highlight=False,
        )
        show(lambda: snapshot(store, store, jobs, window_s), console, refresh_s, stopped)


def main(
    host: str,
    grpc_port: int,
    http_port: int,
    db: Path | None,
    jobs: int,
    window_s: float,
    refresh_s: float,
    jaeger: str | None = None,
    prometheus: str | None = None,
) -> None:
    """``hoptrace watch``: receive on HOST's ports into the store at DB until stopped; with JAEGER or PROMETHEUS, read them instead."""
    if jaeger or prometheus:
        read(db, jaeger, prometheus, jobs, window_s, refresh_s)
        return
    settings = Settings()
    store = open_store(db, create=True, settings=settings)
    token = settings.receiver_token
    receiver = OtlpReceiver(store, host, grpc_port, http_port, None if token is None else token.get_secret_value(), settings.receiver_tls)
    try:
        watch(store, receiver, console(), refresh_s, jobs, window_s)
    except (RuntimeError, OSError) as error:
        raise CommandError(
            f"cannot listen on {host}:{grpc_port}/{http_port} ({error}); is another receiver running? Use --grpc-port/--http-port"
        ) from error


def read(db: Path | None, jaeger: str | None, prometheus: str | None, jobs: int, window_s: float, refresh_s: float) -> None:
    """``hoptrace watch --jaeger URL --prometheus URL``: the same view from deployed backends (the store stands in for one not given)."""
    try:
        traces, stages = open_source(db, jaeger), open_stages(db, prometheus)
    except READ_ERRORS as error:
        raise CommandError(error) from error
    origin = " and ".join(f"{name} at {url}" for name, url in (("Jaeger", jaeger), ("Prometheus", prometheus)) if url)
    empty = f"no traces in Jaeger at {jaeger} in the last hour" if jaeger else f"no traces in the store yet; {WAITING}"
    console().print(f"hoptrace watch: reading {origin}", highlight=False)
    show(lambda: snapshot(traces, stages, jobs, window_s, empty), console(), refresh_s, _stop_event())
