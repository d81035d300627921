"""Drives one job across every client hoptrace instruments, the way separate services would, with no hoptrace import.

kafka-python sends to ``MIXED_FIRST`` (inside a ``client`` span) → a kafka-python consumer takes it and
calls ``mixed.to_confluent`` (Celery) → that task produces to ``MIXED_TOPIC`` with confluent-kafka → a
confluent-kafka consumer takes it and sends it to ``MIXED_LAST`` with aiokafka → an aiokafka consumer
takes it and calls ``mixed.finish`` (Celery). Run under ``opentelemetry-instrument``, beside a worker
of ``tests.apps.mixed_celery``; prints ``finished <value>`` when the last task has run.
"""

from __future__ import annotations

import asyncio
import os
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer
from kafka import KafkaConsumer, KafkaProducer
from opentelemetry import trace

from tests.apps.mixed_celery import BOOTSTRAP, finish, to_confluent

FIRST, MIDDLE, LAST = os.environ["MIXED_FIRST"], os.environ["MIXED_TOPIC"], os.environ["MIXED_LAST"]
GROUP = os.environ.get("MIXED_GROUP", "mixed")
TIMEOUT_S = 30.0


def first_hop() -> None:
    """kafka-python: send the job, take it, hand it to Celery."""
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP)
    with trace.get_tracer("mixed_client").start_as_current_span("client"):
        producer.send(FIRST, b"job")
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(FIRST, bootstrap_servers=BOOTSTRAP, group_id=f"{GROUP}-1", auto_offset_reset="earliest", consumer_timeout_ms=20000)
    record = next(iter(consumer))
    to_confluent.delay(record.value.decode())
    consumer.close()


async def third_hop() -> str:
    """confluent-kafka takes what the task produced and sends it on with aiokafka; aiokafka takes it and hands it to Celery."""
    confluent = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{GROUP}-2", "auto.offset.reset": "earliest"})
    confluent.subscribe([MIDDLE])
    deadline = time.monotonic() + TIMEOUT_S
    record = None
    while (record is None or record.error() is not None) and time.monotonic() < deadline:
        record = confluent.poll(0.5)
    assert record is not None and record.error() is None, "no record from the Celery task"
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    await producer.start()
    await producer.send_and_wait(LAST, record.value())
    await producer.stop()
    confluent.close()
    consumer = AIOKafkaConsumer(LAST, bootstrap_servers=BOOTSTRAP, group_id=f"{GROUP}-3", auto_offset_reset="earliest")
    await consumer.start()
    async with asyncio.timeout(TIMEOUT_S):  # not wait_for: before Python 3.12 it awaits in a task of its own, where the span would stay
        last = await consumer.getone()
    result = finish.delay(last.value.decode())
    await consumer.stop()
    return result.get(timeout=TIMEOUT_S)


def main() -> None:
    """The whole job; ``finished <value>`` at the end."""
    first_hop()
    print(f"finished {asyncio.run(third_hop())}", flush=True)


if __name__ == "__main__":
    main()
