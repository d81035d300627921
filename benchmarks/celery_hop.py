"""Celery hop throughput: N tasks through the Redis broker and a real prefork worker (concurrency 2).

Each variant runs between two runs of the baseline, in rounds (``benchmarks.schedule``). Each
measured run has its own queue (a fresh ``HOPTRACE_NAMESPACE``). The worker and
the publisher start together; once the worker printed ``ready.``, the publisher is told to go;
the run ends when the task
bodies counted N tasks in Redis (an ``INCR`` per task; the task that reaches N stores the
time). Rate = N / (that time - the first publish).

Variants (worker / publisher):

* ``none``: ``celery -A benchmarks.celery_clients:app worker`` (hoptrace's own app settings,
  a plain task calling the stage handler) / ``app.send_task``.
* ``stock``: the same with the stock ``CeleryInstrumentor`` in every pool process and in the
  publisher (tracing only, OTLP gRPC to the discarding receiver).
* ``hoptrace-100``: ``hoptrace worker benchmarks.pipelines:celery_hop --no-monitor`` (a
  ``clients.celery.worker.register``-ed stage on the same app settings) / ``Runtime.publisher``;
  traces and metrics to the discarding receiver, 100 % sampled.
* ``hoptrace-1``: the same at 1 % (``parentbased_traceidratio``, 0.01).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.completion import DONE_ENV, EXPECTED_ENV, GO_ENV, RedisCompletion
from benchmarks.discard import Collector, Collectors
from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.pipelines import CELERY_SPEC, STAGE
from benchmarks.processes import Child, cpu_seconds, wait_until
from benchmarks.report import Scenario
from benchmarks.schedule import bracketed
from benchmarks.stock import CELERY_TRACING_ENV
from hoptrace.loader import load_pipeline
from hoptrace.pipeline.stages import CeleryTransport
from hoptrace.stage_runner import CeleryOptions

SECTION = "celery"
CPU_SECTION = "celery-cpu"
CONCURRENCY = 2


@dataclass(frozen=True)
class CeleryVariant:
    """One way of publishing and running the task."""

    key: str
    label: str
    tracing: str
    """``none``, ``stock`` or ``hoptrace``."""
    collector: Collector = "none"
    sampling: float = 1.0
    description: str = ""


VARIANTS: tuple[CeleryVariant, ...] = (
    CeleryVariant(
        "none", "none (plain task)", "none",
        description="celery worker of hoptrace's app settings with a plain task (Redis INCR) / app.send_task; no OpenTelemetry",
    ),
    CeleryVariant(
        "stock", "stock CeleryInstrumentor, tracing only", "stock", "up",
        description="as none, with the stock CeleryInstrumentor in every pool process (after fork) and in the publisher; "
        "spans over OTLP gRPC to the discarding receiver; no metrics",
    ),
    CeleryVariant(
        "hoptrace-100", "hoptrace 100% sampled", "hoptrace", "up",
        description="real `hoptrace worker benchmarks.pipelines:celery_hop --no-monitor` (clients.celery.worker.register) / Runtime.publisher "
        "(PipelinePublisher + CelerySender); traces and metrics to the discarding receiver",
    ),
    CeleryVariant(
        "hoptrace-1", "hoptrace 1% sampled", "hoptrace", "up", 0.01,
        description="as hoptrace-100 with parentbased_traceidratio 0.01 in the worker and the publisher",
    ),
)  # fmt: skip
BY_KEY = {variant.key: variant for variant in VARIANTS}


@dataclass(frozen=True)
class CeleryResult:
    """One measured run of a variant."""

    variant: str
    tasks: int
    seconds: float
    """First publish to the last task counted."""
    publisher_seconds: float
    worker_cpu_s: float
    """CPU time of the worker and its pool processes from the publisher's start to the last task counted."""
    publisher_cpu_s: float
    """CPU time of the publisher process from its first publish to its last."""

    @property
    def rate(self) -> float:
        """Tasks per second, end to end."""
        return self.tasks / self.seconds

    def cpu_us(self, role: str) -> float:
        """CPU µs per task of the ``worker`` (with its pool) or the ``publisher``."""
        return float(getattr(self, f"{role}_cpu_s")) / self.tasks * 1e6


def _worker_args(variant: CeleryVariant, queue: str, hostname: str) -> list[str]:
    options = CeleryOptions(concurrency=CONCURRENCY)
    if variant.tracing == "hoptrace":
        return ["python", "-m", "hoptrace", "worker", CELERY_SPEC, "--no-monitor", *options.argv()]
    celery = ["python", "-m", "celery", "-A", "benchmarks.celery_clients:app", "worker", "--queues", queue, "--pool", "prefork"]
    return [*celery, *options.argv(), "--without-gossip", "--without-mingle", "--loglevel", "INFO", "--hostname", hostname]


@dataclass(frozen=True)
class Drive:
    """What ``drive`` waits for: TASKS counted at the Redis key COUNTER, after the GO file; the publisher's report in PUBLISHED."""

    tasks: int
    counter: str
    go: Path
    published: Path
    key: str


