"""A Kafka stage's consumer on kafka-python (``stage_consumer.StageConsumer``).

kafka-python answers commits sent with ``commit_async`` during a later poll (or inside the next
``commit_async``), on the polling thread; its rebalance listener runs on the client's IO loop,
where a blocking ``commit()`` raises, so the commit before a revocation is awaited there.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from kafka.future import Future

from hoptrace.clients.kafka_python.options import kafka_client_options
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
    Opener,
    Partition,
    Rebalance,
    Subscription,
)


def _offsets(offsets: Mapping[Partition, Committed]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition(*partition): OffsetAndMetadata(committed.offset, committed.metadata, -1) for partition, committed in offsets.items()}


class _Listener(AsyncConsumerRebalanceListener):
    """Tells the loop of rebalances; runs on kafka-python's IO loop."""

    def __init__(self, consumer: KafkaPythonConsumer, rebalance: Rebalance) -> None:
        self._consumer = consumer
        self._rebalance = rebalance

    async def on_partitions_revoked(self, revoked: Any) -> None:
        offsets = self._rebalance.to_commit()
        error: KafkaError | None = None
        if offsets:
            try:
                await self._consumer.client.commit_async(_offsets(offsets))
            except KafkaError as failed:
                error = failed
        self._rebalance.revoked(revoked, error)

    async def on_partitions_lost(self, lost: Any) -> None:
        self._rebalance.lost(lost)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._rebalance.assigned(assigned)


class KafkaPythonConsumer:
    """A ``KafkaConsumer`` subscribed to a stage's topic, without auto-commit, starting at the earliest record."""

    def __init__(self, servers: list[str], options: Mapping[str, Any], subscription: Subscription, rebalance: Rebalance) -> None:
        """Join SUBSCRIPTION on SERVERS, OPTIONS (``kafka_client_options``, or any kafka-python setting) over hoptrace's own."""
        config: dict[str, Any] = {
            "bootstrap_servers": servers,
            "group_id": subscription.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "client_id": subscription.client_id,
            "metadata_max_age_ms": METADATA_MAX_AGE_MS,
            "max_poll_records": MAX_POLL_RECORDS,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            "group_instance_id": subscription.group_instance_id,
        }
        try:
            self.client = KafkaConsumer(**{**config, **options})
        except KafkaError as error:
            raise ConsumerError.of(error) from error
        self.client.subscribe([subscription.topic], listener=_Listener(self, rebalance))
        self._unanswered: Future | None = None

    def poll(self, timeout_s: float) -> Batch:
        """At most ``MAX_POLL_RECORDS`` records, per partition."""
        try:
            return list(self.client.poll(timeout_ms=int(timeout_s * 1000)).items())
        except KafkaError as error:
            raise ConsumerError.of(error) from error

    def commit(self, offsets: Mapping[Partition, Committed], answered: Answered | None = None) -> None:
        """Commit OFFSETS, waiting without ANSWERED; else ``commit_async``, whose answer ANSWERED gets with the same OFFSETS."""
        try:
            if answered is None:
                self.client.commit(_offsets(offsets))
                return
            self._unanswered = self.client.commit_async(
                _offsets(offsets), callback=lambda _, response: answered(offsets, response if isinstance(response, BaseException) else None)
            )
        except KafkaError as error:
            raise ConsumerError.of(error) from error

    def commit_unanswered(self) -> bool:
        """Whether the last ``commit_async`` has no answer yet."""
        return self._unanswered is not None and not self._unanswered.is_done

    def seek(self, partition: Partition, offset: int) -> None:
        """Read PARTITION from OFFSET at the next poll."""
        try:
            self.client.seek(TopicPartition(*partition), offset)
        except ValueError as error:  # kafka-python's answer for a partition no longer assigned
            raise ConsumerError(f"cannot seek {partition.topic}[{partition.partition}]: {error}", outage=False) from error

    def assignment(self) -> set[Partition]:
        """The partitions this member holds."""
        return set(self.client.assignment())

    def position(self, partition: Partition) -> int | None:
        """The consumer's position in PARTITION, without a request to the broker."""
        try:
            return self.client.position(TopicPartition(*partition), timeout_ms=0)  # type: ignore[no-any-return]
        except KafkaError:
            return None

    def committed(self, partition: Partition) -> Committed | None:
        """The group's committed offset of PARTITION with its metadata."""
        try:
            found = self.client.committed(TopicPartition(*partition), metadata=True)
        except KafkaError as error:
            raise ConsumerError.of(error) from error
        return None if found is None else Committed(found.offset, found.metadata or "")

    def close(self) -> None:
        """Leave the group without committing."""
        self.client.close(autocommit=False)


def opener(settings: Settings) -> Opener:
    """How stage consumers are made on kafka-python, configured from SETTINGS."""
    return partial(KafkaPythonConsumer, settings.kafka_servers, kafka_client_options(settings))
