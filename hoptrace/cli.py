"""The ``hoptrace`` command: parse, import, run. Every command's work lives in a module of its own."""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from hoptrace import demo as demos
from hoptrace import monitor as depth
from hoptrace import publish as publishing
from hoptrace import services as local_services
from hoptrace import watch as watching
from hoptrace import worker as workers
from hoptrace.loader import LoadError, load_pipeline
from hoptrace.pipeline import telemetry
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import Pipeline, PipelineError
from hoptrace.producers.publisher import PublishFailed
from hoptrace.runtime import Runtime, celery_app
from hoptrace.view.formatting import trace_json
from hoptrace.view.jaeger import JaegerError
from hoptrace.view.receiver import OtlpReceiver
from hoptrace.view.sqlite_store import SqliteTraceStore
from hoptrace.view.tables import traces_table
from hoptrace.view.tree import trace_tree

app = typer.Typer(help="See inside pipelines that hop across Kafka topics and Celery queues.", no_args_is_help=True)
services_app = typer.Typer(help="Local Redis and Apache Kafka, no Docker needed.", no_args_is_help=True)
app.add_typer(services_app, name="services")
console = Console()
err_console = Console(stderr=True)


class Service(str, Enum):
    """A local service managed by ``hoptrace services``."""

    redis = "redis"
    kafka = "kafka"


def _fail(error: object, code: int = 1) -> NoReturn:
    """Print ERROR (which says what was wrong and what to do) in red and exit with CODE."""
    console.print(f"[red]{error}[/red]", highlight=False)
    raise typer.Exit(code)


def _chosen(names: list[Service] | None) -> tuple[str, ...]:
    return tuple(name.value for name in names) if names else local_services.SERVICE_NAMES


def _run_services(action: str, names: list[Service] | None) -> None:
    try:
        console.print(local_services.run(action, Settings(), _chosen(names)), highlight=False)  # type: ignore[arg-type]
    except local_services.ServiceError as error:
        _fail(error, 1)


@services_app.command("up")
def services_up(names: list[Service] = typer.Argument(None, help="Services to start (default: all).")) -> None:
    """Install when missing, then start local Redis and Kafka. Starting twice is a no-op."""
    _run_services("up", names)


@services_app.command("down")
def services_down(names: list[Service] = typer.Argument(None, help="Services to stop (default: all).")) -> None:
    """Stop what ``hoptrace services up`` started; services it found running are left alone."""
    _run_services("down", names)


@services_app.command("status")
def services_status() -> None:
    """Show each service's address, pid and health (Kafka: a real metadata request)."""
    table = Table("service", "address", "pid", "health", "detail")
    found = local_services.status(Settings())
    for item in found:
        health = "[green]healthy[/green]" if item.healthy else "[red]down[/red]"
        pid = str(item.pid) if item.pid is not None else "not started by hoptrace"
        table.add_row(item.name, item.address, pid, health, item.detail)
    console.print(table)
    if not all(item.healthy for item in found):
        raise typer.Exit(1)


