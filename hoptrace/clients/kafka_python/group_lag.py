"""Consumer lag of Kafka consumer groups, in records and in seconds, per partition.

Per read: one metadata request for the partitions of every topic, one ListOffsets for their
end offsets, one for their beginning offsets, and one OffsetFetch for the committed offsets
of every group. Where a group reads next is its committed offset, or the beginning of the
partition when the group has not committed there yet (stage consumers start from the
earliest record) or committed below it (those records are gone). The lag is the end offset
minus that position. The lag in seconds is read, not interpolated: the timestamp of the
record at that position is fetched (``record_times``) when the lag is not 0.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from opentelemetry.metrics import Observation
from opentelemetry.util.types import AttributeValue

from hoptrace.clients.kafka_python.monitor_clients import admin_client
from hoptrace.clients.kafka_python.record_times import RecordTimestamps
from hoptrace.gauges.refresher import GaugeSpec, Reading
from hoptrace.pipeline import semconv
from hoptrace.pipeline.attributes import consumer_attributes
from hoptrace.pipeline.stages import KafkaTransport, Pipeline

LAG = GaugeSpec(semconv.CONSUMER_LAG, "{message}", "Records a consumer group has yet to read, per partition.")
LAG_SECONDS = GaugeSpec(semconv.CONSUMER_LAG_SECONDS, "s", "Age of the oldest record a consumer group has yet to read, per partition.")


class _Position(NamedTuple):
    """Where a group reads next in a partition, and where the partition ends."""

    partition: TopicPartition
    attributes: dict[str, AttributeValue]
    position: int
    end: int


class KafkaConsumerLag:
    """``hoptrace.kafka.consumer.lag`` and ``hoptrace.kafka.consumer.lag_seconds`` of some consumer groups.

    Lag in seconds: now minus the timestamp of the oldest record the group has yet to read
    (the record at its committed offset; the first available record when it never committed),
    read from the broker, not interpolated; as of the read, clamped at 0 against clock skew.
    0 when the group has no lag, or when only transaction markers lie ahead of it. A
    partition whose record carries no timestamp (message format v0) has no point. Both gauges
    come from one read: when the broker does not answer in time, both keep their last values.
    """

    gauges = (LAG, LAG_SECONDS)

    def __init__(
        self,
        bootstrap_servers: Sequence[str],
        groups: Mapping[tuple[str, str], Mapping[str, AttributeValue]],
        timeout_s: float = 1.5,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Read the lag of GROUPS ({(topic, group): attributes of its points}) at BOOTSTRAP_SERVERS, waiting at most TIMEOUT_S per request.

        A point's attributes are its group's plus ``messaging.destination.partition.id``. Fetching the records waits at most TIMEOUT_S too.
        OPTIONS (security) go to every client.
        """
        self._groups = {key: dict(attributes) for key, attributes in groups.items()}
        self._servers = list(bootstrap_servers)
        self._timeout_s = timeout_s
        self._options = dict(options or {})
        self._admin: KafkaAdminClient | None = None
        self._records = RecordTimestamps(bootstrap_servers, timeout_s, self._options)

    @classmethod
    def of_pipeline(
        cls, pipeline: Pipeline, bootstrap_servers: Sequence[str], timeout_s: float = 1.5, options: Mapping[str, Any] | None = None
    ) -> KafkaConsumerLag:
        """The groups of PIPELINE's Kafka stages on their topics, each with its stage's consumer attributes; OPTIONS go to every client."""
        groups = {
            (stage.transport.topic, stage.transport.group): consumer_attributes(pipeline.name, stage)
            for stage in pipeline
            if isinstance(stage.transport, KafkaTransport)
        }
        return cls(bootstrap_servers, groups, timeout_s, options)

    def read(self) -> Reading:
        """Both gauges' points, one per group and partition; raises when the cluster does not answer in time."""
        if not self._groups:
            return {LAG.name: [], LAG_SECONDS.name: []}
        try:
            if self._admin is None:
                self._admin = admin_client(self._servers, self._timeout_s, self._options)
            positions = self._positions(self._admin)
            timestamps = self._records.read({(p.partition, p.position): p.end for p in positions if p.end > p.position})
        except Exception:
            # A client whose broker went away waits out long connection set-up timeouts on
            # every later request; the next read bootstraps a fresh one, bounded by the timeout.
            self.close()
            raise
        now = time.time()
        lags, ages = [], []
        for position in positions:
            attributes = {**position.attributes, semconv.MESSAGING_PARTITION: str(position.partition.partition)}
            lags.append(Observation(max(position.end - position.position, 0), attributes))
            timestamp_ms = timestamps.get((position.partition, position.position))
            if timestamp_ms is None:  # no lag, or nothing but transaction markers left
                ages.append(Observation(0.0, attributes))
            elif timestamp_ms >= 0:
                ages.append(Observation(max(now - timestamp_ms / 1000, 0.0), attributes))
        return {LAG.name: lags, LAG_SECONDS.name: ages}

    def _positions(self, admin: KafkaAdminClient) -> list[_Position]:
        """Where every group reads next in every partition of its topic that the cluster knows (topics not created yet have none)."""
        partitions: dict[str, list[TopicPartition]] = defaultdict(list)
        for topic in admin.describe_topics(sorted({topic for topic, _ in self._groups})):
            for partition in topic["partitions"]:
                partitions[topic["name"]].append(TopicPartition(topic["name"], partition["partition_index"]))
        every = [tp for topic_partitions in partitions.values() for tp in topic_partitions]
        if not every:
            return []
        end = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in every}, timeout_ms=int(self._timeout_s * 1000))
        beginning = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in every}, timeout_ms=int(self._timeout_s * 1000))
        by_group: dict[str, list[TopicPartition]] = defaultdict(list)
        for topic, group in self._groups:
            if topic in partitions:
                by_group[group].extend(partitions[topic])
        committed = admin.list_group_offsets(dict(by_group))
        positions = []
        for (topic, group), attributes in self._groups.items():
            for tp in partitions.get(topic, ()):
                commit = committed.get(group, {}).get(tp)
                position = max(commit.offset if commit is not None else -1, beginning[tp].offset)
                positions.append(_Position(tp, attributes, position, end[tp].offset))
        return positions

    def close(self) -> None:
        """Close the admin client and the record reader (a later read connects new ones)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()
        self._records.close()
