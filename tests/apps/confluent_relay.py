"""A plain confluent-kafka relay, written as if hoptrace did not exist: ``poll()`` → a span → ``produce``.

Run under ``opentelemetry-instrument`` (the tests do), hoptrace's confluent-kafka instrumentor
traces it unchanged. It consumes ``RELAY_COUNT`` records of ``RELAY_SOURCE`` in group
``RELAY_GROUP`` (from the earliest offset), handles each inside a span of its own and produces it,
with the headers it came with, to ``RELAY_TARGET``; then it flushes, commits, stays up
``RELAY_LINGER_S`` seconds (time for a metric export of its live consumer) and closes. It gives up
after ``RELAY_IDLE_MS`` without a record. Its settings are the kafka-python relay's (``kafka_relay``);
with ``RELAY_BATCH`` set it reads with ``consume()``.
"""

from __future__ import annotations

import os
import time

from confluent_kafka import Consumer, Message, Producer
from opentelemetry import trace

from tests.apps.kafka_relay import BOOTSTRAP, COUNT, GROUP, IDLE_MS, LINGER_S, SOURCE, TARGET

IDLE_S = IDLE_MS / 1000
BATCH = int(os.environ.get("RELAY_BATCH", "0"))

tracer = trace.get_tracer("confluent_relay")


def handle(record: Message, producer: Producer) -> None:
    """The relay's own work on one record: a span of its own, and the record produced with its headers."""
    with tracer.start_as_current_span("relay") as span:
        span.set_attribute("relay.offset", record.offset())
        producer.produce(TARGET, record.value(), headers=record.headers())
        producer.poll(0)


def records(consumer: Consumer) -> list[Message]:
    """The next records: one from ``poll()``, or a batch from ``consume()`` with ``RELAY_BATCH``."""
    if BATCH:
        return consumer.consume(BATCH, 1.0)
    record = consumer.poll(1.0)
    return [] if record is None else [record]


def main() -> None:
    """Relay COUNT records, then flush, commit, stay up a little, close."""
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": GROUP, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    consumer.subscribe([SOURCE])
    relayed, idle_since = 0, time.monotonic()
    while relayed < COUNT and time.monotonic() - idle_since < IDLE_S:
        for record in records(consumer):
            if record.error() is None:
                handle(record, producer)
                relayed += 1
                idle_since = time.monotonic()
    producer.flush(10)
    consumer.commit(asynchronous=False)
    time.sleep(LINGER_S)
    consumer.close()
    print(f"relayed {relayed}", flush=True)


if __name__ == "__main__":
    main()
