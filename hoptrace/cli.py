"""The ``hoptrace`` command: parse, import, run. Every command's work lives in a module of its own."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from hoptrace import monitor as depth
from hoptrace import publish as publishing
from hoptrace import services as local_services
from hoptrace import smoke
from hoptrace import worker as workers
from hoptrace.loader import LoadError, load_pipeline
from hoptrace.runtime import Runtime, celery_app
from pipeline import telemetry
from pipeline.settings import Settings
from pipeline.stages import Pipeline, PipelineError
from producers.publisher import PublishFailed

app = typer.Typer(help="See inside pipelines that hop across Kafka topics and Celery queues.", no_args_is_help=True)
services_app = typer.Typer(help="Local Redis and Apache Kafka, no Docker needed.", no_args_is_help=True)
app.add_typer(services_app, name="services")
console = Console()
err_console = Console(stderr=True)


class Service(str, Enum):
    """A local service managed by ``hoptrace services``."""

    redis = "redis"
    kafka = "kafka"


def _chosen(names: list[Service] | None) -> tuple[str, ...]:
    return tuple(name.value for name in names) if names else local_services.SERVICE_NAMES


def _run_services(action: str, names: list[Service] | None) -> None:
    try:
        console.print(local_services.run(action, Settings(), _chosen(names)), highlight=False)  # type: ignore[arg-type]
    except local_services.ServiceError as error:
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(1) from error


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
def demo(messages: int = typer.Option(200, "--messages", min=1, help="Messages per hop.")) -> None:
    """Start the local services and run the smoke pipeline through them."""
    settings = Settings()
    _run_services("up", None)
    table = Table("transport", "destination", "sent", "received", "seconds", title="smoke pipeline")
    hops = [smoke.kafka_round_trip(settings, messages), smoke.redis_round_trip(settings, messages)]
    for hop in hops:
        table.add_row(hop.transport, hop.destination, str(hop.sent), str(hop.received), f"{hop.seconds:.2f}")
    console.print(table)
    if any(hop.received != hop.sent for hop in hops):
        console.print("[red]messages went missing[/red]")
        raise typer.Exit(1)


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
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from error


@app.command()
def worker(
    spec: str = typer.Argument(..., help="The pipeline, as MODULE:ATTR (e.g. examples.orders:pipeline)."),
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
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from error
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
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from error
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
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from error
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
