"""The ``hoptrace`` command: parse and dispatch, nothing else.

Each command's work lives in a module of its own, imported inside the command, so that
``hoptrace --help`` loads neither Celery, kafka-python, gRPC, SQLite nor the SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path

import typer
from pydantic import ValidationError

from hoptrace.errors import CommandError, setting_problems
from hoptrace.pipeline.settings import SecretsFolderMissing

# rich_markup_mode=None: plain click help, without importing rich's help formatter (~100 ms).
app = typer.Typer(
    help="See inside pipelines that hop across Kafka topics and Celery queues.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(
    help="Local Redis and Apache Kafka, and on request the observability stack (Collector, Jaeger, Prometheus); no Docker needed.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(services_app, name="services")

SPEC_HELP = "The pipeline, as MODULE:ATTR (e.g. hoptrace.examples.orders:pipeline)."
DB_HELP = "Trace store file (default: .hoptrace/traces.sqlite)."
STUCK_HELP = "Seconds without news after which a job still in flight is shown as stuck."
SERVICES_HELP = "redis, kafka, observability (Collector + Jaeger + Prometheus); default: redis kafka."


class Service(str, Enum):
    """A local service managed by ``hoptrace services``."""

    redis = "redis"
    kafka = "kafka"
    observability = "observability"
    """The OpenTelemetry Collector, Jaeger and Prometheus of deploy/local/observability.sh, together."""


def _run(work: Callable[[], int | None]) -> None:
    """Run a command's WORK; a ``CommandError`` is printed in red and becomes the exit status."""
    from hoptrace.output import print_error

    try:
        status = work()
    except CommandError as error:
        print_error(str(error))
        raise typer.Exit(error.exit_code) from error
    except ValidationError as error:  # a HOPTRACE_* setting that does not parse
        print_error(f"a HOPTRACE_ setting is not valid: {setting_problems(error)}")
        raise typer.Exit(2) from error
    except SecretsFolderMissing as error:
        print_error(str(error))
        raise typer.Exit(2) from error
    if status:
        raise typer.Exit(status)


def _services(names: list[Service] | None) -> tuple[str, ...] | None:
    return tuple(name.value for name in names) if names else None


@services_app.command("up")
def services_up(
    names: list[Service] = typer.Argument(None, help=SERVICES_HELP),
) -> None:
    """Install when missing (the observability stack is built from Go modules, ~10 min once), then start. Starting twice is a no-op."""
    from hoptrace import services

    _run(lambda: services.print_run("up", _services(names)))


@services_app.command("down")
def services_down(
    names: list[Service] = typer.Argument(None, help=SERVICES_HELP),
) -> None:
    """Stop what ``hoptrace services up`` started; services it found running are left alone."""
    from hoptrace import services

    _run(lambda: services.print_run("down", _services(names)))


@services_app.command("status")
def services_status(
    names: list[Service] = typer.Argument(None, help=SERVICES_HELP),
) -> None:
    """Show each service's address, pid and health (Kafka: a real metadata request; the observability stack: its health endpoints)."""
    from hoptrace import services

    _run(lambda: services.print_status(_services(names)))


@app.command()
def demo(
    jobs: int = typer.Option(200, "--jobs", "-n", min=1, help="Jobs to publish."),
    timeout: float = typer.Option(90.0, "--timeout", min=1, help="Seconds to wait for every job to reach the last stage."),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    keep_services: bool = typer.Option(False, "--keep-services", help="Leave the services it started running."),
) -> None:
    """The whole journey: services, receiver, workers of examples/orders, N jobs, one trace tree and the stage table."""
    from hoptrace import demo as demos

    _run(lambda: demos.main(jobs, timeout, db, keep_services))


@app.command()
def watch(
    grpc_port: int = typer.Option(4317, "--grpc-port", help="OTLP/gRPC port to receive on."),
    http_port: int = typer.Option(4318, "--http-port", help="OTLP/HTTP port to receive on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for other machines)."),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    jobs: int = typer.Option(3, "--jobs", min=0, help="Latest jobs shown as trees."),
    window: float = typer.Option(60.0, "--window", min=1, help="Seconds of history in the stage table."),
    refresh: float = typer.Option(1.0, "--refresh", min=0.1, help="Seconds between redraws."),
    jaeger: str = typer.Option(None, "--jaeger", help="Read traces from this Jaeger query service (e.g. http://localhost:16686); no receiver then."),
    prometheus: str = typer.Option(
        None, "--prometheus", help="Read the stage table from this Prometheus (e.g. http://localhost:9090); no receiver then."
    ),
) -> None:
    """Show the latest jobs and every stage, live: received here over OTLP, or read from a deployed Jaeger and Prometheus."""
    from hoptrace import watch as watching

    _run(lambda: watching.main(host, grpc_port, http_port, db, jobs, window, refresh, jaeger, prometheus))


@app.command()
def stages(
    window: float = typer.Option(60.0, "--window", min=1, help="Seconds of history."),
    pipeline: str = typer.Option(None, "--pipeline", help="Only this pipeline's stages."),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    prometheus: str = typer.Option(None, "--prometheus", help="Read from a Prometheus instead, e.g. http://localhost:9090."),
) -> None:
    """Print the per-stage table: messages, rate, handler percentiles, queue wait, errors, retries, depth or lag."""
    from hoptrace import reading

    _run(lambda: reading.print_stages(window, db, prometheus, pipeline))


