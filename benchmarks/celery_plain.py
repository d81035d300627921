"""The zero-code Celery app: an unchanged app's tasks through Redis and a real prefork worker, plain, stock-traced and under hoptrace.

The app is ``benchmarks.celery_plain_app`` (a user's module that never imports OpenTelemetry or
hoptrace, one trivial task); the worker is ``celery -A benchmarks.celery_plain_app worker --pool
prefork --concurrency 2 -Q <queue>``, the publisher ``benchmarks.celery_plain_publisher``
(``work.delay(payload)`` N times), both run as the variant says (``benchmarks.zerocode``):
``none``, ``stock-100``, ``hoptrace-100``, ``hoptrace-1``. Each run has its own queue (a fresh
namespace); the worker and the publisher start together, the publisher is told to go once the
worker printed ``ready.``, and the run ends when the tasks counted N in Redis (as in
``benchmarks.celery_hop``). Each variant runs between two ``none`` runs, in rounds whose order
rotates (``benchmarks.schedule``).

Rows: ``celery-app`` (task/s, first publish to the last task done; the targets' rows) and
``celery-app-cpu`` (CPU µs per task of the worker with its pool processes, and of the publisher).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.celery_hop import CONCURRENCY, CeleryResult, Drive, drive
from benchmarks.celery_plain_app import BROKER_ENV, QUEUE_ENV
from benchmarks.completion import DONE_ENV, EXPECTED_ENV, GO_ENV
from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.report import Scenario
from benchmarks.schedule import Rounds, bracketed
from benchmarks.zerocode import BY_KEY, NONE, SETTINGS, ZeroCodeVariant

SECTION = "celery-app"
CPU_SECTION = "celery-app-cpu"
KEYS = ("none", "stock-100", "hoptrace-100", "hoptrace-1")
CELERY = str(Path(sys.executable).with_name("celery"))
"""The venv's ``celery`` command."""
APP = "benchmarks.celery_plain_app"
ROLES = ("worker", "publisher")
HOW = {
    "none": "celery -A benchmarks.celery_plain_app worker (prefork, concurrency 2) / work.delay in a plain process; no OpenTelemetry",
    "stock": "opentelemetry-instrument celery ... worker / publisher, stock CeleryInstrumentor (hoptrace's instrumentors disabled)",
    "hoptrace": "opentelemetry-instrument celery ... worker / publisher, hoptrace's drop-in HoptraceCeleryInstrumentor (as installed)",
}


def _worker_args(queue: str, hostname: str) -> list[str]:
    worker = [CELERY, "-A", APP, "worker", "--pool", "prefork", "--concurrency", str(CONCURRENCY), "-Q", queue]
    return [*worker, "--without-gossip", "--without-mingle", "--loglevel", "INFO", "--hostname", hostname]


def run_app(run: Run, variant: ZeroCodeVariant, tasks: int, label: str) -> CeleryResult:
    """Publish TASKS tasks of the plain app to a queue of their own and run them in a real worker, both as VARIANT runs them."""
    namespace = run.namespace(label)
    queue, counter = f"{namespace}plain", f"{namespace}count"
    published, go = run.file(f"{label}.published.json"), run.file(f"{label}.go")
    extra = {BROKER_ENV: run.settings.redis_url, QUEUE_ENV: queue, EXPECTED_ENV: str(tasks), DONE_ENV: counter, GO_ENV: str(go)}
    env = variant.env(run, namespace, extra)
    worker_args = variant.command(_worker_args(queue, f"bench-{run.id}-{label}@%h"))
    publisher_args = variant.command(["python", "-m", "benchmarks.celery_plain_publisher", "--count", str(tasks), "--result", str(published)])
    finished, worker_cpu, sent = drive(run, label, worker_args, publisher_args, env, Drive(tasks, counter, go, published, variant.key))
    variant.check(sent["instrumentation"], "publisher")
    return CeleryResult(variant.key, tasks, finished - sent["first"], sent["last"] - sent["first"], worker_cpu, sent["cpu_s"])


def measure(run: Run, mode: Mode, progress: Callable[[str], None]) -> list[Scenario]:
    """Bracketed rounds (none, v1, none, v2, ..., none), after a warm-up in full mode; task/s per variant, CPU per task."""
    if mode.warm_up_celery:
        warm_up = run_app(run, NONE, mode.celery_app_tasks, "a-warm-up")
        progress(f"celery-app warm-up (not counted): {warm_up.rate:,.0f} task/s")

    def one(key: str, label: str) -> CeleryResult:
        result = run_app(run, BY_KEY[key], mode.celery_app_tasks, f"a{label}")
        worker = result.cpu_us("worker")
        progress(f"celery-app {label}: {BY_KEY[key].label}: {result.rate:,.0f} task/s ({result.seconds:.2f} s), worker {worker:.0f} µs/task CPU")
        return result

    rounds = bracketed("none", KEYS[1:], mode.celery_app_rounds, one)
    return _throughput_rows(rounds, mode.celery_app_tasks) + _cpu_rows(rounds)


def _description(variant: ZeroCodeVariant) -> str:
    settings = "" if variant.instrumentation == "none" else f"; {SETTINGS}, sampler arg {variant.sampling:g}"
    return f"{HOW[variant.instrumentation]}{settings}"


def _throughput_rows(rounds: Rounds[CeleryResult], tasks: int) -> list[Scenario]:
    """A ``celery-app`` row per variant: task/s, paired with the ``none`` runs around it."""
    return [
        Scenario(
            SECTION,
            key,
            f"{BY_KEY[key].label}: plain Celery app",
            "task/s",
            [result.rate for result in rounds.results[key]],
            None if key == "none" else "none",
            _description(BY_KEY[key]),
            details={
                "paired_ratios": rounds.ratios(key, lambda result: result.rate),
                "tasks": tasks,
                "concurrency": CONCURRENCY,
                "seconds": [result.seconds for result in rounds.results[key]],
                "publisher_seconds": [result.publisher_seconds for result in rounds.results[key]],
                "instrumentation": BY_KEY[key].instrumentation,
                "sampling": BY_KEY[key].sampling,
            },
        )
        for key in KEYS
    ]


def _cpu_rows(rounds: Rounds[CeleryResult]) -> list[Scenario]:
    """``celery-app-cpu`` rows per variant: CPU µs per task of the worker (with its pool) and of the publisher."""
    return [
        Scenario(
            CPU_SECTION,
            f"{key} {role}",
            f"{BY_KEY[key].label}: {role} CPU per task",
            "µs",
            [result.cpu_us(role) for result in rounds.results[key]],
            None if key == "none" else f"none {role}",
            "user + system CPU of the Celery worker and its pool processes, from the go to the last task done"
            if role == "worker"
            else "user + system CPU of the publisher process from its first publish to its last",
            details={"paired_ratios": rounds.ratios(key, lambda result, role=role: result.cpu_us(role))},
        )
        for key in KEYS
        for role in ROLES
    ]
