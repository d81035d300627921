"""A Kafka stage worker: a ``poll()`` loop that processes each record inside its span, at least once.

Offsets are committed only after the handler finished: with the next batch's hand-out mark (see
``handed_out``) when one is already fetched, else at once; on partition revocation and on stop.
Commits in the loop are sent without waiting for the broker's answer (it comes with the next poll),
so a consumer that keeps up pays no round trip per batch; only the commit on stop waits.
A stop request (SIGTERM/SIGINT through ``stop()``) lets the record in hand finish, commits, and
returns; records polled but not processed are not committed, so the group reads them again.

A poll that fails because Kafka cannot be reached (a partition, a broker restart) is tried again
each second: the stage waits for Kafka, it does not exit.

A worker that dies without committing leaves at most one poll batch (``MAX_POLL_RECORDS``) to be
processed again; two when it dies within the round trip of the commit sent with its batch. With
a ``group_instance_id`` (static membership) its replacement takes its partitions over as soon as
it joins, instead of after the dead member's session timeout.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.future import Future

from hoptrace.clients.outage_errors import is_outage
from hoptrace.pipeline import semconv
from hoptrace.pipeline.carriers import kafka_pairs
from hoptrace.pipeline.health import HealthFile
from hoptrace.pipeline.messages import Delivery, Owned
from hoptrace.pipeline.outages import OutageLog
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.stages import KafkaTransport
from hoptrace.workers.handed_out import HandedOut, mark, read_mark
from hoptrace.workers.processing import StageProcessor, undecodable_payload

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
RETRY_PAUSE_S = 1.0
METADATA_MAX_AGE_MS = 5000
MAX_POLL_RECORDS = 50
"""Records per poll, so the most a crashed worker's replacement processes again (kafka-python's default: 500)."""
SESSION_TIMEOUT_MS = 10_000
"""How long a member that stopped heartbeating keeps its partitions (default 45 s); a static member that comes back takes them at once."""
HEARTBEAT_INTERVAL_MS = 1_000


def delivery(record: ConsumerRecord, redelivered: bool = False) -> Delivery:
    """A Kafka record as a Delivery: JSON object body, raw headers, partition and offset; REDELIVERED when the group had it before."""
    attributes = {semconv.MESSAGING_PARTITION: str(record.partition), semconv.MESSAGING_KAFKA_OFFSET: record.offset}
    try:
        payload = json.loads(record.value) if record.value is not None else None
    except (ValueError, RecursionError) as error:  # RecursionError: arrays or objects nested past the decoder's depth
        payload, problem = None, f"body is not JSON: {error}"
    else:
        problem = None if isinstance(payload, dict) else f"body is JSON {type(payload).__name__}, not an object"
    if problem is not None:
        raw = record.value.decode("utf-8", "replace") if isinstance(record.value, bytes) else repr(record.value)
        return Delivery(undecodable_payload(raw), kafka_pairs(record.headers, fields()), attributes, problem, redelivered)
    return Delivery(payload, kafka_pairs(record.headers, fields()), attributes, redelivered=redelivered)


class _Rebalance(AsyncConsumerRebalanceListener):
    """Commits before partitions go, forgets what cannot be committed once they are lost, learns marks of new ones.

    kafka-python runs these on its IO loop, where a blocking ``commit()`` raises: they await.
    """

    def __init__(self, worker: KafkaStageWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._worker.commit_before_revocation(revoked)

    async def on_partitions_lost(self, lost: Any) -> None:
        self._worker.forget(lost)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._worker.handed_out.assigned(assigned)
        if self._worker.health is not None:
            self._worker.health.ready(bool(self._worker._consumer.assignment()))
        partitions = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned))
        logger.info("stage %s: assigned partitions %s", self._worker.processor.stage.name, partitions or "(none)")


class KafkaStageWorker:
    """Consumes one Kafka stage's topic in its consumer group and processes every record."""

    def __init__(
        self,
        processor: StageProcessor,
        bootstrap_servers: list[str],
        consumer_config: Mapping[str, Any] | None = None,
        group_instance_id: str | None = None,
        health: HealthFile | None = None,
    ) -> None:
        """Consume PROCESSOR's stage from BOOTSTRAP_SERVERS; CONSUMER_CONFIG overrides kafka-python settings.

        HEALTH, when given, hears a heartbeat every loop and whether the worker has partitions (its probes read it).

        GROUP_INSTANCE_ID makes the consumer a static member: unique among live members, the same
        for the process that replaces this one (``membership.claim``).
        """
        transport = processor.stage.transport
        assert isinstance(transport, KafkaTransport), f"stage {processor.stage.name!r} is not a Kafka stage"
        self.processor = processor
        self.transport = transport
        self._stopping = threading.Event()
        self._kafka_outage = OutageLog(
            logger, "stage %s: Kafka cannot be reached (%s); polling again each second", "stage %s: Kafka answers again after %.1f s"
        )
        """The consumer's polls failing because Kafka cannot be reached, said once per outage."""
        self._done: dict[TopicPartition, int] = {}
        self._sent: dict[TopicPartition, OffsetAndMetadata] = {}
        """The offset last sent for each partition: only that one may be sent again when its commit fails."""
        self._unanswered: Future | None = None
        self._acknowledged: dict[TopicPartition, int] = {}
        """The offset the broker last confirmed committing for each partition (``_heal`` compares positions with it)."""
        self.handed_out = HandedOut()
        self.health = health
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": transport.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "client_id": f"hoptrace-{processor.pipeline.name}-{processor.stage.name}",
            # kafka-python's default (5 min) leaves a worker that started before its topic had a
            # leader with no partitions for minutes; refresh often enough to join within seconds.
            "metadata_max_age_ms": METADATA_MAX_AGE_MS,
            "max_poll_records": MAX_POLL_RECORDS,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            "group_instance_id": group_instance_id,
        }
        self._consumer = KafkaConsumer(**{**config, **dict(consumer_config or {})})
        self._consumer.subscribe([transport.topic], listener=_Rebalance(self))

    def stop(self) -> None:
        """Ask the loop to finish the record in hand, commit and return. Safe from a signal handler."""
        self._stopping.set()

    def _commit(self, batch: Sequence[tuple[TopicPartition, list[ConsumerRecord]]] = (), wait: bool = False) -> None:
        """Commit what was processed; with BATCH (just polled, about to be processed), mark its records as handed out.

        The commit is sent without waiting for the answer (it is answered during the next poll), unless
        WAIT (stopping). With a batch, when the last commit is still unanswered, this batch goes unmarked
        and what was processed rides on the next commit. Waiting or not changes nothing a crash repeats:
        until the broker answers, the records are processed again either way.
        """
        if batch and self._unanswered is not None and not self._unanswered.is_done:
            return
        offsets = self._processed()
        offsets.update((partition, mark(records[0].offset, records[-1].offset + 1)) for partition, records in batch)
        if not offsets:
            return
        self._sent.update(offsets)
        # Cleared before sending: kafka-python answers earlier commits inside commit_async, and a failure it
        # answers there puts its offsets back to be sent again.
        self._done.clear()
        try:
            if wait:
                self._consumer.commit(offsets)
            else:
                self._unanswered = self._consumer.commit_async(offsets, callback=self._answered)
        except KafkaError as error:  # the records are read again: at least once, never lost
            self._answered(offsets, error)

    def _processed(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """The offsets to commit for what was processed, each with a mark saying nothing is handed out past it."""
        return {partition: mark(offset, offset) for partition, offset in self._done.items()}

    def _answered(self, offsets: Mapping[TopicPartition, Any], answer: object) -> None:
        """The broker's answer to a commit (called on the polling thread): after a failure its offsets ride on the next commit.

        Unless a partition made progress since (then the newer offset goes), a later commit already carries it (sending
        this older one again would take the group back), or it is no longer assigned; until then a crash repeats those records.
        """
        if not isinstance(answer, Exception):
            self._acknowledged.update((partition, committed.offset) for partition, committed in offsets.items())
            return
        logger.warning("stage %s: commit failed (%s); it is sent again with the next commit", self.processor.stage.name, answer)
        assigned = self._consumer.assignment()  # a partition that went to another member is its business now
        for partition, committed in offsets.items():
            if partition in assigned and self._sent.get(partition) is committed:
                self._done.setdefault(partition, committed.offset)

    async def commit_before_revocation(self, revoked: Iterable[TopicPartition]) -> None:
        """Commit what was processed before REVOKED partitions go to another member (called on kafka-python's IO loop)."""
        offsets = self._processed()
        if offsets:
            try:
                await self._consumer.commit_async(offsets)
            except KafkaError as error:  # the records are read again: at least once, never lost
                logger.warning("stage %s: commit before a rebalance failed (%s); records will come again", self.processor.stage.name, error)
        self.forget(revoked)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is left to commit of PARTITIONS: they are another member's now, or will be (the records come again, marked)."""
        for partition in partitions:
            self._done.pop(partition, None)
            self._sent.pop(partition, None)
            self._acknowledged.pop(partition, None)

    def _heal(self) -> None:
        """Idle, every commit answered: commit where a partition's position (all of it processed) is past what the broker confirmed.

        A commit that failed when it could not be sent again (answered while a rebalance or a coordinator move had the
        partition away) left the group behind until the partition's next record: lag that never clears, and records
        processed again after a restart. A partition never committed here gets its position committed once.
        """
        if self._unanswered is not None and not self._unanswered.is_done:
            return
        for partition in self._consumer.assignment():
            try:
                position = self._consumer.position(partition, timeout_ms=0)
            except KafkaError:  # not known yet: the next idle loop looks again
                continue
            if position is not None and self._acknowledged.get(partition) != position:
                self._done[partition] = position
        if self._done:
            self._commit()

    def _learn_marks(self, partitions: Iterable[TopicPartition]) -> None:
        """Read the hand-out marks of newly assigned PARTITIONS before this worker's first commit replaces them."""
        marks: dict[TopicPartition, int] = {}
        for partition in self.handed_out.unlearned(partitions):
            try:
                marks[partition] = read_mark(self._consumer.committed(partition, metadata=True))
            except KafkaError as error:  # redeliveries go unflagged; processing goes on
                logger.warning("stage %s: could not read the hand-out mark of %s (%s)", self.processor.stage.name, partition, error)
                marks[partition] = -1
        self.handed_out.learn(marks)

    def run(self) -> None:
        """Poll and process until ``stop()``; then commit and close the consumer."""
        try:
            with Owned():  # hoptrace's drop-in kafka-python instrumentation must not trace this loop again
                self._poll_until_stopped()
        finally:
            self._commit(wait=True)
            self._consumer.close(autocommit=False)

    def _poll_until_stopped(self) -> None:
        while not self._stopping.is_set():
            if self.health is not None:
                self.health.beat()
            # With processed records to commit, only take what is already fetched: when nothing is, commit now, then wait.
            batch = self._poll(0 if self._done else POLL_TIMEOUT_MS)
            if not batch and self._done:
                self._commit()
                continue
            if not batch:
                self._heal()
                continue
            self._learn_marks(partition for partition, _ in batch)
            self._commit(batch)
            # Until a record is processed, a commit (revocation, stop) says the group resumes at the batch's start, nothing in hand.
            self._done.update((partition, records[0].offset) for partition, records in batch)
            for index, (partition, records) in enumerate(batch):
                if not self._process(partition, records):
                    for later, later_records in batch[index + 1 :]:  # unprocessed: read them again
                        self._consumer.seek(later, later_records[0].offset)
                    break

    def _poll(self, timeout_ms: int) -> list[tuple[TopicPartition, list[ConsumerRecord]]]:
        """The next batch; none, after a pause, while Kafka cannot be reached (the consumer's own poll raising an outage is waited out)."""
        try:
            batch = list(self._consumer.poll(timeout_ms=timeout_ms).items())
        except KafkaError as error:
            if not is_outage(error):
                raise
            self._kafka_outage.away(self.processor.stage.name, error)
            self._stopping.wait(RETRY_PAUSE_S)
            return []
        self._kafka_outage.back(self.processor.stage.name)
        return batch

    def _process(self, partition: TopicPartition, records: list[ConsumerRecord]) -> bool:
        """Process RECORDS of one partition in order; False when the loop must stop polling this batch."""
        for record in records:
            if self._stopping.is_set():
                self._consumer.seek(partition, record.offset)
                return False
            redelivered = self.handed_out.take(partition, record.offset)
            try:
                self.processor.process(delivery(record, redelivered))
            except Exception:  # dead-lettering failed: keep the record, read it again after a pause
                logger.exception("stage %s: could not process or dead-letter offset %d; retrying it", self.processor.stage.name, record.offset)
                self._consumer.seek(partition, record.offset)
                self._stopping.wait(RETRY_PAUSE_S)
                return False
            self._done[partition] = record.offset + 1
        return True