@app.command()
def demo(
    jobs: int = typer.Option(200, "--jobs", "-n", min=1, help="Jobs to publish."),
    timeout: float = typer.Option(90.0, "--timeout", min=1, help="Seconds to wait for every job to reach the last stage."),
    db: Path = typer.Option(None, "--db", help="Trace store file (default: .hoptrace/traces.sqlite)."),
    keep_services: bool = typer.Option(False, "--keep-services", help="Leave the services it started running."),
) -> None:
    """The whole journey: services, receiver, workers of examples/orders, N jobs, one trace tree and the stage table."""
    settings = Settings()
    were_up = {item.name for item in local_services.status(settings) if item.healthy}
    _run_services("up", None)
    try:
        result = demos.run_demo(settings, db or watching.default_store_path(settings), jobs, timeout, console)
    finally:
        started = tuple(name for name in local_services.SERVICE_NAMES if name not in were_up)
        if started and not keep_services:
            _run_services("down", [Service(name) for name in started])
    if result.stuck_stage is not None:
        console.print(
            f"[red]{result.published - result.completed} of {result.published} jobs are stuck at stage {result.stuck_stage!r}"
            f" after {timeout:.0f} s: its worker is not consuming (see .hoptrace/demo-workers.log)[/red]",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print(
        f"{result.completed} of {result.published} jobs went validate → charge → ship → notify in {result.seconds:.1f} s."
        " Look closer: hoptrace traces, hoptrace trace TRACE_ID",
        highlight=False,
    )


@app.command()
def watch(
    grpc_port: int = typer.Option(4317, "--grpc-port", help="OTLP/gRPC port to receive on."),
    http_port: int = typer.Option(4318, "--http-port", help="OTLP/HTTP port to receive on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for other machines)."),
    db: Path = typer.Option(None, "--db", help="Trace store file (default: .hoptrace/traces.sqlite)."),
    jobs: int = typer.Option(3, "--jobs", min=0, help="Latest jobs shown as trees."),
    window: float = typer.Option(60.0, "--window", min=1, help="Seconds of history in the stage table."),
    refresh: float = typer.Option(1.0, "--refresh", min=0.1, help="Seconds between redraws."),
) -> None:
    """Receive OTLP from workers into the embedded store and show the latest jobs and every stage, live."""
    store = SqliteTraceStore(db or watching.default_store_path(Settings()))
    receiver = OtlpReceiver(store, host, grpc_port, http_port)
    try:
        watching.watch(store, receiver, console, refresh, jobs, window)
    except (RuntimeError, OSError) as error:
        console.print(
            f"[red]cannot listen on {host}:{grpc_port}/{http_port} ({error}); is another receiver running? Use --grpc-port/--http-port[/red]"
        )
        raise typer.Exit(1) from error


@app.command()
def traces(
    last: int = typer.Option(20, "--last", min=1, help="How many traces."),
    stage: str = typer.Option(None, "--stage", help="Only traces through this stage."),
    errors: bool = typer.Option(False, "--errors", help="Only traces with a failed span."),
    db: Path = typer.Option(None, "--db", help="Trace store file (default: .hoptrace/traces.sqlite)."),
    jaeger: str = typer.Option(None, "--jaeger", help="Read from a Jaeger query service instead, e.g. http://localhost:16686."),
) -> None:
    """List stored traces, newest first."""
    source = watching.open_source(Settings(), db, jaeger)
    try:
        summaries = source.recent_traces(last if stage is None and not errors else max(last * 10, 200))
    except JaegerError as error:
        _fail(error, 1)
    console.print(traces_table(watching.filtered(summaries, stage, errors)[:last], width=console.width))


@app.command()
def trace(
    trace_id: str = typer.Argument(..., help="32 hex digits, as printed by publish, traces or demo."),
    as_json: bool = typer.Option(False, "--json", help="Print the spans as JSON."),
    db: Path = typer.Option(None, "--db", help="Trace store file (default: .hoptrace/traces.sqlite)."),
    jaeger: str = typer.Option(None, "--jaeger", help="Read from a Jaeger query service instead."),
) -> None:
    """Print one trace as a tree across queues (or as JSON)."""
    source = watching.open_source(Settings(), db, jaeger)
    try:
        spans = source.trace(trace_id.lower())
    except JaegerError as error:
        _fail(error, 1)
    if not spans:
        console.print(f"[red]no trace {trace_id} in the store; list what there is with: hoptrace traces[/red]", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(trace_json(spans), indent=2))
    else:
        console.print(trace_tree(spans))


CONFIRM_EVERY = 500
"""``publish`` waits for the broker's acknowledgements after this many jobs (and at the end)."""
CONFIRM_TIMEOUT_S = 30.0


def _configure_logging() -> None:
    telemetry.install_log_correlation()
    logging.basicConfig(level=logging.INFO, format=telemetry.LOG_FORMAT)
    logging.getLogger("kafka").setLevel(logging.WARNING)


def _load(spec: str, settings: Settings) -> Pipeline:
    try:
        return load_pipeline(spec, settings.namespace)
    except (LoadError, PipelineError) as error:
        _fail(error, 2)


@app.command()
def worker(
    spec: str = typer.Argument(..., help="The pipeline, as MODULE:ATTR (e.g. hoptrace.examples.orders:pipeline)."),
    stage: list[str] = typer.Option(None, "--stage", "-s", help="Stage to run (repeatable; default: all)."),
    concurrency: int = typer.Option(2, "--concurrency", "-c", min=1, help="Prefork processes of the Celery worker."),
    max_tasks_per_child: int = typer.Option(None, "--max-tasks-per-child", min=1, help="Replace a Celery pool process after this many tasks."),
    monitor: bool = typer.Option(True, "--monitor/--no-monitor", help="Also report queue depth and consumer lag of these stages."),
) -> None:
    """Run the workers of the pipeline's stages until stopped (SIGTERM/SIGINT)."""
    _configure_logging()
    settings = Settings()
    pipeline = _load(spec, settings)
    try:
        chosen = [pipeline[name] for name in stage] if stage else list(pipeline)
    except PipelineError as error:
        _fail(error, 2)
    raise typer.Exit(workers.run(spec, pipeline, chosen, settings, workers.CeleryOptions(concurrency, max_tasks_per_child), monitor))


@app.command()
def monitor(
    spec: str = typer.Argument(..., help="The pipeline, as MODULE:ATTR."),
    stage: list[str] = typer.Option(None, "--stage", "-s", help="Stage to watch (repeatable; default: all)."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between broker reads."),
) -> None:
    """Report queue depth (Celery) and consumer lag (Kafka) of the stages until stopped, whether or not workers run."""
    _configure_logging()
    settings = Settings()
    pipeline = _load(spec, settings)
    try:
        chosen = pipeline.only(stage) if stage else pipeline
    except PipelineError as error:
        _fail(error, 2)
    depth.run_monitor(chosen, settings, interval)


@app.command()
def publish(
    spec: str = typer.Argument(..., help="The pipeline, as MODULE:ATTR."),
    stage: str = typer.Argument(..., help="The stage that receives the jobs."),
    count: int = typer.Option(1, "--count", "-n", min=1, help="How many jobs to start."),
    payload: str = typer.Option(None, "--payload", help='JSON object; "{n}" in a string value becomes the job number.'),
    payload_file: Path = typer.Option(None, "--payload-file", exists=True, dir_okay=False, help="Read the JSON payload from a file."),
    baggage: str = typer.Option("", "--baggage", help="Baggage for every job: key=value,key2=value2."),
) -> None:
    """Publish COUNT jobs to STAGE, each starting its own trace; print their trace and job ids."""
    settings = Settings()
    pipeline = _load(spec, settings)
    try:
        target = pipeline[stage]
        members = publishing.parse_baggage(baggage)
        template = publishing.load_payload(payload, payload_file)
    except (PipelineError, publishing.PayloadError) as error:
        _fail(error, 2)
    runtime = Runtime(pipeline, settings, "publisher", celery_app(pipeline, settings))
    published = []
    try:
        jobs = publishing.job_payloads(template, count)
        for job in track(jobs, total=count, description=f"publishing to {stage}", console=err_console, transient=True):
            published.append(publishing.publish_job(runtime.publisher, target, job, members))
            if len(published) % CONFIRM_EVERY == 0:
                runtime.publisher.confirm(CONFIRM_TIMEOUT_S)
        runtime.publisher.confirm(CONFIRM_TIMEOUT_S)
    except PublishFailed as error:
        err_console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(1) from error
    finally:
        runtime.shutdown()
    for item in published:
        console.print(f"trace {item.trace_id}  job {item.job_id}", highlight=False)
    err_console.print(f"published {len(published)} job(s) to stage {stage!r} ({target.transport.system} {target.transport.destination})")


def main() -> None:
    """Entry point of the ``hoptrace`` console script."""
    app()