def drive(run: Run, label: str, worker_args: list[str], publisher_args: list[str], env: dict[str, str], what: Drive) -> tuple[float, float, Any]:
    """Start a Celery worker and a publisher, let the publisher go once the worker is ready, wait for the tasks to be counted.

    Gives the time they were (``time.time``), the worker's CPU seconds meanwhile (with its pool),
    and the publisher's JSON report; every child is stopped and reaped, whatever happens.
    """
    children: list[Child] = []
    try:
        children.append(worker := run.start(f"{label}-worker", worker_args, env))
        children.append(publisher := run.start(f"{label}-publisher", publisher_args, env))
        worker.wait_for_output(" ready.", 60)
        worker_cpu = cpu_seconds(worker.pid)
        what.go.touch()
        finished = wait_until(
            lambda: RedisCompletion.read(run.redis, what.counter), max(60.0, what.tasks / 50), f"{what.key}: {what.tasks} tasks", [worker, publisher]
        )
        worker_cpu = cpu_seconds(worker.pid) - worker_cpu
        worker.terminate()
        publisher.wait(60)
        publisher.check()
        sent = json.loads(what.published.read_text())
        worker.wait(30)
    finally:
        for child in children:
            child.stop()
            child.reap_group()
    return finished, worker_cpu, sent


def run_hop(run: Run, collectors: Collectors, variant: CeleryVariant, tasks: int, label: str) -> CeleryResult:
    """Publish and run TASKS tasks as VARIANT does, on a queue of their own; the measured result."""
    namespace = run.namespace(label)
    transport = load_pipeline(CELERY_SPEC, namespace)[STAGE].transport
    assert isinstance(transport, CeleryTransport)
    counter = f"{namespace}count"
    published = run.file(f"{label}.published.json")
    go = run.file(f"{label}.go")
    extra = {
        **collectors.env(variant.collector, variant.sampling),
        EXPECTED_ENV: str(tasks),
        DONE_ENV: counter,
        GO_ENV: str(go),
        CELERY_TRACING_ENV: variant.tracing,
    }
    env = run.env(namespace, extra)
    publisher_args = ["python", "-m", "benchmarks.celery_clients", "--tracing", variant.tracing, "--count", str(tasks), "--result", str(published)]
    worker_args = _worker_args(variant, transport.queue, f"bench-{run.id}-{label}@%h")
    finished, worker_cpu, sent = drive(run, label, worker_args, publisher_args, env, Drive(tasks, counter, go, published, variant.key))
    return CeleryResult(variant.key, tasks, finished - sent["first"], sent["last"] - sent["first"], worker_cpu, sent["cpu_s"])


def measure(run: Run, collectors: Collectors, mode: Mode, progress: Callable[[str], None]) -> list[Scenario]:
    """Bracketed rounds (none, v1, none, v2, ..., none), after a warm-up in full mode; a scenario per variant (task/s), CPU per task."""
    if mode.warm_up_celery:
        warm_up = run_hop(run, collectors, BY_KEY["none"], mode.celery_tasks, "c-warm-up")
        progress(f"celery warm-up (not counted): {warm_up.rate:,.0f} task/s")

    def one(key: str, label: str) -> CeleryResult:
        result = run_hop(run, collectors, BY_KEY[key], mode.celery_tasks, f"c{label}")
        progress(f"celery {label}: {BY_KEY[key].label}: {result.rate:,.0f} task/s ({result.seconds:.2f} s)")
        return result

    rounds = bracketed("none", [variant.key for variant in VARIANTS[1:]], mode.celery_rounds, one)
    results = rounds.results
    throughput = [
        Scenario(
            SECTION,
            variant.key,
            variant.label,
            "task/s",
            [result.rate for result in results[variant.key]],
            None if variant.key == "none" else "none",
            variant.description,
            details={
                "paired_ratios": rounds.ratios(variant.key, lambda result: result.rate),
                "tasks": mode.celery_tasks,
                "concurrency": CONCURRENCY,
                "seconds": [result.seconds for result in results[variant.key]],
                "publisher_seconds": [result.publisher_seconds for result in results[variant.key]],
                "worker_cpu_us_per_task": [result.cpu_us("worker") for result in results[variant.key]],
                "publisher_cpu_us_per_task": [result.cpu_us("publisher") for result in results[variant.key]],
                "tracing": variant.tracing,
                "collector": variant.collector,
                "sampling": variant.sampling,
            },
        )
        for variant in VARIANTS
    ]
    cpu = [
        Scenario(
            CPU_SECTION,
            f"{variant.key} {role}",
            f"{variant.label}: {role} CPU per task",
            "µs",
            [result.cpu_us(role) for result in results[variant.key]],
            None if variant.key == "none" else f"none {role}",
            "user + system CPU of the Celery worker and its pool processes" if role == "worker" else "user + system CPU of the publisher process",
            details={"paired_ratios": rounds.ratios(variant.key, lambda result, role=role: result.cpu_us(role))},
        )
        for variant in VARIANTS
        for role in ("worker", "publisher")
    ]
    return throughput + cpu
