"""What one ``hoptrace worker`` process runs: one Kafka stage, or all the chosen Celery stages.

A Kafka stage is a poll loop (``workers.kafka``) in this process, a member of its stage's
consumer group; the Celery stages share one real Celery worker (prefork pool). Each runs until
SIGTERM/SIGINT and keeps its stages' health files. Starting, watching and restarting these
processes is the supervisor's part (``hoptrace.worker``).
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from types import FrameType

from hoptrace.clients.celery.app import celery_app
from hoptrace.clients.celery.health import report_health
from hoptrace.clients.celery.worker import register
from hoptrace.errors import kafka_unreachable
from hoptrace.kafka_clients import stage_opener
from hoptrace.pipeline import heap
from hoptrace.pipeline.health import HealthFile
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import CeleryTransport, KafkaTransport, Pipeline, Stage
from hoptrace.producers.publisher import ConnectFailed
from hoptrace.runtime import ProcessRuntime
from hoptrace.workers.kafka import KafkaStageWorker
from hoptrace.workers.membership import claim
from hoptrace.workers.stage_consumer import ConsumerError

logger = logging.getLogger(__name__)


def run_kafka_stage(pipeline: Pipeline, stage: Stage, settings: Settings) -> None:
    """Consume one Kafka stage in this process until SIGTERM/SIGINT; then commit and flush."""
    transport = stage.transport
    assert isinstance(transport, KafkaTransport)
    runtime = ProcessRuntime(pipeline, settings, "worker", celery_app(pipeline, settings))
    membership = claim(transport.group, stage.name)  # held until this process exits, however it exits
    health = HealthFile(settings.state_dir, [stage.name])
    try:
        worker = KafkaStageWorker(runtime.processor(stage), stage_opener(settings), group_instance_id=membership.instance_id, health=health)
    except (ConsumerError, ConnectFailed) as error:  # the consumer, or the producer it forwards with, could not bootstrap
        runtime.shutdown()
        raise kafka_unreachable(settings.kafka_bootstrap, error.__cause__ or error) from error

    def stop(number: int, frame: FrameType | None) -> None:
        worker.stop()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    logger.info(
        "stage %s: consuming %s as group %s, member %s, with %s",
        stage.name,
        transport.destination,
        transport.group,
        membership.instance_id,
        settings.kafka_client,
    )
    heap.freeze(settings)
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
    """Run a Celery worker (prefork pool) for the pipeline's Celery stages until it is stopped.

    Its held set (``clients.celery.visibility``) is named after a host slot (``membership.claim``): a process
    that replaces a dead one takes its slot, and so puts back what the dead one held.
    """
    slot = claim(f"celery:{settings.namespace}{pipeline.name}", "celery")  # held until this process exits, however it exits
    app = celery_app(pipeline, settings, held_key=f"hoptrace:held:{settings.namespace}{pipeline.name}:{slot.instance_id}")
    queues = register(app, pipeline, ProcessRuntime(pipeline, settings, "worker", app))
    report_health(HealthFile(settings.state_dir, [stage.name for stage in pipeline if isinstance(stage.transport, CeleryTransport)]))
    heap.freeze(settings)  # the pool's processes are forked after this: they inherit the frozen heap
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
