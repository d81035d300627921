"""Two tasks of a pipeline that mixes clients (no hoptrace import): one produces with confluent-kafka, one ends the job.

They join the plain Celery app (``plain_celery``: the test's Redis with its key prefix, queue
``TEST_QUEUE``). ``tests/apps/mixed_client.py`` drives the job through them (kafka-python → Celery →
confluent-kafka → aiokafka → Celery); ``MIXED_TOPIC`` is where ``mixed.to_confluent`` produces.
"""

from __future__ import annotations

import os

from confluent_kafka import Producer

from tests.apps.plain_celery import app

BOOTSTRAP = os.environ.get("MIXED_BOOTSTRAP", "127.0.0.1:9092")


@app.task(name="mixed.to_confluent")
def to_confluent(value: str) -> str:
    """Produce VALUE to ``MIXED_TOPIC`` with confluent-kafka, and wait until the broker has it."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    producer.produce(os.environ["MIXED_TOPIC"], value.encode())
    producer.flush(10)
    return value


@app.task(name="mixed.finish")
def finish(value: str) -> str:
    """The job's last stage."""
    return value
