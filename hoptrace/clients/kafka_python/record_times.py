"""Timestamps of the Kafka records at given offsets, read with one group-less consumer kept across reads.

A read assigns the partitions asked about, seeks each to its offset and polls until each
has given its first record at or after that offset, or its position has reached the end
offset it came with (only transaction markers or compacted-away offsets were left: no record
waits there), or the time budget is spent (``TimeoutError``). Then the partitions are
paused, so the consumer fetches nothing between reads. A partition asked about at two
offsets (two groups on one topic) takes two rounds. A record's timestamp is the producer's
(``CreateTime``) or the broker's (``LogAppendTime``), as the topic is configured.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from hoptrace.clients.kafka_python.monitor_clients import record_reader

NO_TIMESTAMP = -1
"""The timestamp of a record that has none (message format v0), as Kafka spells it."""
POLL_SLICE_MS = 100
"""Longest single poll, so that partitions that end without a record are noticed within a read."""

Wanted = Mapping[tuple[TopicPartition, int], int]
"""{(partition, offset): the partition's end offset}."""


def _rounds(wanted: Wanted) -> list[dict[TopicPartition, tuple[int, int]]]:
    """WANTED split so that no partition appears twice in a round: [{partition: (offset, end)}]."""
    rounds: list[dict[TopicPartition, tuple[int, int]]] = []
    for (partition, offset), end in wanted.items():
        free = next((round_ for round_ in rounds if partition not in round_), None)
        if free is None:
            free = {}
            rounds.append(free)
        free[partition] = (offset, end)
    return rounds


class RecordTimestamps:
    """The timestamp of the first record at or after given offsets."""

    def __init__(self, bootstrap_servers: Sequence[str], timeout_s: float = 1.5, options: Mapping[str, Any] | None = None) -> None:
        """Read from the cluster at BOOTSTRAP_SERVERS with client OPTIONS (security), at most TIMEOUT_S per read (and as long to connect)."""
        self._servers = list(bootstrap_servers)
        self._timeout_s = timeout_s
        self._options = dict(options or {})
        self._consumer: KafkaConsumer | None = None

    def read(self, wanted: Wanted) -> dict[tuple[TopicPartition, int], int | None]:
        """{(partition, offset): epoch ms of the first record at or after offset, None when none comes before the end offset}.

        A record without a timestamp gives ``NO_TIMESTAMP``.

        Raises TimeoutError when some record does not arrive within the timeout, or whatever the client raises.
        """
        if not wanted:
            return {}
        if self._consumer is None:
            self._consumer = record_reader(self._servers, self._timeout_s, self._options)
        deadline = time.monotonic() + self._timeout_s
        found: dict[tuple[TopicPartition, int], int | None] = {}
        try:
            for offsets in _rounds(wanted):
                found |= self._read_round(self._consumer, offsets, deadline)
        except Exception:
            # A consumer whose broker went away waits out long connection set-up timeouts; the next read starts afresh.
            self.close()
            raise
        return found

    def _read_round(
        self, consumer: KafkaConsumer, offsets: dict[TopicPartition, tuple[int, int]], deadline: float
    ) -> dict[tuple[TopicPartition, int], int | None]:
        """The first record at or after each partition's offset in OFFSETS ({partition: (offset, end)}), polled until DEADLINE."""
        consumer.assign(list(offsets))
        for partition, (offset, _) in offsets.items():
            consumer.seek(partition, offset)
        consumer.resume(*offsets)
        pending = dict(offsets)
        found: dict[tuple[TopicPartition, int], int | None] = {}
        try:
            while pending:
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    raise TimeoutError(f"no record of {len(pending)} partition(s) within {self._timeout_s} s")
                for partition, records in consumer.poll(timeout_ms=min(remaining_ms, POLL_SLICE_MS)).items():
                    if partition in pending and records:
                        timestamp = records[0].timestamp
                        found[(partition, pending.pop(partition)[0])] = NO_TIMESTAMP if timestamp is None else timestamp
                        consumer.pause(partition)
                for partition, (offset, end) in list(pending.items()):
                    position = consumer.position(partition, timeout_ms=0)
                    if position is not None and position >= end:
                        found[(partition, offset)] = None
                        del pending[partition]
        finally:
            consumer.pause(*offsets)
        return found

    def close(self) -> None:
        """Close the consumer (a later read connects a new one)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close(autocommit=False)
