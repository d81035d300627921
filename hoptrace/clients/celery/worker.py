"""Celery stages: one task per stage, whose body is the stage's processing, on a real Celery worker.

Telemetry and publishers belong to a process: they are made on first use in each prefork
child (after the fork) and flushed when that child exits, so a pool with
``worker_max_tasks_per_child=1`` still exports every span. A pool child whose worker died (a
kill -9 of the main process) gets SIGTERM instead of Celery's SIGKILL, so it flushes too.

A message whose processing or dead-lettering failed is retried in a second; when even that retry
cannot be sent (the broker is away), it is rejected back onto its queue (Celery would drop it), or,
when the broker cannot take even that, stays unacknowledged until it is put back (``visibility``).

A message the worker cannot read (its body, its task, its envelope) is dead-lettered by its stage
(``unreadable``), never dropped. A message the broker hands out again (``redelivered`` in its delivery info: its worker died or
lost it, see ``visibility``) is marked on its process span and counted.
"""

from __future__ import annotations

import logging
import signal
from contextlib import ExitStack, suppress
from typing import Any, Protocol

from billiard.util import set_pdeathsig
from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import suppress_instrumentation

from hoptrace.clients.celery import unreadable
from hoptrace.pipeline import semconv
from hoptrace.pipeline.carriers import celery_request_pairs
from hoptrace.pipeline.messages import Delivery
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.stages import CeleryTransport, Payload, Pipeline, Stage
from hoptrace.workers.processing import StageProcessor

logger = logging.getLogger(__name__)

DEAD_LETTER_RETRY_S = 1.0


class ProcessRuntime(Protocol):
    """Telemetry and publishers of the current process, made on first use (so after a fork)."""

    def processor(self, stage: Stage) -> StageProcessor:
        """The processor of STAGE in this process."""
        ...

    def shutdown(self) -> None:
        """Flush telemetry and close publishers of this process, within a bounded time; a no-op when none were made."""
        ...


def register(app: Celery, pipeline: Pipeline, runtime: ProcessRuntime) -> list[str]:
    """Register a task for every Celery stage of PIPELINE on APP; return the queues to consume."""
    tasks: dict[str, str] = {}
    for stage in pipeline:
        if isinstance(stage.transport, CeleryTransport):
            _register_stage(app, stage, runtime)
            tasks[stage.transport.queue] = stage.transport.task
    unreadable.install(app, tasks)
    queues = list(tasks)

    stages = [stage for stage in pipeline if isinstance(stage.transport, CeleryTransport)]
    quiet = ExitStack()

    def quiet_consumer(**_: Any) -> None:
        # The consumer's own broker traffic (acks, unacked bookkeeping, pidbox) is not a job's:
        # with a stock Redis instrumentation it would be a flood of root traces.
        quiet.enter_context(suppress_instrumentation())

    def start_pool_process(**_: Any) -> None:
        # Celery has the kernel SIGKILL a pool child when its worker dies, losing the spans it has
        # not exported yet; billiard turns SIGTERM into an exit that runs worker_process_shutdown.
        with suppress(OSError):  # Linux only
            set_pdeathsig(signal.SIGTERM)
        # Forked from the quiet consumer: trace again, and make telemetry now, before the first
        # task, so a stock Celery instrumentation's task hooks already find a provider.
        otel_context.attach(otel_context.Context())
        for stage in stages:
            runtime.processor(stage)

    def shutdown(**_: Any) -> None:
        runtime.shutdown()

    worker_init.connect(quiet_consumer, weak=False)
    worker_process_init.connect(start_pool_process, weak=False)
    worker_process_shutdown.connect(shutdown, weak=False)
    worker_shutdown.connect(shutdown, weak=False)
    return queues


def _register_stage(app: Celery, stage: Stage, runtime: ProcessRuntime) -> None:
    transport = stage.transport
    assert isinstance(transport, CeleryTransport)

    def run_stage(task: Task, payload: Payload) -> str:
        request = task.request
        attributes = {semconv.MESSAGING_MESSAGE_ID: str(request.id)}
        redelivered = bool((request.delivery_info or {}).get("redelivered"))
        try:
            problem = unreadable.reason_of(request)  # sent back by the consumer: dead-lettered, the handler never runs
            delivery = Delivery(payload, celery_request_pairs(request, fields()), attributes, problem, redelivered)
            outcome = runtime.processor(stage).process(delivery)
        except Exception as error:  # dead-lettering failed: the message goes back on the queue
            logger.exception("stage %s: could not process or dead-letter task %s; retrying it", stage.name, request.id)
            try:
                raise task.retry(exc=error, countdown=DEAD_LETTER_RETRY_S, max_retries=None) from error
            except Reject as unsent:  # the retry could not be sent (the broker is away): Celery would drop the message
                raise Reject(unsent.reason, requeue=True) from error
        return outcome.value

    run_stage.__name__ = run_stage.__qualname__ = f"stage_{stage.name}"
    run_stage.__doc__ = f"Process a message of stage {stage.name!r}."
    app.task(run_stage, name=transport.task, bind=True, queue=transport.queue, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
