"""Lag in seconds: ``hoptrace.queue.oldest_age`` and ``hoptrace.kafka.consumer.lag_seconds``, against the real Redis and Kafka.

Messages are put in with known ages (a ``hoptrace-sent-at`` header, a record ``timestamp_ms``)
and consumer groups are held back at known offsets; the gauges must report those ages,
read within a few seconds. The sources are built from explicit {queue: attributes} and
{(topic, group): attributes} mappings, the way code without a ``Pipeline`` builds them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import redis
from celery import Celery
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from kombu.transport.redis import Channel

from hoptrace.clients.celery.queue_depth import RedisQueueDepth, sent_at
from hoptrace.clients.kafka_python.group_lag import KafkaConsumerLag
from hoptrace.depth_monitor import DepthMonitor
from hoptrace.gauges.refresher import GaugeRefresher
from hoptrace.pipeline.semconv import CONSUMER_LAG, CONSUMER_LAG_SECONDS, QUEUE_DEPTH, QUEUE_OLDEST_AGE
from hoptrace.pipeline.settings import Settings
from hoptrace.testing import CapturedTelemetry
from tests.test_depth import Points, Retargetable, build_pipeline, celery_app, dead_address, gauge, warnings_of

SLACK_S = 5.0  # a read happens within this long after the messages were put in


def key(attributes: Mapping[str, Any], **more: Any) -> frozenset[tuple[str, Any]]:
    """The point key of ATTRIBUTES plus MORE (dots spelled ``__``)."""
    return frozenset({**attributes, **{name.replace("__", "."): value for name, value in more.items()}}.items())


def assert_age(points: Points, point: frozenset[tuple[str, Any]], expected_s: float) -> None:
    """POINT's age is EXPECTED_S, read at most SLACK_S later (and never before: the timestamps were taken first)."""
    assert point in points, f"no point {sorted(point)} in {points}"
    assert expected_s - 0.01 <= points[point] <= expected_s + SLACK_S, (points[point], expected_s)


def queue_attributes(queue: str) -> dict[str, str]:
    """The attributes a caller without a pipeline gives a queue's points."""
    return {"messaging.system": "celery", "messaging.destination.name": queue, "team": "payments"}


def publish(app: Celery, queue: str, age_s: float | None, priority: int | None = None) -> None:
    """Queue a task on QUEUE whose ``hoptrace-sent-at`` lies AGE_S in the past (no header when None)."""
    headers = {} if age_s is None else {"hoptrace-sent-at": f"{time.time() - age_s:.6f}"}
    app.send_task("lag.seconds", queue=queue, priority=priority, headers=headers)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xfe not json", b"[1, 2]", b'"text"', b'{"headers": null}', b'{"headers": {"hoptrace-sent-at": "soon"}}', b"[" * 100_000]
    + [f'{{"headers": {{"hoptrace-sent-at": {value}}}}}'.encode() for value in ('"nan"', '"inf"', "1700000000", "true", "null", '{"s": 1}')],
)
def test_a_head_without_a_readable_sent_at_has_none(raw: bytes) -> None:
    assert sent_at(raw) is None


def test_sent_at_is_read_from_the_headers_of_a_kombu_message() -> None:
    assert sent_at(b'{"body": "e30=", "headers": {"hoptrace-sent-at": "1700000000.250000"}, "properties": {}}') == 1700000000.25


