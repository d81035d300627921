"""Shutdown with the collector down: seconds from SIGTERM to exit of a real ``hoptrace worker``.

Each run starts ``hoptrace worker hoptrace.examples.orders:pipeline --stage validate --no-monitor`` in a
fresh namespace, its OTLP endpoint a loopback port that accepts TCP and never answers (a hung
collector), publishes some orders to it (the ``validate`` stage forwards each to the Celery
queue ``payments``), waits until the worker forwarded all of them, sends SIGTERM and times the
exit. The worker still holds unexported spans then (the batch processor exports every 5 s and
each export to the silent port waits for its timeout), so its bounded shutdown is what is
measured. The publisher exports nowhere (``OTEL_*_EXPORTER=none``): it is not measured.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.discard import Collectors
from benchmarks.harness import Run
from benchmarks.kafka_hop import producer_args
from benchmarks.modes import Mode
from benchmarks.processes import Child, wait_until
from benchmarks.report import Scenario
from hoptrace.loader import load_pipeline
from hoptrace.pipeline.stages import CeleryTransport, KafkaTransport

SECTION = "shutdown"
SPEC = "hoptrace.examples.orders:pipeline"
STAGE = "validate"
FORWARDS_TO = "charge"


def stop_once(run: Run, collectors: Collectors, messages: int, label: str, confirm_every: int) -> tuple[float, int]:
    """One worker run: process MESSAGES orders, then SIGTERM; (seconds to exit, exit status)."""
    namespace = run.namespace(label)
    pipeline = load_pipeline(SPEC, namespace)
    transport, forwarded = pipeline[STAGE].transport, pipeline[FORWARDS_TO].transport
    assert isinstance(transport, KafkaTransport) and isinstance(forwarded, CeleryTransport)
    topic = run.create_topic(transport.topic)
    group = run.track_group(transport.group)
    children: list[Child] = []
    try:
        worker_env = run.env(namespace, collectors.env("silent"))
        worker = run.start(f"{label}-worker", ["python", "-m", "hoptrace", "worker", SPEC, "--stage", STAGE, "--no-monitor"], worker_env)
        children.append(worker)
        run.wait_assigned(group, 60, [worker])
        published = run.file(f"{label}.published.json")
        publisher_env = run.env(namespace, collectors.env("none"))
        publisher = run.start(f"{label}-publisher", producer_args("hoptrace", SPEC, STAGE, messages, confirm_every, str(published)), publisher_env)
        children.append(publisher)
        publisher.wait(60)
        publisher.check()
        wait_until(lambda: run.redis.llen(forwarded.queue) >= messages, 60, f"{messages} orders forwarded to {forwarded.queue}", [worker])
        seconds = worker.stop(timeout_s=60)
        status = worker.popen.returncode
    finally:
        for child in children:
            child.stop()
        run.drop_groups([group])
        run.drop_topics([topic])
    return seconds, status


def measure(run: Run, collectors: Collectors, mode: Mode, confirm_every: int, progress: Callable[[str], None]) -> list[Scenario]:
    """SHUTDOWN_RUNS worker runs; one scenario: seconds from SIGTERM to exit."""
    seconds: list[float] = []
    statuses: list[int] = []
    for number in range(mode.shutdown_runs):
        took, status = stop_once(run, collectors, mode.shutdown_messages, f"s{number}", confirm_every)
        seconds.append(took)
        statuses.append(status)
        progress(f"shutdown {number + 1}/{mode.shutdown_runs}: exited {status} {took:.2f} s after SIGTERM")
    details = {"messages_before_sigterm": mode.shutdown_messages, "exit_status": statuses, "collector": "silent (accepts TCP, never answers)"}
    description = (
        f"`hoptrace worker hoptrace.examples.orders:pipeline --stage validate --no-monitor`, OTLP endpoint accepts TCP and never answers; "
        f"seconds from SIGTERM to exit after it forwarded {mode.shutdown_messages} orders"
    )
    return [Scenario(SECTION, "collector-silent", "SIGTERM to exit, collector hung", "s", seconds, description=description, details=details)]
