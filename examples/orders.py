"""The orders pipeline: an order hops Kafka -> Celery -> Kafka -> Celery.

    validate  Kafka topic orders.placed, group validate  -> charge
    charge    Celery queue payments                      -> ship
    ship      Kafka topic orders.charged, group ship     -> notify
    notify    Celery queue notifications                 (last stage)

A job is a JSON object with at least ``order_id``. ``notify`` delivers into a Redis list,
the outbox, which the demo and the tests read. For demonstrations, ``"fail_at": STAGE``
makes that stage fail every attempt (the order is dead-lettered) and ``"flaky_at": STAGE``
makes it fail the first attempt only (it is retried); ``"slow_at": STAGE`` with ``"slow_s": SECONDS``
makes that stage take that long.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache

import redis

from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stage_context import StageContext
from hoptrace.pipeline.stages import Payload, Pipeline

logger = logging.getLogger(__name__)

pipeline = Pipeline("orders", baggage_allowlist=("tenant",))


class OrderRejected(ValueError):
    """The order cannot go on (missing fields, or a failure asked for by the payload)."""


def outbox_key(settings: Settings) -> str:
    """The Redis list ``notify`` delivers into."""
    return f"{settings.namespace}orders:outbox"


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(Settings().redis_url)


def _maybe_fail(order: Payload, ctx: StageContext) -> None:
    if order.get("fail_at") == ctx.stage.name:
        raise OrderRejected(f"order {order.get('order_id')} asked to fail at {ctx.stage.name}")
    if order.get("slow_at") == ctx.stage.name:
        time.sleep(float(order.get("slow_s", 1.0)))
    if order.get("flaky_at") == ctx.stage.name and ctx.attempt == 1:
        raise OrderRejected(f"order {order.get('order_id')} is flaky at {ctx.stage.name}; the retry will pass")


@pipeline.stage("validate", kafka_topic="orders.placed", group="validate", forwards_to=("charge",))
def validate(order: Payload, ctx: StageContext) -> None:
    """Check the order has an id, then send it to be charged."""
    if "order_id" not in order:
        raise OrderRejected(f"an order needs an order_id; got the fields {sorted(order)}")
    _maybe_fail(order, ctx)
    ctx.forward("charge", {**order, "valid": True})


@pipeline.stage("charge", celery_queue="payments", forwards_to=("ship",))
def charge(order: Payload, ctx: StageContext) -> None:
    """Charge the customer (pretend), then send the order to be shipped."""
    _maybe_fail(order, ctx)
    logger.info("charged order %s", order["order_id"])
    ctx.forward("ship", {**order, "charged": True})


@pipeline.stage("ship", kafka_topic="orders.charged", group="ship", forwards_to=("notify",))
def ship(order: Payload, ctx: StageContext) -> None:
    """Hand the order to the carrier (pretend), then notify the customer."""
    _maybe_fail(order, ctx)
    ctx.forward("notify", {**order, "shipped": True})


@pipeline.stage("notify", celery_queue="notifications")
def notify(order: Payload, ctx: StageContext) -> None:
    """Deliver the notification into the outbox, with the job and the tenant from baggage."""
    _maybe_fail(order, ctx)
    note = {"order_id": order["order_id"], "job_id": ctx.job_id, "tenant": ctx.baggage.get("tenant")}
    _redis().rpush(outbox_key(Settings()), json.dumps(note))
