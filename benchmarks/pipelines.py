"""The pipelines the benchmarks run: one Kafka stage and one Celery stage, each with a trivial handler.

Run them with ``hoptrace worker benchmarks.pipelines:kafka_hop --no-monitor`` (or ``celery_hop``);
``HOPTRACE_NAMESPACE`` makes their topic, group and queue unique per measured run. The
handlers only count the message (see ``benchmarks.completion``); the uninstrumented and stock
baselines call the very same functions.
"""

from __future__ import annotations

from typing import Any

from benchmarks.completion import file_completion, redis_completion
from hoptrace.pipeline.stages import Payload, Pipeline

KAFKA_SPEC = "benchmarks.pipelines:kafka_hop"
CELERY_SPEC = "benchmarks.pipelines:celery_hop"
STAGE = "hop"
FILLER = "x" * 980
"""Makes a payload about 1 KB of JSON."""

kafka_hop = Pipeline("bench-kafka")
celery_hop = Pipeline("bench-celery")


def payload(number: int) -> dict[str, Any]:
    """The NUMBER-th message: about 1 KB once JSON-encoded (an ``order_id`` too, so the orders pipeline takes it)."""
    return {"order_id": f"bench-{number}", "n": number, "data": FILLER}


@kafka_hop.stage(STAGE, kafka_topic="bench.kafka-hop", group="bench-kafka-hop")
def count_kafka_message(message: Payload, ctx: object) -> None:
    """Trivial Kafka handler: count the message in this process."""
    file_completion().count()


@celery_hop.stage(STAGE, celery_queue="bench.celery-hop")
def count_celery_message(message: Payload, ctx: object) -> None:
    """Trivial Celery handler: count the message in Redis (the pool has several processes)."""
    redis_completion().count()
