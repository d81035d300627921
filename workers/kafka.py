"""A Kafka stage worker: a poll loop that processes each record inside its span, at least once, on any client.

The client library (kafka-python or confluent-kafka, ``HOPTRACE_KAFKA_CLIENT``) is behind a
``StageConsumer`` (``stage_consumer``); this loop keeps the bookkeeping, the same for every client.

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
from collections.abc import Iterable, Mapping

from hoptrace.pipeline.attributes import kafka_position
from hoptrace.pipeline.carriers import kafka_pairs
from hoptrace.pipeline.health import HealthFile
from hoptrace.pipeline.messages import Delivery, Owned
from hoptrace.pipeline.outages import OutageLog
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.stages import KafkaTransport
from hoptrace.workers.handed_out import HandedOut, mark, read_mark
from hoptrace.workers.processing import StageProcessor, undecodable_payload
from hoptrace.workers.stage_consumer import Batch, Committed, ConsumerError, KafkaRecord, Opener, Partition, Subscription

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
RETRY_PAUSE_S = 1.0


def delivery(record: KafkaRecord, redelivered: bool = False) -> Delivery:
    """A Kafka record as a Delivery: JSON object body, raw headers, partition and offset; REDELIVERED when the group had it before."""
    attributes = kafka_position(record.partition, record.offset)
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


class KafkaStageWorker:
    """Consumes one Kafka stage's topic in its consumer group and processes every record."""

    def __init__(
        self, processor: StageProcessor, open_consumer: Opener, group_instance_id: str | None = None, health: HealthFile | None = None
    ) -> None:
        """Consume PROCESSOR's stage through the consumer OPEN_CONSUMER makes (a client's, ``hoptrace.kafka_clients``).

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
        self._done: dict[Partition, int] = {}
        self._sent: dict[Partition, Committed] = {}
        """The offset last sent for each partition: only that one may be sent again when its commit fails."""
        self._acknowledged: dict[Partition, int] = {}
        """The offset the broker last confirmed committing for each partition (``_heal`` compares positions with it)."""
        self.handed_out = HandedOut()
        self.health = health
        client_id = f"hoptrace-{processor.pipeline.name}-{processor.stage.name}"
        self._consumer = open_consumer(Subscription(transport.topic, transport.group, client_id, group_instance_id), self)

    def stop(self) -> None:
        """Ask the loop to finish the record in hand, commit and return. Safe from a signal handler."""
        self._stopping.set()

    def _commit(self, batch: Batch | None = None, wait: bool = False) -> None:
        """Commit what was processed; with BATCH (just polled, about to be processed), mark its records as handed out.

        The commit is sent without waiting for the answer (it is answered during the next poll), unless
        WAIT (stopping). With a batch, when the last commit is still unanswered, this batch goes unmarked
        and what was processed rides on the next commit. Waiting or not changes nothing a crash repeats:
        until the broker answers, the records are processed again either way.
        """
        if batch and self._consumer.commit_unanswered():
            return
        offsets = self.to_commit()
        offsets.update((partition, mark(records[0].offset, records[-1].offset + 1)) for partition, records in batch or ())
        if not offsets:
            return
        self._sent.update(offsets)
        # Cleared before sending: a client may answer earlier commits while sending this one (kafka-python does),
        # and a failure it answers there puts its offsets back to be sent again.
        self._done.clear()
        try:
            self._consumer.commit(offsets, None if wait else self._answered)
        except ConsumerError as error:  # the records are read again: at least once, never lost
            self._answered(offsets, error)

    def to_commit(self) -> dict[Partition, Committed]:
        """The offsets to commit for what was processed, each with a mark saying nothing is handed out past it."""
        return {partition: mark(offset, offset) for partition, offset in self._done.items()}

    def _answered(self, offsets: Mapping[Partition, Committed], error: BaseException | None) -> None:
        """The broker's answer to a commit (called on the polling thread): after a failure its offsets ride on the next commit.

        Unless a partition made progress since (then the newer offset goes), a later commit already carries it (sending
        this older one again would take the group back), or it is no longer assigned; until then a crash repeats those records.
        """
        if error is None:
            self._acknowledged.update((partition, committed.offset) for partition, committed in offsets.items())
            return
        logger.warning("stage %s: commit failed (%s); it is sent again with the next commit", self.processor.stage.name, error)
        assigned = self._consumer.assignment()  # a partition that went to another member is its business now
        for partition, committed in offsets.items():
            if partition in assigned and self._sent.get(partition) is committed:
                self._done.setdefault(partition, committed.offset)

    def revoked(self, partitions: Iterable[Partition], error: BaseException | None) -> None:
        """PARTITIONS went to another member, what was processed committed before (or not: ERROR; the records come again, marked)."""
        if error is not None:
            logger.warning("stage %s: commit before a rebalance failed (%s); records will come again", self.processor.stage.name, error)
        self.lost(partitions)

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """PARTITIONS are this worker's now: their marks are read before their first record; the health file says whether it holds any."""
        partitions = sorted(partitions)
        self.handed_out.assigned(partitions)
        if self.health is not None:  # PARTITIONS are all of them (eager rebalancing) or those added (incremental)
            self.health.ready(bool(partitions) or bool(self._consumer.assignment()))
        logger.info(
            "stage %s: assigned partitions %s", self.processor.stage.name, ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "(none)"
        )

    def lost(self, partitions: Iterable[Partition]) -> None:
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
        if self._consumer.commit_unanswered():
            return
        for partition in self._consumer.assignment():
            position = self._consumer.position(partition)  # None: not known yet, the next idle loop looks again
            if position is not None and self._acknowledged.get(partition) != position:
                self._done[partition] = position
        if self._done:
            self._commit()

    def _learn_marks(self, partitions: Iterable[Partition]) -> None:
        """Read the hand-out marks of newly assigned PARTITIONS before this worker's first commit replaces them."""
        marks: dict[Partition, int] = {}
        for partition in self.handed_out.unlearned(partitions):
            try:
                marks[partition] = read_mark(self._consumer.committed(partition))
            except ConsumerError as error:  # redeliveries go unflagged; processing goes on
                logger.warning("stage %s: could not read the hand-out mark of %s (%s)", self.processor.stage.name, partition, error)
                marks[partition] = -1
        self.handed_out.learn(marks)

    def run(self) -> None:
        """Poll and process until ``stop()``; then commit and close the consumer."""
        try:
            with Owned():  # hoptrace's drop-in instrumentation of the client must not trace this loop again
                self._poll_until_stopped()
        finally:
            try:
                self._commit(wait=True)
            finally:
                self._consumer.close()

    def _poll_until_stopped(self) -> None:
        while not self._stopping.is_set():
            if self.health is not None:
                self.health.beat()
            # With processed records to commit, only take what is already fetched: when nothing is, commit now, then wait.
            batch = self._poll(0 if self._done else POLL_TIMEOUT_S)
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
                        self._seek(later, later_records[0].offset)
                    break

    def _poll(self, timeout_s: float) -> Batch:
        """The next batch; none, after a pause, while Kafka cannot be reached (the consumer's own poll raising an outage is waited out)."""
        try:
            batch = self._consumer.poll(timeout_s)
        except ConsumerError as error:
            if not error.outage:
                raise
            self._kafka_outage.away(self.processor.stage.name, error)
            self._stopping.wait(RETRY_PAUSE_S)
            return []
        self._kafka_outage.back(self.processor.stage.name)
        return batch

    def _seek(self, partition: Partition, offset: int) -> None:
        """Read PARTITION again from OFFSET; when it is no longer this worker's, its next owner reads it from its committed offset."""
        try:
            self._consumer.seek(partition, offset)
        except ConsumerError as error:
            logger.warning("stage %s: %s; the partition's next owner reads those records", self.processor.stage.name, error)

    def _process(self, partition: Partition, records: list[KafkaRecord]) -> bool:
        """Process RECORDS of one partition in order; False when the loop must stop polling this batch."""
        for record in records:
            if self._stopping.is_set():
                self._seek(partition, record.offset)
                return False
            redelivered = self.handed_out.take(partition, record.offset)
            try:
                self.processor.process(delivery(record, redelivered))
            except Exception:  # dead-lettering failed: keep the record, read it again after a pause
                logger.exception("stage %s: could not process or dead-letter offset %d; retrying it", self.processor.stage.name, record.offset)
                self._seek(partition, record.offset)
                self._stopping.wait(RETRY_PAUSE_S)
                return False
            self._done[partition] = record.offset + 1
        return True
