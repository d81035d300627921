"""The local Kafka is real: records and their headers make the round trip byte for byte."""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer

from hoptrace.pipeline.settings import Settings

RECORDS = 1000


def _headers(i: int) -> list[tuple[str, bytes]]:
    # Text, binary (not UTF-8) and empty values, and a key that repeats.
    return [("seq", str(i).encode()), ("raw", bytes([i % 256, 0, 0xFF])), ("empty", b""), ("seq", b"again")]


def test_thousand_records_with_headers_round_trip(settings: Settings, new_topic: Callable[..., str], unique: str) -> None:
    topic = new_topic("smoke", partitions=3)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    for i in range(RECORDS):
        producer.send(topic, key=str(i).encode(), value=f"value-{i}".encode(), headers=_headers(i))
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, group_id=f"smoke-{unique}", auto_offset_reset="earliest")
    received: dict[bytes, tuple[bytes, list[tuple[str, bytes]], int]] = {}
    duplicates = 0
    deadline = time.monotonic() + 60
    while len(received) < RECORDS and time.monotonic() < deadline:
        for partition_records in consumer.poll(timeout_ms=500).values():
            for record in partition_records:
                duplicates += record.key in received
                received[record.key] = (record.value, list(record.headers), record.partition)
    # Nothing beyond the thousand arrives later.
    extra = sum(len(batch) for batch in consumer.poll(timeout_ms=2000).values())
    consumer.close()

    assert (len(received), duplicates, extra) == (RECORDS, 0, 0)
    for i in range(RECORDS):
        value, headers, _ = received[str(i).encode()]
        assert value == f"value-{i}".encode()
        assert headers == _headers(i)
    assert {partition for _, _, partition in received.values()} == {0, 1, 2}
