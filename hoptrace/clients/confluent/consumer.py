"""A Kafka stage's consumer on confluent-kafka (librdkafka; ``stage_consumer.StageConsumer``), chosen by ``HOPTRACE_KAFKA_CLIENT``.

librdkafka answers a commit sent asynchronously through the ``on_commit`` callback inside a later
``consume()`` (a commit made waiting gets no callback); its rebalance callbacks run inside
``consume()`` on the polling thread, so the commit before a revocation is made there, waiting. It
reconnects by itself: a broker away shows as polls that return nothing while its ``error_cb`` hears
that the brokers are down; a poll that returns nothing after that raises it as an outage, so the
loop says once that Kafka is away, and again when it answers. librdkafka's own log lines go to the
``librdkafka`` logger. The plain client class is used, so hoptrace's drop-in instrumentation of
confluent-kafka never sees these calls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.cimpl import Consumer

from hoptrace.clients.confluent.options import confluent_client_options
from hoptrace.pipeline.outages import is_outage
from hoptrace.pipeline.settings import Settings
from hoptrace.workers.stage_consumer import (
    HEARTBEAT_INTERVAL_MS,
    MAX_POLL_RECORDS,
    METADATA_MAX_AGE_MS,
    SESSION_TIMEOUT_MS,
    Answered,
    Batch,
    Committed,
    ConsumerError,
    KafkaRecord,
    Opener,
    Partition,
    Rebalance,
    Subscription,
)

logger = logging.getLogger(__name__)

COMMITTED_TIMEOUT_S = 5.0
"""Longest wait for the group's committed offsets of a newly assigned partition."""


class _Record(NamedTuple):
    """A confluent-kafka message as the loop reads records (its fields are methods there)."""

    partition: int
    offset: int
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None


def _partitions(partitions: list[TopicPartition]) -> list[Partition]:
    return [Partition(tp.topic, tp.partition) for tp in partitions]


def _offsets(offsets: Mapping[Partition, Committed]) -> list[TopicPartition]:
    return [TopicPartition(partition.topic, partition.partition, committed.offset, committed.metadata) for partition, committed in offsets.items()]


