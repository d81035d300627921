"""A Kafka stage worker: a ``poll()`` loop that processes each record inside its span, at least once.

Offsets are committed only after the handler finished (after every polled batch, on
partition revocation and on stop). A stop request (SIGTERM/SIGINT through ``stop()``)
lets the record in hand finish, commits, and returns; records polled but not processed are
not committed, so the group reads them again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from hoptrace.pipeline import semconv
from hoptrace.pipeline.carriers import kafka_pairs
from hoptrace.pipeline.messages import Delivery, owned
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.stages import KafkaTransport
from hoptrace.workers.processing import StageProcessor

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
RETRY_PAUSE_S = 1.0
METADATA_MAX_AGE_MS = 5000


def delivery(record: ConsumerRecord) -> Delivery:
    """A Kafka record as a Delivery: JSON object body, raw headers, partition and offset."""
    attributes = {semconv.MESSAGING_PARTITION: str(record.partition), semconv.MESSAGING_KAFKA_OFFSET: record.offset}
    try:
        payload = json.loads(record.value) if record.value is not None else None
    except ValueError as error:
        payload, problem = None, f"body is not JSON: {error}"
    else:
        problem = None if isinstance(payload, dict) else f"body is JSON {type(payload).__name__}, not an object"
    if problem is not None:
        raw = record.value.decode("utf-8", "replace") if isinstance(record.value, bytes) else repr(record.value)
        return Delivery({"undecodable": raw[:10000]}, kafka_pairs(record.headers, fields()), attributes, problem)
    return Delivery(payload, kafka_pairs(record.headers, fields()), attributes)


class _CommitOnRevoke(ConsumerRebalanceListener):
    def __init__(self, stage: str, commit: Callable[[], None]) -> None:
        self._stage = stage
        self._commit = commit

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._commit()

    def on_partitions_assigned(self, assigned: Any) -> None:
        partitions = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned))
        logger.info("stage %s: assigned partitions %s", self._stage, partitions or "(none)")


class KafkaStageWorker:
    """Consumes one Kafka stage's topic in its consumer group and processes every record."""

    def __init__(self, processor: StageProcessor, bootstrap_servers: list[str], consumer_config: Mapping[str, Any] | None = None) -> None:
        """Consume PROCESSOR's stage from BOOTSTRAP_SERVERS; CONSUMER_CONFIG overrides kafka-python settings."""
        transport = processor.stage.transport
        assert isinstance(transport, KafkaTransport), f"stage {processor.stage.name!r} is not a Kafka stage"
        self.processor = processor
        self.transport = transport
        self._stopping = threading.Event()
        self._done: dict[TopicPartition, OffsetAndMetadata] = {}
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=transport.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"hoptrace-{processor.pipeline.name}-{processor.stage.name}",
            # kafka-python's default (5 min) leaves a worker that started before its topic had a
            # leader with no partitions for minutes; refresh often enough to join within seconds.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            **dict(consumer_config or {}),
        )
        self._consumer.subscribe([transport.topic], listener=_CommitOnRevoke(processor.stage.name, self._commit))

    def stop(self) -> None:
        """Ask the loop to finish the record in hand, commit and return. Safe from a signal handler."""
        self._stopping.set()

    def _commit(self) -> None:
        if not self._done:
            return
        try:
            self._consumer.commit(dict(self._done))
            self._done.clear()
        except KafkaError as error:  # the records are read again: at least once, never lost
            logger.warning("stage %s: commit failed (%s); those records will be processed again", self.processor.stage.name, error)

    def run(self) -> None:
        """Poll and process until ``stop()``; then commit and close the consumer."""
        try:
            with owned():  # hoptrace's drop-in kafka-python instrumentation must not trace this loop again
                self._poll_until_stopped()
        finally:
            self._commit()
            self._consumer.close(autocommit=False)

    def _poll_until_stopped(self) -> None:
        while not self._stopping.is_set():
            batch = list(self._consumer.poll(timeout_ms=POLL_TIMEOUT_MS).items())
            for index, (partition, records) in enumerate(batch):
                if not self._process(partition, records):
                    for later, later_records in batch[index + 1 :]:  # unprocessed: read them again
                        self._consumer.seek(later, later_records[0].offset)
                    break
            self._commit()

    def _process(self, partition: TopicPartition, records: list[ConsumerRecord]) -> bool:
        """Process RECORDS of one partition in order; False when the loop must stop polling this batch."""
        for record in records:
            if self._stopping.is_set():
                self._consumer.seek(partition, record.offset)
                return False
            try:
                self.processor.process(delivery(record))
            except Exception:  # dead-lettering failed: keep the record, read it again after a pause
                logger.exception("stage %s: could not process or dead-letter offset %d; retrying it", self.processor.stage.name, record.offset)
                self._consumer.seek(partition, record.offset)
                self._stopping.wait(RETRY_PAUSE_S)
                return False
            self._done[partition] = OffsetAndMetadata(record.offset + 1, "", -1)
        return True
