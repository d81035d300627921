"""hoptrace.gauges:  queue depth and consumer lag gauges, against the real Redis and Kafka.

Messages are queued with a real Celery app and a real Kafka producer and consumer; the
gauges are read through ``hoptrace.testing.capture_telemetry``. Outages are real as well: a private
redis-server the test freezes and kills, and Kafka addresses where nothing listens.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from hoptrace.clients.celery.queue_depth import RedisQueueDepth
from hoptrace.clients.kafka_python.group_lag import KafkaConsumerLag
from hoptrace.depth_monitor import DepthMonitor
from hoptrace.gauges.refresher import GaugeSource, GaugeSpec, Reading
from hoptrace.pipeline.semconv import CONSUMER_LAG, QUEUE_DEPTH
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import Pipeline
from hoptrace.testing import CapturedTelemetry
from tests.conftest import free_port
from tests.traces import wait_for

Points = dict[frozenset[tuple[str, Any]], float]


def _unused(payload: Mapping[str, Any], ctx: object) -> None:
    """Handlers never run in these tests."""


def build_pipeline(queue_prefix: str, topic: str, group: str) -> Pipeline:
    """Two Celery stages and one Kafka stage."""
    pipeline = Pipeline("depth")
    pipeline.stage("ingest", celery_queue=f"{queue_prefix}ingest", forwards_to=("enrich",))(_unused)
    pipeline.stage("enrich", celery_queue=f"{queue_prefix}enrich")(_unused)
    pipeline.stage("score", kafka_topic=topic, group=group)(_unused)
    return pipeline.check()


def gauge(captured: CapturedTelemetry, name: str, unit: str = "{message}") -> Points:
    """Collect now; the points of gauge NAME as {attributes: value}, after checking its kind and UNIT."""
    points: Points = {}
    for point in captured.points(name):
        assert (point.kind, point.unit) == ("gauge", unit) and point.value is not None
        points[frozenset(point.attributes.items())] = point.value
    return points


def queue_point(queue_prefix: str, stage: str, state: str, value: int) -> Points:
    """The expected depth point of STAGE's queue in STATE."""
    attributes = {
        "hoptrace.pipeline": "depth",
        "hoptrace.stage": stage,
        "messaging.system": "celery",
        "messaging.destination.name": f"{queue_prefix}{stage}",
        "hoptrace.queue.state": state,
    }
    return {frozenset(attributes.items()): value}


def lag_points(topic: str, group: str, lags: Mapping[int, int]) -> Points:
    """The expected lag points of the ``score`` stage, per partition."""
    points: Points = {}
    for partition, value in lags.items():
        attributes = {
            "hoptrace.pipeline": "depth",
            "hoptrace.stage": "score",
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": group,
            "messaging.destination.partition.id": str(partition),
        }
        points[frozenset(attributes.items())] = value
    return points


def depth_points(queue_prefix: str, ingest: tuple[int, int], enrich: tuple[int, int]) -> Points:
    """The expected depth points: (ready, unacked) of both queues."""
    points: Points = {}
    for stage, (ready, unacked) in (("ingest", ingest), ("enrich", enrich)):
        points |= queue_point(queue_prefix, stage, "ready", ready) | queue_point(queue_prefix, stage, "unacked", unacked)
    return points


@contextmanager
def celery_app(redis_url: str, key_prefix: str = "") -> Iterator[Celery]:
    """A Celery app on REDIS_URL, with kombu's global_keyprefix when KEY_PREFIX is given."""
    app = Celery("depth-test", broker=redis_url, set_as_current=False)
    if key_prefix:
        app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    try:
        yield app
    finally:
        app.close()


def dead_address() -> str:
    """A local host:port where nothing listens."""
    return f"127.0.0.1:{free_port()}"


