"""The relay of ``kafka_relay``, written with ``consumer.poll()`` batches instead of iterating the consumer."""

from __future__ import annotations

import time

from tests.apps.kafka_relay import COUNT, IDLE_MS, clients, finish, handle


def main() -> None:
    """Relay COUNT records, polling batches and iterating each partition's records."""
    consumer, producer = clients()
    relayed = 0
    deadline = time.monotonic() + IDLE_MS / 1000
    while relayed < COUNT and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                handle(record, producer)
                relayed += 1
    finish(consumer, producer, relayed)


if __name__ == "__main__":
    main()
