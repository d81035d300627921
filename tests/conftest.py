"""Session fixtures: real Kafka and Redis, started through deploy/local when they are down.

Each test gets its own Kafka topic names and Redis key prefix, removed afterwards. Services
the suite started are stopped at the end; services that were already up are left alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from hoptrace import services
from pipeline.settings import Settings


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings pointing at healthy local services."""
    settings = Settings()
    were_up = {item.name for item in services.status(settings) if item.healthy}
    services.run("up", settings)
    unhealthy = [item for item in services.status(settings) if not item.healthy]
    assert not unhealthy, f"services did not come up: {unhealthy}"
    yield settings
    started = tuple(name for name in services.SERVICE_NAMES if name not in were_up)
    if started:
        services.run("down", settings, started)


@pytest.fixture(scope="session")
def kafka_admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    """An admin client of the local broker."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="hoptrace-tests")
    yield admin
    admin.close()


@pytest.fixture
def unique() -> str:
    """A short name unique to this test, for topics, groups, queues and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def new_topic(kafka_admin: KafkaAdminClient, unique: str) -> Iterator[Callable[..., str]]:
    """Create Kafka topics for this test (``new_topic("name", partitions=3)``); delete them after."""
    created: list[str] = []

    def create(name: str = "topic", partitions: int = 1) -> str:
        topic = f"test.{unique}.{name}"
        kafka_admin.create_topics([NewTopic(topic, partitions, 1)], wait_for_metadata=True)
        created.append(topic)
        return topic

    yield create
    if created:
        kafka_admin.delete_topics(created)


@pytest.fixture
def redis_prefix(settings: Settings, unique: str) -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted after the test."""
    prefix = f"test:{unique}:"
    yield prefix
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