def warnings_of(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    """The messages pipeline.depth logged at LEVEL."""
    return [record.getMessage() for record in caplog.records if record.name == "hoptrace.gauges.refresher" and record.levelno == level]


def kafka_io_threads() -> int:
    """How many kafka-python IO threads run in this process."""
    return sum(thread.name.startswith("kafka-io") for thread in threading.enumerate())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll CONDITION until it holds; fail saying WHAT did not happen."""
    assert wait_for(condition, timeout, interval=0.05), f"{what} did not happen within {timeout} s"


@pytest.mark.parametrize("global_keyprefix", [False, True], ids=["plain-keys", "global-keyprefix"])
def test_queue_depth_counts_priority_lists_and_unacked(
    settings: Settings, redis_prefix: str, namespace: str, captured: CapturedTelemetry, global_keyprefix: bool
) -> None:
    key_prefix = f"{redis_prefix}kombu:" if global_keyprefix else ""
    pipeline = build_pipeline(redis_prefix, f"{namespace}score", f"{namespace}score")
    monitor = DepthMonitor(pipeline, settings, captured.meter_provider, redis_key_prefix=key_prefix)
    ingest, enrich = f"{redis_prefix}ingest", f"{redis_prefix}enrich"
    with celery_app(settings.redis_url, key_prefix) as app:
        for priority in (None, None, 5, 7, 9):
            app.send_task("depth.ingest", queue=ingest, priority=priority)
        for priority in (None, 4):
            app.send_task("depth.enrich", queue=enrich, priority=priority)
        # The priorities really landed in kombu's priority lists.
        client = redis.Redis.from_url(settings.redis_url)
        keys = {key.decode() for key in client.scan_iter(f"{key_prefix}{ingest}*")}
        client.close()
        assert keys == {f"{key_prefix}{ingest}{suffix}" for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169")}

        monitor.refresh_once()
        assert gauge(captured, QUEUE_DEPTH) == depth_points(redis_prefix, ingest=(5, 0), enrich=(2, 0))

        with app.connection_for_read() as connection:
            fetched = connection.default_channel.basic_get(ingest, no_ack=False)
            assert fetched is not None
            monitor.refresh_once()
            assert gauge(captured, QUEUE_DEPTH) == depth_points(redis_prefix, ingest=(4, 1), enrich=(2, 0))
        # Closing the channel gave the unacknowledged message back to its queue.
        monitor.refresh_once()
        assert gauge(captured, QUEUE_DEPTH) == depth_points(redis_prefix, ingest=(5, 0), enrich=(2, 0))
    assert gauge(captured, CONSUMER_LAG) == {}  # the Kafka stage's topic does not exist


def test_consumer_lag_per_partition_before_and_after_commits(
    settings: Settings, new_topic: Callable[..., str], namespace: str, redis_prefix: str, captured: CapturedTelemetry
) -> None:
    topic, group = new_topic("score", partitions=3), f"{namespace}score"
    monitor = DepthMonitor(build_pipeline(redis_prefix, topic, group), settings, captured.meter_provider)
    produced = {0: 4, 1: 3, 2: 2}
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    for partition, count in produced.items():
        for _ in range(count):
            producer.send(topic, b"job", partition=partition)
    producer.flush()
    producer.close()

    monitor.refresh_once()
    points = gauge(captured, CONSUMER_LAG)
    assert points == lag_points(topic, group, produced)
    assert sum(points.values()) == 9

    # The group reads and commits partitions 0 and 1; partition 2 it never touches.
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    read, deadline = 0, time.monotonic() + 30
    while read < 7 and time.monotonic() < deadline:
        read += sum(len(records) for records in consumer.poll(timeout_ms=500).values())
    consumer.commit()
    consumer.close()
    assert read == 7

    monitor.refresh_once()
    assert gauge(captured, CONSUMER_LAG) == lag_points(topic, group, {0: 0, 1: 0, 2: 2})
    assert gauge(captured, QUEUE_DEPTH) == depth_points(redis_prefix, ingest=(0, 0), enrich=(0, 0))


def test_dead_brokers_report_nothing_and_warn_once(
    redis_prefix: str, namespace: str, captured: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hoptrace.gauges.refresher")
    address = dead_address()
    dead = Settings(kafka_bootstrap=address, redis_url=f"redis://{address}/0")
    monitor = DepthMonitor(build_pipeline(redis_prefix, f"{namespace}score", f"{namespace}score"), dead, captured.meter_provider)
    threads_before = kafka_io_threads()

    for _ in range(3):
        started = time.monotonic()
        monitor.refresh_once()
        assert time.monotonic() - started < 5

    started = time.monotonic()
    assert (gauge(captured, QUEUE_DEPTH), gauge(captured, CONSUMER_LAG)) == ({}, {})
    assert time.monotonic() - started < 1
    assert (monitor.values(QUEUE_DEPTH), monitor.values(CONSUMER_LAG)) == ((), ())
    assert sorted(message.split(" does not answer")[0] for message in warnings_of(caplog)) == ["job ledger", "kafka", "redis"]
    assert kafka_io_threads() == threads_before  # failed bootstraps leave no IO thread behind
    monitor.stop()


class PrivateRedis:
    """A redis-server of this test alone, on a port of its own, that the test may freeze, kill and restart."""

    def __init__(self, workdir: Path) -> None:
        """Pick a free port; start with ``start()``."""
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start an empty server and wait until it answers PING."""
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed"
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self._workdir)]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        wait_until(lambda: self._answers(client), 10, "the private redis-server answering")
        client.close()

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started private redis-server, killed after the test."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def test_redis_outage_keeps_last_values_and_never_blocks_collection(
    settings: Settings,
    private_redis: PrivateRedis,
    redis_prefix: str,
    namespace: str,
    captured: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hoptrace.gauges.refresher")
    pipeline = build_pipeline(redis_prefix, f"{namespace}score", f"{namespace}score")
    # A long timeout: a refresh stuck on the frozen server lasts seconds, collection must not.
    depth = RedisQueueDepth.of_pipeline(pipeline, private_redis.url, timeout_s=2.0)
    monitor = DepthMonitor(pipeline, settings, captured.meter_provider, interval_s=0.05, redis=depth)
    with celery_app(private_redis.url) as app:
        for _ in range(3):
            app.send_task("depth.ingest", queue=f"{redis_prefix}ingest")
    monitor.refresh_once()
    before = depth_points(redis_prefix, ingest=(3, 0), enrich=(0, 0))
    assert gauge(captured, QUEUE_DEPTH) == before

    private_redis.freeze()
    monitor.start()
    try:
        time.sleep(0.3)  # the refresher now waits on the frozen server
        started = time.monotonic()
        points = gauge(captured, QUEUE_DEPTH)
        assert time.monotonic() - started < 1
        assert points == before
        assert warnings_of(caplog) == []  # the refresh is still under way

        private_redis.kill()
        wait_until(lambda: len(warnings_of(caplog)) == 1, 10, "the outage warning")
        time.sleep(0.5)  # ten more failed refreshes
        assert len(warnings_of(caplog)) == 1 and warnings_of(caplog)[0].startswith("redis does not answer")
        assert gauge(captured, QUEUE_DEPTH) == before

        private_redis.start()  # the same address, empty
        after = depth_points(redis_prefix, ingest=(0, 0), enrich=(0, 0))
        wait_until(lambda: gauge(captured, QUEUE_DEPTH) == after, 10, "recovery")
        assert warnings_of(caplog, logging.INFO) == ["redis answers again; its gauges are current"]
    finally:
        monitor.stop()


