"""``hoptrace demo``: the whole journey in one command, on the example orders pipeline.

Starts the local services when they are down, an embedded OTLP receiver writing to the
trace store, and the workers of ``examples/orders``; publishes N jobs; waits until every
job reached the last stage (or names the stage where jobs are stuck); prints one full
trace and the per-stage table; stops what it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import track

from hoptrace import services
from hoptrace.clients.celery.app import celery_app
from hoptrace.clients.kafka_python.admin import create_topics, delete_topics
from hoptrace.clients.redis.server import delete_keys, list_lengths
from hoptrace.errors import CommandError
from hoptrace.examples.orders import outbox_key
from hoptrace.loader import load_pipeline
from hoptrace.output import console as stdout
from hoptrace.pipeline.health import read_health
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import KafkaTransport, Pipeline
from hoptrace.publish import job_payloads, publish_job
from hoptrace.reading import default_store_path
from hoptrace.runtime import Runtime
from hoptrace.stage_runner import CeleryOptions
from hoptrace.view.critical_path import critical_path
from hoptrace.view.critical_view import critical_path_table
from hoptrace.view.queries import StageStats
from hoptrace.view.receiver import OtlpReceiver
from hoptrace.view.sqlite_store import SqliteTraceStore
from hoptrace.view.tables import stage_table
from hoptrace.view.tree import trace_tree
from hoptrace.worker import commands, stop_processes

ORDERS = "hoptrace.examples.orders:pipeline"
STAGES = "validate → charge → ship → notify"
FINAL_STAGE = "notify"
SPANS_PER_JOB = 8
WORKER_LOG = "demo-workers.log"
WORKER_STOP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DemoResult:
    """How the demo ended: jobs that reached the last stage, and where the others are stuck."""

    published: int
    completed: int
    stuck_stage: str | None
    seconds: float


def _demo_env(settings: Settings, receiver: OtlpReceiver, namespace: str) -> dict[str, str]:
    return {
        "HOPTRACE_NAMESPACE": namespace,
        "HOPTRACE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HOPTRACE_REDIS_URL": settings.redis_url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }


def _pipeline_stats(pipeline: Pipeline, store: SqliteTraceStore, window_s: float) -> list[StageStats]:
    """This run's per-stage statistics, in pipeline order."""
    order = [stage.name for stage in pipeline]
    stats = [stat for stat in store.stage_stats(window_s) if stat.pipeline == pipeline.name and stat.stage in order]
    return sorted(stats, key=lambda stat: order.index(stat.stage))


def stuck_stage(pipeline: Pipeline, stats: list[StageStats], jobs: int) -> str | None:
    """The first stage, in pipeline order, that processed fewer than JOBS messages."""
    processed = {stat.stage: stat.messages for stat in stats}
    return next((stage.name for stage in pipeline if processed.get(stage.name, 0) < jobs), None)


def _wait(done: Callable[[], bool], timeout_s: float, give_up: Callable[[], bool] = lambda: False) -> bool:
    """Poll DONE until it holds (True), or TIMEOUT_S passes or GIVE_UP holds (False)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if give_up() or time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def _kafka_topics(pipeline: Pipeline) -> list[str]:
    return [t for s in pipeline if isinstance(s.transport, KafkaTransport) for t in (s.transport.topic, s.transport.topic + ".dead-letter")]


def _create_topics(settings: Settings, pipeline: Pipeline) -> None:
    """Create the run's topics up front, so consumers are assigned partitions before the first job."""
    create_topics(settings, _kafka_topics(pipeline), "hoptrace-demo")


def _ready(state_dir: Path, pipeline: Pipeline) -> bool:
    """True once every stage's health file under STATE_DIR says ready (a Kafka stage has partitions, the Celery worker consumes)."""
    return all((health := read_health(state_dir, stage.name)) is not None and health[0] for stage in pipeline)


def _cleanup(settings: Settings, pipeline: Pipeline, namespace: str, health: Path) -> None:
    """Delete the demo run's topics, Redis keys and health files."""
    shutil.rmtree(health, ignore_errors=True)
    delete_topics(settings, _kafka_topics(pipeline), "hoptrace-demo")
    delete_keys(settings.redis_url, namespace)