@app.command()
def traces(
    last: int = typer.Option(None, "--last", min=1, help="How many of the newest traces (default 20)."),
    slowest: int = typer.Option(
        None,
        "--slowest",
        min=1,
        help="The N slowest traces (end-to-end time) instead, slowest first; not with --last. With --jaeger: of the newest 10*N"
        " per service in the last hour (100 to 500, never fewer than N), as Jaeger cannot sort by duration.",
    ),
    stage: str = typer.Option(None, "--stage", help="Only traces through this stage."),
    errors: bool = typer.Option(False, "--errors", help="Only traces with a failed span."),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    jaeger: str = typer.Option(None, "--jaeger", help="Read from a Jaeger query service instead, e.g. http://localhost:16686."),
    stuck_after: float = typer.Option(300.0, "--stuck-after", min=1, help=STUCK_HELP),
) -> None:
    """List stored traces, newest first (or slowest first), each with the slowest part of its critical path."""
    from hoptrace import reading

    _run(lambda: reading.print_traces(last, stage, errors, db, jaeger, stuck_after, slowest))


@app.command()
def trace(
    trace_id: str = typer.Argument(..., help="32 hex digits, as printed by publish, traces or demo."),
    as_json: bool = typer.Option(False, "--json", help="Print the spans as JSON."),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    jaeger: str = typer.Option(None, "--jaeger", help="Read from a Jaeger query service instead, e.g. http://localhost:16686."),
    stuck_after: float = typer.Option(300.0, "--stuck-after", min=1, help=STUCK_HELP),
) -> None:
    """Print one trace as a tree across queues (or as JSON)."""
    from hoptrace import reading

    _run(lambda: reading.print_trace(trace_id, as_json, db, jaeger, stuck_after))


@app.command()
def worker(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    stage: list[str] = typer.Option(None, "--stage", "-s", help="Stage to run (repeatable; default: all)."),
    concurrency: int = typer.Option(2, "--concurrency", "-c", min=1, help="Prefork processes of the Celery worker."),
    max_tasks_per_child: int = typer.Option(None, "--max-tasks-per-child", min=1, help="Replace a Celery pool process after this many tasks."),
    monitor: bool = typer.Option(True, "--monitor/--no-monitor", help="Also report queue depth and consumer lag of these stages."),
    exit_on_child_failure: bool = typer.Option(
        False, "--exit-on-child-failure", help="When one worker process exits, stop them all and exit 1 (default: restart it, with backoff)."
    ),
) -> None:
    """Run the workers of the pipeline's stages until stopped (SIGTERM/SIGINT); a worker process that dies is restarted."""
    from hoptrace import worker as workers
    from hoptrace.stage_runner import CeleryOptions

    options = CeleryOptions(concurrency, max_tasks_per_child)
    _run(lambda: workers.main(spec, stage or [], options, monitor, exit_on_child_failure))


@app.command()
def monitor(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    stage: list[str] = typer.Option(None, "--stage", "-s", help="Stage to watch (repeatable; default: all)."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between broker reads."),
) -> None:
    """Report queue depth (Celery) and consumer lag (Kafka) of the stages until stopped, whether or not workers run."""
    from hoptrace import monitor as monitoring

    _run(lambda: monitoring.main(spec, stage or [], interval))


@app.command()
def publish(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    stage: str = typer.Argument(..., help="The stage that receives the jobs."),
    count: int = typer.Option(1, "--count", "-n", min=1, help="How many jobs to start."),
    payload: str = typer.Option(None, "--payload", help='JSON object; "{n}" in a string value becomes the job number.'),
    payload_file: Path = typer.Option(None, "--payload-file", exists=True, dir_okay=False, help="Read the JSON payload from a file."),
    baggage: str = typer.Option("", "--baggage", help="Baggage for every job: key=value,key2=value2."),
    linger: float = typer.Option(
        0.0, "--linger", min=0, help="Seconds to stay after publishing, so the flight recorder can hand over the publish spans of jobs that go wrong."
    ),
) -> None:
    """Publish COUNT jobs to STAGE, each starting its own trace; print their trace and job ids."""
    from hoptrace import publish as publishing

    _run(lambda: publishing.main(spec, stage, count, payload, payload_file, baggage, linger))


class ProbeKind(str, Enum):
    """What ``hoptrace probe`` checks."""

    ready = "ready"
    live = "live"


@app.command()
def probe(
    kind: ProbeKind = typer.Argument(..., help="ready: the worker can take messages; live: its loop is running."),
    stage: str = typer.Option(None, "--stage", help="The stage whose worker runs in this container."),
    monitor: bool = typer.Option(False, "--monitor", help="Probe the monitor instead."),
    max_age: float = typer.Option(30.0, "--max-age", min=1, help="Seconds since the last heartbeat after which the worker is not live."),
) -> None:
    """Probe a worker of this container from its health file (Kubernetes and Compose probes); exit 0 when it passes."""
    from hoptrace import probe as probes

    _run(lambda: probes.main(kind.value, stage, monitor, max_age))


def main() -> None:
    """Entry point of the ``hoptrace`` console script."""
    app()