class Retargetable:
    """A source the test points at another cluster mid-run: a Kafka outage without stopping the shared broker."""

    def __init__(self, source: GaugeSource) -> None:
        """Read from SOURCE until ``source`` is replaced."""
        self.source = source

    @property
    def gauges(self) -> Sequence[GaugeSpec]:
        """The current source's gauges."""
        return self.source.gauges

    def read(self) -> Reading:
        """What the current source reads."""
        return self.source.read()

    def close(self) -> None:
        """Close the current source."""
        self.source.close()


def test_kafka_outage_keeps_last_values_and_warns_once(
    settings: Settings,
    new_topic: Callable[..., str],
    namespace: str,
    redis_prefix: str,
    captured: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hoptrace.gauges.refresher")
    topic, group = new_topic("score", partitions=3), f"{namespace}score"
    pipeline = build_pipeline(redis_prefix, topic, group)
    real = KafkaConsumerLag.of_pipeline(pipeline, settings.kafka_servers)
    lag = Retargetable(real)
    monitor = DepthMonitor(pipeline, settings, captured.meter_provider, kafka=lag)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers)
    for partition in (0, 1, 2, 2):
        producer.send(topic, b"job", partition=partition)
    producer.flush()
    producer.close()
    monitor.refresh_once()
    before = lag_points(topic, group, {0: 1, 1: 1, 2: 2})
    assert gauge(captured, CONSUMER_LAG) == before

    real.close()
    lag.source = KafkaConsumerLag.of_pipeline(pipeline, [dead_address()])
    for _ in range(3):
        started = time.monotonic()
        monitor.refresh_once()
        assert time.monotonic() - started < 5
    started = time.monotonic()
    assert gauge(captured, CONSUMER_LAG) == before
    assert time.monotonic() - started < 1
    assert len(warnings_of(caplog)) == 1 and warnings_of(caplog)[0].startswith("kafka does not answer")

    lag.source.close()
    lag.source = real
    monitor.refresh_once()
    assert gauge(captured, CONSUMER_LAG) == before
    assert warnings_of(caplog, logging.INFO) == ["kafka answers again; its gauges are current"]
    monitor.stop()
