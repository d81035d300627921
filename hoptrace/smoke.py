"""The smoke pipeline: one round trip through the local Kafka and Redis, counted.

It stands in for the demo until the example pipeline exists; ``hoptrace demo`` runs it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis
from kafka import KafkaConsumer, KafkaProducer

from pipeline.settings import Settings


@dataclass(frozen=True)
class Hop:
    """What one round trip through a broker did."""

    transport: str
    destination: str
    sent: int
    received: int
    seconds: float


def kafka_round_trip(settings: Settings, count: int) -> Hop:
    """Send COUNT records with a header to a fresh topic and read them back."""
    topic = f"hoptrace.smoke.{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    for i in range(count):
        producer.send(topic, value=str(i).encode(), headers=[("hoptrace-smoke", b"1")])
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    received = sum(1 for record in consumer if record.headers == [("hoptrace-smoke", b"1")])
    consumer.close()
    return Hop("kafka", topic, count, received, time.perf_counter() - started)


def redis_round_trip(settings: Settings, count: int) -> Hop:
    """Push COUNT items onto a fresh Redis list and pop them back."""
    key = f"hoptrace:smoke:{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    client = redis.Redis.from_url(settings.redis_url)
    client.lpush(key, *range(count))
    received = 0
    while client.brpop([key], timeout=1) is not None:
        received += 1
    client.close()
    return Hop("redis", key, count, received, time.perf_counter() - started)
