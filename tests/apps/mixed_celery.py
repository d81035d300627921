"""A plain Celery app of a pipeline that mixes clients (no hoptrace import): one task produces with confluent-kafka, one ends the job.

``tests/apps/mixed_client.py`` drives the job through it (kafka-python → Celery → confluent-kafka →
aiokafka → Celery). Broker and result backend: the test's Redis with its key prefix
(``TEST_REDIS_PREFIX``), queue ``TEST_QUEUE``; ``MIXED_TOPIC`` is where ``mixed.to_confluent`` produces.
"""

from __future__ import annotations

import os

from celery import Celery
from confluent_kafka import Producer

REDIS = os.environ.get("HOPTRACE_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = {"global_keyprefix": os.environ.get("TEST_REDIS_PREFIX", "test:")}
BOOTSTRAP = os.environ.get("MIXED_BOOTSTRAP", "127.0.0.1:9092")

app = Celery("mixedapp", broker=REDIS, backend=REDIS)
app.conf.update(
    broker_transport_options=PREFIX,
    result_backend_transport_options=PREFIX,
    task_default_queue=os.environ.get("TEST_QUEUE", "mixed"),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


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
