"""A plain kafka-python relay, written as if hoptrace did not exist: ``for record in consumer:`` → a span → ``send``.

Run it under ``opentelemetry-instrument`` (the tests do) and hoptrace's instrumentor traces it
without a line of it changing. It consumes ``RELAY_COUNT`` records of ``RELAY_SOURCE`` in group
``RELAY_GROUP`` (from the earliest offset), handles each inside a span of its own and forwards it,
with the headers it came with, to ``RELAY_TARGET``; then it commits, stays up ``RELAY_LINGER_S``
seconds (time for a metric export of its live consumer) and closes. It gives up after
``RELAY_IDLE_MS`` without a record. ``RELAY_KAFKA_OPTIONS`` (JSON) adds kafka-python options to both
clients, as an app's own configuration would: a secured broker's ``security_protocol``, SASL and CA file.
"""

from __future__ import annotations

import json
import os
import time

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from opentelemetry import trace

BOOTSTRAP = os.environ.get("RELAY_BOOTSTRAP", "127.0.0.1:9092")
SOURCE = os.environ.get("RELAY_SOURCE", "relay.in")
TARGET = os.environ.get("RELAY_TARGET", "relay.out")
GROUP = os.environ.get("RELAY_GROUP", "relay")
COUNT = int(os.environ.get("RELAY_COUNT", "20"))
LINGER_S = float(os.environ.get("RELAY_LINGER_S", "1.0"))
IDLE_MS = int(os.environ.get("RELAY_IDLE_MS", "20000"))
OPTIONS = json.loads(os.environ.get("RELAY_KAFKA_OPTIONS", "{}"))

tracer = trace.get_tracer("kafka_relay")


def clients() -> tuple[KafkaConsumer, KafkaProducer]:
    """The relay's consumer (subscribed to the source topic) and producer."""
    consumer = KafkaConsumer(
        SOURCE,
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=IDLE_MS,
        **OPTIONS,
    )
    return consumer, KafkaProducer(bootstrap_servers=BOOTSTRAP, **OPTIONS)


def handle(record: ConsumerRecord, producer: KafkaProducer) -> None:
    """The relay's own work on one record: a span of its own, and the record forwarded with its headers."""
    with tracer.start_as_current_span("relay") as span:
        span.set_attribute("relay.offset", record.offset)
        producer.send(TARGET, record.value, headers=record.headers)


def finish(consumer: KafkaConsumer, producer: KafkaProducer, relayed: int) -> None:
    """Flush, commit, stay up a little, close."""
    producer.flush()
    consumer.commit()
    time.sleep(LINGER_S)
    consumer.close()
    producer.close()
    print(f"relayed {relayed}", flush=True)


def main() -> None:
    """Relay COUNT records, iterating the consumer."""
    consumer, producer = clients()
    relayed = 0
    for record in consumer:
        handle(record, producer)
        relayed += 1
        if relayed == COUNT:
            break
    finish(consumer, producer, relayed)


if __name__ == "__main__":
    main()