@pytest.mark.parametrize("global_keyprefix", [False, True], ids=["plain-keys", "global-keyprefix"])
def test_oldest_age_is_the_oldest_head_of_the_priority_lists(
    settings: Settings, redis_prefix: str, captured: CapturedTelemetry, global_keyprefix: bool
) -> None:
    key_prefix = f"{redis_prefix}kombu:" if global_keyprefix else ""
    busy, foreign, empty = (f"{redis_prefix}{name}" for name in ("busy", "foreign", "empty"))
    queues = {queue: queue_attributes(queue) for queue in (busy, foreign, empty)}
    source = RedisQueueDepth(settings.redis_url, queues, key_prefix)
    refresher = GaugeRefresher({"redis": source}, captured.meter_provider)
    with celery_app(settings.redis_url, key_prefix) as app:
        publish(app, busy, 300)  # the head of the plain list: delivered first, the oldest
        publish(app, busy, 10)
        publish(app, busy, 200, priority=9)  # the head of the \x06\x169 list
        publish(app, busy, None, priority=5)  # published by something else: \x06\x163 is skipped
        publish(app, foreign, None)
        client = redis.Redis.from_url(settings.redis_url)
        client.lpush(f"{key_prefix}{foreign}{Channel.sep}6", b"\xff garbage")
        client.close()

        refresher.refresh_once()
        assert gauge(captured, QUEUE_DEPTH)[key(queues[busy], hoptrace__queue__state="ready")] == 4
        ages = gauge(captured, QUEUE_OLDEST_AGE, "s")
        assert set(ages) == {key(queues[busy]), key(queues[empty])}  # the foreign queue's age is unknown: no point
        assert_age(ages, key(queues[busy]), 300)
        assert ages[key(queues[empty])] == 0

        # Workers take the plain list's head first (RPOP): the priority list's head is now the oldest.
        with app.connection_for_read() as connection:
            assert connection.default_channel.basic_get(busy, no_ack=True) is not None
            refresher.refresh_once()
            assert_age(gauge(captured, QUEUE_OLDEST_AGE, "s"), key(queues[busy]), 200)
            while connection.default_channel.basic_get(busy, no_ack=True) is not None:
                pass
    refresher.refresh_once()
    assert gauge(captured, QUEUE_OLDEST_AGE, "s")[key(queues[busy])] == 0
    assert gauge(captured, QUEUE_DEPTH)[key(queues[busy], hoptrace__queue__state="ready")] == 0


def test_redis_down_keeps_the_last_ages_and_warns_once(
    settings: Settings, redis_prefix: str, captured: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hoptrace.gauges.refresher")
    queues = {f"{redis_prefix}q": queue_attributes(f"{redis_prefix}q")}
    source = Retargetable(RedisQueueDepth(settings.redis_url, queues))
    refresher = GaugeRefresher({"redis": source}, captured.meter_provider)
    with celery_app(settings.redis_url) as app:
        publish(app, f"{redis_prefix}q", 100)
    refresher.refresh_once()
    before = gauge(captured, QUEUE_OLDEST_AGE, "s")
    assert_age(before, key(queues[f"{redis_prefix}q"]), 100)

    source.close()
    source.source = RedisQueueDepth(f"redis://{dead_address()}/0", queues)
    for _ in range(3):
        refresher.refresh_once()
    assert gauge(captured, QUEUE_OLDEST_AGE, "s") == before
    assert len(warnings_of(caplog)) == 1 and warnings_of(caplog)[0].startswith("redis does not answer")
    refresher.stop()


def commit(settings: Settings, group: str, offsets: Mapping[TopicPartition, int]) -> None:
    """Commit OFFSETS for GROUP, as a consumer of that group that stopped there does."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=group, enable_auto_commit=False)
    consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
    consumer.close()


def produce(settings: Settings, topic: str, ages_s: Mapping[int, list[float]]) -> None:
    """Records on TOPIC whose timestamps lie AGES_S[partition] in the past, in that order."""
    now = time.time()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    for partition, ages in ages_s.items():
        for age in ages:
            producer.send(topic, b"job", partition=partition, timestamp_ms=int((now - age) * 1000))
    producer.flush()
    producer.close()


def test_lag_seconds_is_the_age_of_the_record_at_the_committed_offset(
    settings: Settings, new_topic: Callable[..., str], unique: str, captured: CapturedTelemetry
) -> None:
    topic = new_topic("held-back", partitions=2)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    behind, caught_up, never = (f"test.{unique}.{name}" for name in ("behind", "caught-up", "never"))
    groups = {(topic, group): {"messaging.consumer.group.name": group, "messaging.destination.name": topic} for group in (behind, caught_up, never)}
    refresher = GaugeRefresher({"kafka": KafkaConsumerLag(settings.kafka_servers, groups)}, captured.meter_provider)
    produce(settings, topic, {0: [60, 50, 40, 30, 20], 1: [90, 80]})
    commit(settings, behind, {p0: 2, p1: 1})
    commit(settings, caught_up, {p0: 5, p1: 2})

    def point(group: str, partition: int) -> frozenset[tuple[str, Any]]:
        """The key of GROUP's point for PARTITION."""
        return key(groups[(topic, group)], messaging__destination__partition__id=str(partition))

    refresher.refresh_once()
    lags = gauge(captured, CONSUMER_LAG)
    assert lags == {point(behind, 0): 3, point(behind, 1): 1, point(caught_up, 0): 0, point(caught_up, 1): 0, point(never, 0): 5, point(never, 1): 2}
    ages = gauge(captured, CONSUMER_LAG_SECONDS, "s")
    assert set(ages) == set(lags)
    for group, partition, expected in ((behind, 0, 40), (behind, 1, 80), (never, 0, 60), (never, 1, 90)):
        assert_age(ages, point(group, partition), expected)
    assert (ages[point(caught_up, 0)], ages[point(caught_up, 1)]) == (0, 0)

    # The group moves on: the next read (the same reader, other offsets) follows it.
    commit(settings, behind, {p0: 4, p1: 2})
    refresher.refresh_once()
    ages = gauge(captured, CONSUMER_LAG_SECONDS, "s")
    assert_age(ages, point(behind, 0), 20)
    assert ages[point(behind, 1)] == 0
    refresher.stop()


def test_a_group_past_the_last_record_of_a_transaction_has_no_age(
    settings: Settings, new_topic: Callable[..., str], unique: str, captured: CapturedTelemetry
) -> None:
    topic, done, never = new_topic("transactional"), f"test.{unique}.done", f"test.{unique}.never"
    groups = {(topic, group): {"messaging.consumer.group.name": group} for group in (done, never)}
    refresher = GaugeRefresher({"kafka": KafkaConsumerLag(settings.kafka_servers, groups)}, captured.meter_provider)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, transactional_id=f"test.{unique}")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"job", timestamp_ms=int((time.time() - 30) * 1000))
    producer.commit_transaction()
    producer.close()
    commit(settings, done, {TopicPartition(topic, 0): 1})  # after the record; the commit marker at offset 1 is all that is left

    refresher.refresh_once()
    done_point, never_point = (key(groups[(topic, group)], messaging__destination__partition__id="0") for group in (done, never))
    assert gauge(captured, CONSUMER_LAG) == {done_point: 1, never_point: 2}  # offsets count the marker
    ages = gauge(captured, CONSUMER_LAG_SECONDS, "s")
    assert ages[done_point] == 0
    assert_age(ages, never_point, 30)
    refresher.stop()


