"""Consumer lag of the Kafka stages of a pipeline, read with four admin requests.

Per read: one metadata request for the partitions of every stage topic, one ListOffsets
for their end offsets, one for their beginning offsets, and one OffsetFetch for the
committed offsets of every stage group. The lag of a partition is its end offset minus
where the group reads next: its committed offset, or the beginning of the partition when
the group has not committed there yet (stage consumers start from the earliest record) or
committed below it (those records are gone).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.net.compat import KafkaNetClient
from opentelemetry.metrics import Observation
from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline import semconv
from hoptrace.pipeline.attributes import consumer_attributes
from hoptrace.pipeline.stages import KafkaTransport, Pipeline


class KafkaConsumerLag:
    """Lag per topic, partition and consumer group of every Kafka stage of a pipeline."""

    def __init__(self, pipeline: Pipeline, bootstrap_servers: Sequence[str], timeout_s: float = 1.5) -> None:
        """Read PIPELINE's lag from the cluster at BOOTSTRAP_SERVERS, waiting at most TIMEOUT_S per request."""
        self._stages: dict[str, tuple[str, dict[str, AttributeValue]]] = {
            stage.transport.topic: (stage.transport.group, consumer_attributes(pipeline.name, stage))
            for stage in pipeline
            if isinstance(stage.transport, KafkaTransport)
        }
        self._servers = list(bootstrap_servers)
        self._timeout_ms = int(timeout_s * 1000)
        self._admin: KafkaAdminClient | None = None

    def _connect(self) -> KafkaAdminClient:
        """A new admin client, bootstrapped within the timeout."""
        # KafkaAdminClient starts its IO thread before it bootstraps and does not stop it when
        # bootstrapping fails; keep hold of the network client so that a failure leaks nothing.
        made: list[KafkaNetClient] = []

        def network_client(**configs: Any) -> KafkaNetClient:
            made.append(KafkaNetClient(**configs))
            return made[-1]

        try:
            return KafkaAdminClient(
                bootstrap_servers=self._servers,
                client_id="hoptrace-depth",
                request_timeout_ms=self._timeout_ms,
                bootstrap_timeout_ms=self._timeout_ms,
                kafka_client=network_client,
            )
        except Exception:
            for client in made:
                client.close()
            raise

    def read(self) -> list[Observation]:
        """One observation per stage partition; raises when the cluster does not answer in time."""
        if not self._stages:
            return []
        if self._admin is None:
            self._admin = self._connect()
        try:
            return self._lags(self._admin)
        except Exception:
            # A client whose broker went away waits out long connection set-up timeouts on
            # every later request; the next read bootstraps a fresh one, bounded by the timeout.
            self.close()
            raise

    def _lags(self, admin: KafkaAdminClient) -> list[Observation]:
        """The lag of every partition of the stage topics the cluster knows (topics not created yet have none)."""
        partitions = [
            TopicPartition(topic["name"], partition["partition_index"])
            for topic in admin.describe_topics(list(self._stages))
            for partition in topic["partitions"]
        ]
        if not partitions:
            return []
        end = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions}, timeout_ms=self._timeout_ms)
        beginning = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in partitions}, timeout_ms=self._timeout_ms)
        by_group: dict[str, list[TopicPartition]] = defaultdict(list)
        for tp in partitions:
            by_group[self._stages[tp.topic][0]].append(tp)
        committed = admin.list_group_offsets(dict(by_group))
        observations = []
        for tp in partitions:
            group, attributes = self._stages[tp.topic]
            commit = committed.get(group, {}).get(tp)
            position = max(commit.offset if commit is not None else -1, beginning[tp].offset)
            lag = max(end[tp].offset - position, 0)
            observations.append(Observation(lag, {**attributes, semconv.MESSAGING_PARTITION: str(tp.partition)}))
        return observations

    def close(self) -> None:
        """Close the admin client (a later read bootstraps a new one)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()