class ConfluentConsumer:
    """A confluent-kafka ``Consumer`` subscribed to a stage's topic, without auto-commit, starting at the earliest record."""

    def __init__(
        self, servers: list[str], options: Mapping[str, Any], connect_timeout_s: float, subscription: Subscription, rebalance: Rebalance
    ) -> None:
        """Join SUBSCRIPTION on SERVERS, OPTIONS (``confluent_client_options``, or any librdkafka setting) over hoptrace's own.

        Fails (``ConsumerError``) when the cluster does not answer within CONNECT_TIMEOUT_S or refuses the credentials.
        """
        config: dict[str, Any] = {
            "bootstrap.servers": ",".join(servers),
            "group.id": subscription.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "client.id": subscription.client_id,
            "topic.metadata.refresh.interval.ms": METADATA_MAX_AGE_MS,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "on_commit": self._on_commit,
            "error_cb": self._on_error,
            "logger": logging.getLogger("librdkafka"),
        }
        if subscription.group_instance_id is not None:
            config["group.instance.id"] = subscription.group_instance_id
        self._rebalance = rebalance
        self._answers: list[tuple[Mapping[Partition, Committed], Answered]] = []
        self._away: KafkaException | None = None
        try:
            self.client = Consumer({**config, **options})
        except KafkaException as error:
            raise ConsumerError(f"librdkafka refused the consumer's settings: {error}", outage=False) from error
        try:
            self.client.list_topics(subscription.topic, timeout=connect_timeout_s)
            self.client.subscribe([subscription.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        except KafkaException as error:
            self.client.close()
            raise ConsumerError.of(error) from error

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Answer the commit sent with the offsets PARTITIONS hold (librdkafka may answer a later one first)."""
        reported = {(tp.topic, tp.partition): tp.offset for tp in partitions}
        for index, (offsets, answered) in enumerate(self._answers):
            if {tuple(partition): committed.offset for partition, committed in offsets.items()} == reported:
                del self._answers[index]
                failed = error or next((tp.error for tp in partitions if tp.error is not None), None)
                answered(offsets, None if failed is None else KafkaException(failed))
                return

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's errors that are not about one message (``error_cb``)."""
        self._event(KafkaException(error))

    def _event(self, event: KafkaException) -> None:
        """An error librdkafka reports besides the records: the brokers being away is kept for the next poll that brings none."""
        if is_outage(event):
            self._away = event
        else:
            logger.warning("stage consumer: %s", event)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalance.assigned(_partitions(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        offsets = self._rebalance.to_commit()
        error: KafkaException | None = None
        if offsets:
            try:
                self.client.commit(offsets=_offsets(offsets), asynchronous=False)
            except KafkaException as failed:
                error = failed
        self._rebalance.revoked(_partitions(partitions), error)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalance.lost(_partitions(partitions))

    def poll(self, timeout_s: float) -> Batch:
        """At most ``MAX_POLL_RECORDS`` records, per partition; events (a topic not there yet) are logged, not records."""
        try:
            messages = self.client.consume(MAX_POLL_RECORDS, timeout_s)
        except KafkaException as error:
            raise ConsumerError.of(error) from error
        batch: dict[Partition, list[KafkaRecord]] = {}
        for message in messages:
            error = message.error()
            if error is None:
                record = _Record(message.partition(), message.offset(), message.value(), message.headers())
                batch.setdefault(Partition(message.topic(), record.partition), []).append(record)
            elif error.fatal():
                raise ConsumerError.of(KafkaException(error))
            else:
                self._event(KafkaException(error))
        away, self._away = self._away, None
        if away is not None and not batch:  # the loop waits it out, said once per outage
            raise ConsumerError.of(away)
        return list(batch.items())

    def commit(self, offsets: Mapping[Partition, Committed], answered: Answered | None = None) -> None:
        """Commit OFFSETS, waiting without ANSWERED; else asynchronously, the answer going to ANSWERED with the same OFFSETS."""
        try:
            self.client.commit(offsets=_offsets(offsets), asynchronous=answered is not None)
        except KafkaException as error:
            raise ConsumerError.of(error) from error
        if answered is not None:
            self._answers.append((offsets, answered))

    def commit_unanswered(self) -> bool:
        """Whether a commit sent asynchronously has no answer yet."""
        return bool(self._answers)

    def seek(self, partition: Partition, offset: int) -> None:
        """Read PARTITION from OFFSET at the next poll."""
        try:
            self.client.seek(TopicPartition(partition.topic, partition.partition, offset))
        except KafkaException as error:
            raise ConsumerError.of(error) from error

    def assignment(self) -> set[Partition]:
        """The partitions this member holds."""
        return set(_partitions(self.client.assignment()))

    def position(self, partition: Partition) -> int | None:
        """The consumer's position in PARTITION, from librdkafka's local state."""
        try:
            (found,) = self.client.position([TopicPartition(partition.topic, partition.partition)])
        except KafkaException:  # not known here now: asked again at the next idle loop
            return None
        return found.offset if found.offset >= 0 else None

    def committed(self, partition: Partition) -> Committed | None:
        """The group's committed offset of PARTITION with its metadata."""
        try:
            (found,) = self.client.committed([TopicPartition(partition.topic, partition.partition)], timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as error:
            raise ConsumerError.of(error) from error
        return None if found.offset < 0 else Committed(found.offset, found.metadata or "")

    def close(self) -> None:
        """Leave the group without committing (auto-commit is off)."""
        self.client.close()


def opener(settings: Settings) -> Opener:
    """How stage consumers are made on confluent-kafka, from SETTINGS (failing when the cluster does not answer within the connect timeout)."""
    return partial(ConfluentConsumer, settings.kafka_servers, confluent_client_options(settings), settings.kafka_connect_timeout_s)