def test_kafka_down_keeps_the_last_lag_seconds_and_warns_once(
    settings: Settings,
    new_topic: Callable[..., str],
    unique: str,
    captured: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hoptrace.gauges.refresher")
    topic, group = new_topic("outage"), f"test.{unique}.group"
    groups = {(topic, group): {"messaging.consumer.group.name": group}}
    source = Retargetable(KafkaConsumerLag(settings.kafka_servers, groups))
    refresher = GaugeRefresher({"kafka": source}, captured.meter_provider)
    produce(settings, topic, {0: [120]})
    refresher.refresh_once()
    before = gauge(captured, CONSUMER_LAG_SECONDS, "s")
    assert_age(before, key(groups[(topic, group)], messaging__destination__partition__id="0"), 120)

    source.close()
    source.source = KafkaConsumerLag([dead_address()], groups)
    for _ in range(3):
        refresher.refresh_once()
    assert gauge(captured, CONSUMER_LAG_SECONDS, "s") == before
    assert len(warnings_of(caplog)) == 1 and warnings_of(caplog)[0].startswith("kafka does not answer")
    refresher.stop()


def test_the_monitor_of_a_pipeline_reports_all_four_gauges(
    settings: Settings, new_topic: Callable[..., str], namespace: str, redis_prefix: str, captured: CapturedTelemetry
) -> None:
    topic, group = new_topic("score"), f"{namespace}score"
    monitor = DepthMonitor(build_pipeline(redis_prefix, topic, group), settings, captured.meter_provider)
    produce(settings, topic, {0: [30, 20]})
    with celery_app(settings.redis_url) as app:
        publish(app, f"{redis_prefix}ingest", 45)
    monitor.refresh_once()

    stage = {"hoptrace.pipeline": "depth", "messaging.system": "celery"}
    ingest = key(stage, hoptrace__stage="ingest", messaging__destination__name=f"{redis_prefix}ingest")
    enrich = key(stage, hoptrace__stage="enrich", messaging__destination__name=f"{redis_prefix}enrich")
    ages = gauge(captured, QUEUE_OLDEST_AGE, "s")
    assert set(ages) == {ingest, enrich} and ages[enrich] == 0
    assert_age(ages, ingest, 45)
    score = {
        "hoptrace.pipeline": "depth",
        "hoptrace.stage": "score",
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.destination.partition.id": "0",
    }
    assert gauge(captured, CONSUMER_LAG) == {key(score): 2}
    lag_seconds = gauge(captured, CONSUMER_LAG_SECONDS, "s")
    assert set(lag_seconds) == {key(score)}
    assert_age(lag_seconds, key(score), 30)
    assert len(gauge(captured, QUEUE_DEPTH)) == 4
    monitor.stop()
