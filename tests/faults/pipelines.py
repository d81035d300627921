"""Pipelines of the fault suite and of the redelivery tests, importable by worker processes as ``tests.faults.pipelines:NAME``.

``hanging`` is the orders pipeline (same stages, queues, topics and outbox) whose stage named by
a job's ``"hang_at"`` blocks for ``"hang_s"`` seconds; ``limited`` the same with handler time limits on
every stage (``LIMITS``: soft 2 s, hard 4 s, two attempts); ``patient`` the orders pipeline whose stages
pause 1 s before a retry (the critical path's tests). ``slow`` has one Kafka stage, ``take``,
and one Celery stage, ``work``: each sleeps ``"sleep_s"`` seconds, then appends the order id and
its own pid to ``<namespace>slow:outbox``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from functools import lru_cache

import redis

from hoptrace.examples import orders
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stage_context import StageContext
from hoptrace.pipeline.stages import Handler, Payload, Pipeline, RetryPolicy
from hoptrace.pipeline.time_limits import TimeLimits


def _orders_like(
    wrap: Callable[[Handler], Handler] = lambda handler: handler, retry: RetryPolicy | None = None, limits: TimeLimits = TimeLimits()
) -> Pipeline:
    """The orders pipeline (same stages, queues, topics and outbox), each handler through WRAP, each stage with RETRY (when given) and LIMITS."""
    copy = Pipeline("orders", baggage_allowlist=("tenant",))
    for stage in orders.pipeline:
        transport = stage.transport
        copy.stage(
            stage.name,
            kafka_topic=getattr(transport, "topic", None),
            group=getattr(transport, "group", None),
            celery_queue=getattr(transport, "queue", None),
            forwards_to=stage.forwards_to,
            retry=retry,
            soft_time_limit_s=limits.soft_s,
            time_limit_s=limits.hard_s,
        )(wrap(stage.handler))
    return copy


def _hangs(handler: Handler) -> Handler:
    def run(order: Payload, ctx: StageContext) -> None:
        if order.get("hang_at") == ctx.stage.name:
            time.sleep(float(order.get("hang_s", 3600)))
        handler(order, ctx)

    return run


hanging = _orders_like(_hangs)
LIMITS = TimeLimits(soft_s=2.0, hard_s=4.0)
LIMITED_RETRY = RetryPolicy(max_attempts=2, backoff_s=0.1)
limited = _orders_like(_hangs, LIMITED_RETRY, LIMITS)
patient = _orders_like(retry=RetryPolicy(backoff_s=1.0))


slow = Pipeline("slow")


def slow_outbox(settings: Settings) -> str:
    """The Redis list both stages of ``slow`` append to."""
    return f"{settings.namespace}slow:outbox"


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(Settings().redis_url)


def _work(order: Payload, ctx: StageContext) -> None:
    time.sleep(float(order.get("sleep_s", 0)))
    _redis().rpush(slow_outbox(Settings()), json.dumps({"order_id": order["order_id"], "stage": ctx.stage.name, "pid": os.getpid()}))


slow.stage("take", kafka_topic="slow.in", group="take")(_work)
slow.stage("work", celery_queue="slow.work")(_work)
