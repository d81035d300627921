"""The command line's few cluster-wide Kafka requests, made with kafka-python's admin client: describe the cluster, create and delete topics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from hoptrace.clients.kafka_python.options import kafka_client_options
from hoptrace.pipeline.settings import Settings


class AdminFailed(Exception):
    """A cluster request failed; the message says which and why."""


class Cluster(NamedTuple):
    """What the cluster says of itself."""

    version: str
    brokers: int
    cluster_id: str


@contextmanager
def _admin(settings: Settings, client_id: str, timeout_s: float | None = None) -> Iterator[KafkaAdminClient]:
    timeouts = {} if timeout_s is None else {"request_timeout_ms": int(timeout_s * 1000), "bootstrap_timeout_ms": int(timeout_s * 1000)}
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id=client_id, **{**kafka_client_options(settings), **timeouts})
    except KafkaError as error:
        raise AdminFailed(f"no broker answers: {error}") from error
    try:
        yield admin
    finally:
        admin.close()


def describe_cluster(settings: Settings, timeout_s: float) -> Cluster:
    """The cluster of SETTINGS' bootstrap servers, each request waiting at most TIMEOUT_S; ``AdminFailed`` saying what failed."""
    with _admin(settings, "hoptrace-status", timeout_s) as admin:
        try:
            cluster = admin.describe_cluster()
            broker_id = cluster["brokers"][0]["broker_id"]
            return Cluster(admin.get_broker_version_data(broker_id).broker_version_str, len(cluster["brokers"]), cluster["cluster_id"])
        except (KafkaError, IndexError, KeyError) as error:
            raise AdminFailed(f"metadata request failed: {error!r}") from error


def create_topics(settings: Settings, topics: Sequence[str], client_id: str) -> None:
    """Create TOPICS (one partition each), waiting until their metadata is known."""
    with _admin(settings, client_id) as admin:
        admin.create_topics([NewTopic(topic, 1, 1) for topic in topics], wait_for_metadata=True)


def delete_topics(settings: Settings, topics: Sequence[str], client_id: str) -> None:
    """Delete those of TOPICS that exist."""
    with _admin(settings, client_id) as admin:
        existing = set(admin.list_topics())
        admin.delete_topics([topic for topic in topics if topic in existing])
