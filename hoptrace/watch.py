"""``hoptrace watch``: the embedded OTLP receiver and store, and a live view of the latest jobs and every stage.

The receiver (gRPC and HTTP) writes spans and metric points into the bounded SQLite store
under the state folder (``hoptrace traces`` and ``trace`` read it back, see ``reading``).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from hoptrace.errors import CommandError
from hoptrace.output import console
from hoptrace.pipeline.settings import Settings
from hoptrace.reading import default_store_path
from hoptrace.view.formatting import to_text
from hoptrace.view.receiver import OtlpReceiver
from hoptrace.view.sqlite_store import SqliteTraceStore
from hoptrace.view.tables import stage_table
from hoptrace.view.tree import trace_tree


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


def main(host: str, grpc_port: int, http_port: int, db: Path | None, jobs: int, window_s: float, refresh_s: float) -> None:
    """``hoptrace watch``: receive on HOST's ports into the store at DB (default: the state folder's) until stopped."""
    store = SqliteTraceStore(db or default_store_path(Settings()))
    receiver = OtlpReceiver(store, host, grpc_port, http_port)
    try:
        watch(store, receiver, console(), refresh_s, jobs, window_s)
    except (RuntimeError, OSError) as error:
        raise CommandError(
            f"cannot listen on {host}:{grpc_port}/{http_port} ({error}); is another receiver running? Use --grpc-port/--http-port"
        ) from error