def run_demo(settings: Settings, store_path: Path, jobs: int, timeout_s: float, console: Console) -> DemoResult:
    """Run the demo end to end and print what it saw; the caller starts the services first."""
    namespace = f"demo{uuid.uuid4().hex[:6]}."
    pipeline = load_pipeline(ORDERS, namespace)
    store = SqliteTraceStore(store_path)
    started = time.monotonic()
    with OtlpReceiver(store) as receiver:
        env = _demo_env(settings, receiver, namespace)
        os.environ.update(env)  # the publisher below exports to the same receiver
        run_settings = Settings(namespace=namespace)
        log = settings.state_dir / WORKER_LOG
        health = settings.state_dir / "demo" / namespace.rstrip(".")  # this run's health files only: none left by another run
        log.parent.mkdir(parents=True, exist_ok=True)
        _create_topics(settings, pipeline)
        # One process per group, not a supervisor: a worker that dies leaves the others running,
        # so the jobs pile up at its stage and the report can name it.
        with log.open("wb") as out:
            workers = [
                subprocess.Popen(
                    [sys.executable, "-m", *line], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env, "HOPTRACE_STATE_DIR": str(health)}
                )
                for line in commands(ORDERS, list(pipeline), CeleryOptions(), monitor=True)
            ]
        try:
            with console.status("starting the workers of examples/orders…"):
                _wait(lambda: _ready(health, pipeline), READY_TIMEOUT_S, give_up=lambda: any(w.poll() is not None for w in workers))
            console.print(f"workers of examples/orders running (log: {log}); namespace {namespace}", highlight=False)
            publisher = Runtime(pipeline, run_settings, "publisher", celery_app(pipeline, run_settings))
            first = pipeline[next(iter(pipeline)).name]
            trace_ids = []
            try:
                for payload in track(job_payloads({"order_id": "order-{n}"}, jobs), total=jobs, description="publishing jobs", console=console):
                    trace_ids.append(publish_job(publisher.publisher, first, payload, {"tenant": "demo"}).trace_id)
                publisher.publisher.confirm(30.0)
            finally:
                publisher.shutdown()
            with list_lengths(settings.redis_url) as length, console.status(f"waiting for {jobs} jobs to reach {FINAL_STAGE}…"):
                reached = _wait(lambda: length(outbox_key(run_settings)) >= jobs, timeout_s)

                def settled() -> bool:  # the spans of the last hops and the gauges' next points may still be on their way
                    stats = _pipeline_stats(pipeline, store, time.monotonic() - started)
                    return stuck_stage(pipeline, stats, jobs) is None and all(stat.depth == 0 for stat in stats)  # None: no point yet

                _wait(settled, SETTLE_TIMEOUT_S if reached else 2)
                completed = length(outbox_key(run_settings))
        finally:
            stop_processes(workers, WORKER_STOP_TIMEOUT_S)
        elapsed = time.monotonic() - started
        stats = _pipeline_stats(pipeline, store, elapsed)
    _print_report(console, store, trace_ids, stats)
    _cleanup(settings, pipeline, namespace, health)
    stuck = None if completed >= jobs else stuck_stage(pipeline, stats, jobs) or FINAL_STAGE
    return DemoResult(jobs, completed, stuck, elapsed)


def _print_report(console: Console, store: SqliteTraceStore, trace_ids: list[str], stats: list[StageStats]) -> None:
    complete = [spans for trace_id in trace_ids if len(spans := store.trace(trace_id)) == SPANS_PER_JOB]
    if complete:  # the slowest whole job, and where its time went
        spans = max(complete, key=lambda spans: max(span.end_ns for span in spans) - min(span.start_ns for span in spans))
        console.print(trace_tree(spans))
        console.print(critical_path_table(critical_path(spans)))
    console.print(stage_table(stats))


def main(jobs: int, timeout_s: float, db: Path | None, keep_services: bool) -> int:
    """``hoptrace demo``: start the services that are down, run the demo, stop what it started (unless KEEP_SERVICES)."""
    settings = Settings()
    were_up = {item.name for item in services.status(settings) if item.healthy}
    services.print_run("up")
    try:
        result = run_demo(settings, db or default_store_path(settings), jobs, timeout_s, stdout())
    finally:
        started = tuple(name for name in services.SERVICE_NAMES if name not in were_up)
        if started and not keep_services:
            services.print_run("down", started)
    if result.stuck_stage is not None:
        raise CommandError(
            f"{result.published - result.completed} of {result.published} jobs are stuck at stage {result.stuck_stage!r}"
            f" after {timeout_s:.0f} s: its worker is not consuming (see {settings.state_dir / WORKER_LOG})"
        )
    done = f"{result.completed} of {result.published} jobs went {STAGES} in {result.seconds:.1f} s."
    stdout().print(f"{done} Look closer: hoptrace traces, hoptrace trace TRACE_ID", highlight=False)
    return 0
