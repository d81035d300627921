"""``hoptrace worker``: run the workers of a pipeline's stages until stopped.

One process runs either one Kafka stage (a poll loop) or all the chosen Celery stages (a
real Celery worker, prefork pool); one more, ``hoptrace monitor``, reports their queue
depth and lag. Asked for more than one process, ``run`` starts one child per group and
supervises them: SIGTERM/SIGINT is passed on, and when one child exits the others are
stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from hoptrace.loader import load_stages
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import CeleryTransport, KafkaTransport, Pipeline, Stage
from hoptrace.runtime import ProcessRuntime, celery_app, configure_logging
from hoptrace.workers.celery import register
from hoptrace.workers.kafka import KafkaStageWorker

logger = logging.getLogger(__name__)

CHILD_STOP_TIMEOUT_S = 15.0


def _on_stop_signals(handler: signal.Handlers | object) -> None:
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, handler)  # type: ignore[arg-type]


def run_kafka_stage(pipeline: Pipeline, stage: Stage, settings: Settings) -> None:
    """Consume one Kafka stage in this process until SIGTERM/SIGINT; then commit and flush."""
    runtime = ProcessRuntime(pipeline, settings, "worker", celery_app(pipeline, settings))
    worker = KafkaStageWorker(runtime.processor(stage), settings.kafka_servers)

    def stop(number: int, frame: FrameType | None) -> None:
        worker.stop()

    _on_stop_signals(stop)
    logger.info("stage %s: consuming %s as group %s", stage.name, stage.transport.destination, getattr(stage.transport, "group", ""))
    try:
        worker.run()
    finally:
        runtime.shutdown()


@dataclass(frozen=True)
class CeleryOptions:
    """How the Celery worker of a pipeline's Celery stages runs."""

    concurrency: int = 2
    max_tasks_per_child: int | None = None

    def argv(self) -> list[str]:
        """These options as ``celery worker`` arguments."""
        args = ["--concurrency", str(self.concurrency)]
        if self.max_tasks_per_child is not None:
            args += ["--max-tasks-per-child", str(self.max_tasks_per_child)]
        return args


def run_celery_stages(pipeline: Pipeline, settings: Settings, options: CeleryOptions) -> None:
    """Run a Celery worker (prefork pool) for the pipeline's Celery stages until it is stopped."""
    app = celery_app(pipeline, settings)
    queues = register(app, pipeline, ProcessRuntime(pipeline, settings, "worker", app))
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(queues),
            "--pool",
            "prefork",
            *options.argv(),
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
            "--hostname",
            f"{pipeline.name}-{os.getpid()}@%h",
        ]
    )


def _groups(stages: Sequence[Stage]) -> list[list[Stage]]:
    """One group per Kafka stage, one for all Celery stages."""
    groups = [[stage] for stage in stages if isinstance(stage.transport, KafkaTransport)]
    celery = [stage for stage in stages if isinstance(stage.transport, CeleryTransport)]
    return groups + ([celery] if celery else [])


def run(spec: str, pipeline: Pipeline, stages: Sequence[Stage], settings: Settings, options: CeleryOptions, monitor: bool) -> int:
    """Run the workers of STAGES (and, with MONITOR, a depth monitor of them); return the exit status."""
    groups = _groups(stages)
    if len(groups) == 1 and not monitor:
        group = groups[0]
        if isinstance(group[0].transport, KafkaTransport):
            run_kafka_stage(pipeline, group[0], settings)
        else:
            run_celery_stages(pipeline, settings, options)
        return 0
    return _supervise(commands(spec, stages, options, monitor))


def commands(spec: str, stages: Sequence[Stage], options: CeleryOptions, monitor: bool) -> list[list[str]]:
    """The command lines (for ``python -m``) of one process per group of STAGES, and of their monitor."""
    stage_args = [[arg for stage in group for arg in ("--stage", stage.name)] for group in _groups(stages)]
    lines = [["hoptrace", "worker", spec, "--no-monitor", *options.argv(), *args] for args in stage_args]
    if monitor:
        lines.append(["hoptrace", "monitor", spec, *(arg for args in stage_args for arg in args)])
    return lines


def _supervise(lines: list[list[str]]) -> int:
    children = [subprocess.Popen([sys.executable, "-m", *line]) for line in lines]
    stopping = False

    def stop(number: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    _on_stop_signals(stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    stop_processes(children)
    return 0 if stopping else 1


def stop_processes(children: Sequence[subprocess.Popen[bytes]], timeout_s: float = CHILD_STOP_TIMEOUT_S) -> None:
    """SIGTERM every child still running, then SIGKILL those not gone after TIMEOUT_S in all."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("worker %d did not stop within %.0f s; killing it", child.pid, timeout_s)
            child.kill()
            child.wait()


def main(spec: str, stage_names: list[str], options: CeleryOptions, monitor: bool) -> int:
    """``hoptrace worker``: run the stages STAGE_NAMES (all when empty) of the pipeline SPEC; the exit status."""
    configure_logging()
    settings = Settings()
    pipeline, stages = load_stages(spec, settings.namespace, stage_names)
    return run(spec, pipeline, stages, settings, options, monitor)
