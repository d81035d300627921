"""Redeliveries are visible, and only real ones happen: ``hoptrace.redelivered`` on the process span, ``hoptrace.stage.redeliveries`` counted.

Real ``hoptrace worker`` processes of ``tests.faults.pipelines:slow`` on the local Kafka and
Redis. The Celery tests use a Redis database of their own: kombu's unacked index is one per
database, and their 2 s visibility timeout would take the messages of other tests' workers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from celery import Celery
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kombu import Connection

from hoptrace.clients.celery import redis_fetch
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.receiver import OtlpReceiver
from hoptrace.workers.handed_out import HandedOut, mark, read_mark
from hoptrace.workers.membership import claim
from hoptrace.workers.stage_consumer import Committed, Partition
from tests.conftest import KAFKA_CLIENTS, delete_keys, run_hoptrace
from tests.memory_store import TelemetryStore
from tests.processes import own_tracebacks
from tests.traces import latest_totals, slow_outbox, wait_for

SLOW = "tests.faults.pipelines:slow"
REDIS_DB = 9
VISIBILITY_TIMEOUT_S = 2.0
LONG_VISIBILITY_TIMEOUT_S = 60.0
"""For the test that messages come back sooner than any visibility timeout would bring them."""

pytestmark = pytest.mark.usefixtures("namespace_cleanup")


@pytest.fixture
def slow_env(hoptrace_env: dict[str, str], namespace: str) -> Iterator[dict[str, str]]:
    """hoptrace_env on a Redis database of these tests, with a 2 s visibility timeout; the database's keys of this test removed after."""
    url = urlunsplit(urlsplit(hoptrace_env["HOPTRACE_REDIS_URL"])._replace(path=f"/{REDIS_DB}"))
    yield {**hoptrace_env, "HOPTRACE_REDIS_URL": url, "HOPTRACE_CELERY_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)}
    delete_keys(url, f"*{namespace}*")


def _send_tasks(env: dict[str, str], namespace: str, payloads: list[dict[str, object]]) -> None:
    app = Celery("redelivery-test", broker=env["HOPTRACE_REDIS_URL"], set_as_current=False)
    try:
        for payload in payloads:
            app.send_task("hoptrace.slow.work", args=(payload,), queue=f"{namespace}slow.work")
    finally:
        app.close()


def _process_spans(store: TelemetryStore, destination: str) -> list[ReceivedSpan]:
    return [span for span in store.spans() if span.name == f"process {destination}"]


def _redeliveries(store: TelemetryStore, stage: str) -> float:
    return latest_totals(store.metrics("hoptrace.stage.redeliveries"), {"hoptrace.stage": stage})


# --- Celery ------------------------------------------------------------------------------------


def test_a_task_running_longer_than_the_visibility_timeout_is_not_taken_by_another_live_worker(
    namespace: str, slow_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    work = (SLOW, "--no-monitor", "--stage", "work")
    with hoptrace_worker(*work, env=slow_env), hoptrace_worker(*work, env=slow_env) as other:
        _send_tasks(slow_env, namespace, [{"order_id": "long", "sleep_s": 3 * VISIBILITY_TIMEOUT_S}])
        assert wait_for(lambda: len(slow_outbox(slow_env, namespace)) >= 1, timeout=30), other.output()
        time.sleep(2 * VISIBILITY_TIMEOUT_S)  # a second copy would be running by now
    assert [note["order_id"] for note in slow_outbox(slow_env, namespace)] == ["long"]
    (span,) = _process_spans(store, f"{namespace}slow.work")
    assert "hoptrace.redelivered" not in span.attributes
    assert _redeliveries(store, "work") == 0


ORDERS = [f"o{n}" for n in range(4)]


def _kill_while_holding_four(env: dict[str, str], namespace: str, hoptrace_worker: Callable) -> tuple[int, float, int]:
    """Start a one-process worker, give it ORDERS (one runs, three wait prefetched), kill it -9; its pid, when, and how many were done."""
    with hoptrace_worker(SLOW, "--no-monitor", "--stage", "work", "--concurrency", "1", env=env) as doomed:
        _send_tasks(env, namespace, [{"order_id": order, "sleep_s": 1.5} for order in ORDERS])
        assert wait_for(lambda: doomed.output().count("Task hoptrace.slow.work[") >= len(ORDERS), timeout=30), doomed.output()
        os.kill(doomed.popen.pid, signal.SIGKILL)
        return doomed.popen.pid, time.monotonic(), len(slow_outbox(env, namespace))


def _all_done(env: dict[str, str], namespace: str) -> bool:
    return set(ORDERS) <= {note["order_id"] for note in slow_outbox(env, namespace)}


def test_the_messages_of_a_killed_celery_worker_come_back_within_seconds_marked_redelivered(
    namespace: str, slow_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    doomed, killed_at, _ = _kill_while_holding_four(slow_env, namespace, hoptrace_worker)
    # Its slot is taken, as by a worker on another host: the survivor's visibility sweep, not a put-back, brings them back.
    slot = claim(f"celery:{namespace}slow", "celery")
    try:
        with hoptrace_worker(SLOW, "--no-monitor", "--stage", "work", "--concurrency", "2", env=slow_env) as other:
            assert wait_for(lambda: _all_done(slow_env, namespace), timeout=30), other.output()
            recovered_s = time.monotonic() - killed_at
    finally:
        slot.lock.close()
    assert "put back" not in other.output()
    assert recovered_s < VISIBILITY_TIMEOUT_S + 10, recovered_s
    redelivered = [span for span in _process_spans(store, f"{namespace}slow.work") if span.attributes.get("hoptrace.redelivered") is True]
    assert len(redelivered) >= 3, [span.attributes for span in _process_spans(store, f"{namespace}slow.work")]
    assert {span.resource["process.pid"] for span in redelivered}.isdisjoint({doomed})
    assert _redeliveries(store, "work") == len(redelivered)


def test_a_celery_worker_replacing_a_killed_one_puts_back_what_it_held_at_once_not_after_the_visibility_timeout(
    namespace: str, slow_env: dict[str, str], hoptrace_worker: Callable
) -> None:
    env = {**slow_env, "HOPTRACE_CELERY_VISIBILITY_TIMEOUT_S": str(LONG_VISIBILITY_TIMEOUT_S)}
    _, killed_at, done_before = _kill_while_holding_four(env, namespace, hoptrace_worker)
    with hoptrace_worker(SLOW, "--no-monitor", "--stage", "work", "--concurrency", "2", env=env) as heir:
        assert wait_for(lambda: _all_done(env, namespace), timeout=30), heir.output()
        recovered_s = time.monotonic() - killed_at
    assert f"put back {len(ORDERS) - done_before} messages held before this connection or process" in heir.output(), heir.output()
    assert recovered_s < LONG_VISIBILITY_TIMEOUT_S / 2, recovered_s


@pytest.mark.parametrize(("transport", "kept"), [("kombu.transport.redis:Transport", False), (redis_fetch.TRANSPORT, True)])
def test_a_message_fetched_by_a_worker_that_dies_before_reading_it_survives_only_the_one_step_fetch(
    namespace: str, slow_env: dict[str, str], transport: str, kept: bool
) -> None:
    url = slow_env["HOPTRACE_REDIS_URL"]
    client = redis.Redis.from_url(url)
    with Connection(url, transport=transport) as connection:
        simple = connection.SimpleQueue(f"{namespace}fetch")
        simple.put({"n": 1})
        queue = simple.queue
        assert client.llen(queue.name) == 1
        consumer = connection.Consumer(queue, callbacks=[lambda body, message: None])
        consumer.consume()
        channel = consumer.channel
        connection.transport.cycle._client_registered(channel, channel.client, "BRPOP")  # as the poller does: a connection to fetch on
        channel.client.connection.connect()
        channel._brpop_start()  # the fetch is sent, and the worker dies before it reads the reply
        channel.client.connection.disconnect()
        assert wait_for(lambda: client.llen(queue.name) == 0, timeout=5)
        tags = [tag for tag, entry in client.hgetall("unacked").items() if namespace.encode() in entry]
    assert (len(tags) == 1) is kept, tags
    assert all(client.zscore("unacked_index", tag) is not None for tag in tags)
    for tag in tags:
        client.hdel("unacked", tag)
        client.zrem("unacked_index", tag)
    client.close()


def test_a_channel_closing_after_its_fetch_lost_the_connection_closes_and_puts_back_what_it_took(namespace: str, slow_env: dict[str, str]) -> None:
    """Closing reads the reply of the fetch in flight first: a lost connection must not stop the close there.

    It did: the close raised, Celery released the transport, and closed the channel again to put its unacknowledged messages
    back through the released transport: an AttributeError, "Unrecoverable error", the worker stopped (the fault suite's
    Redis restarts).
    """
    url = slow_env["HOPTRACE_REDIS_URL"]
    client = redis.Redis.from_url(url)
    with Connection(url, transport=redis_fetch.TRANSPORT, transport_options={redis_fetch.WAIT_OPTION: 30}) as connection:
        simple = connection.SimpleQueue(f"{namespace}fetch")
        simple.put({"n": 1})
        queue = simple.queue
        consumer = connection.Consumer(queue, callbacks=[lambda body, message: None])  # taken, never acknowledged
        consumer.consume()
        connection.drain_events(timeout=5)
        assert client.llen(queue.name) == 0
        channel = consumer.channel
        channel._idle_until = time.monotonic() + 60  # the next poll is the idle wait: a blocking command in flight
        channel._brpop_start()
        here = "%s:%d" % channel.client.connection._sock.getsockname()  # noqa: SLF001, UP031 - the polling connection's own address

        def polling() -> list[str]:
            return [entry["id"] for entry in client.client_list() if entry["addr"] == here and entry["cmd"] == "blpop"]

        assert wait_for(lambda: len(polling()) == 1, timeout=5), client.client_list()
        client.client_kill_filter(_id=polling()[0])  # the connection is lost with the poll in flight
        channel.close()
        assert channel.closed
    assert client.llen(queue.name) == 1  # the message the channel had taken is back on its queue
    assert not [tag for tag, entry in client.hgetall("unacked").items() if namespace.encode() in entry]
    client.close()


# --- Kafka -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_records_a_killed_kafka_stage_held_are_marked_redelivered_and_a_clean_stop_leaves_no_mark(
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    kafka_admin: KafkaAdminClient,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    topic = f"{namespace}slow.in"
    kafka_admin.create_topics([NewTopic(topic, 1, 1)])

    def publish(count: int, prefix: str) -> None:
        payload = json.dumps({"order_id": f"{prefix}{{n}}", "sleep_s": 0.3})
        run_hoptrace(hoptrace_env, "publish", SLOW, "take", "--count", str(count), "--payload", payload)

    def offsets(redelivered: bool) -> list[int]:
        marked = [span for span in _process_spans(store, topic) if span.attributes.get("hoptrace.redelivered", False) == redelivered]
        return sorted(span.attributes["messaging.kafka.offset"] for span in marked)

    publish(10, "a")  # before the worker starts: its first poll takes all ten
    with hoptrace_worker(SLOW, "--no-monitor", "--stage", "take", ready="assigned partitions") as doomed:
        assert wait_for(lambda: len(slow_outbox(hoptrace_env, namespace)) >= 2, timeout=30), doomed.output()
        os.kill(doomed.popen.pid, signal.SIGKILL)
    with hoptrace_worker(SLOW, "--no-monitor", "--stage", "take", ready="assigned partitions") as heir:
        # The same host's next slot is the dead member's: it gets the partition at once.
        assert wait_for(lambda: len({note["order_id"] for note in slow_outbox(hoptrace_env, namespace)}) == 10, timeout=20), heir.output()
    # The dead worker held the whole batch (offsets 0-9): every one of them came again, marked.
    assert offsets(redelivered=True) == list(range(10))
    assert _redeliveries(store, "take") == 10

    with hoptrace_worker(SLOW, "--no-monitor", "--stage", "take", ready="assigned partitions") as successor:
        publish(2, "b")
        assert wait_for(lambda: len({note["order_id"] for note in slow_outbox(hoptrace_env, namespace)}) == 12, timeout=20), successor.output()
    # After a clean stop nothing was in hand: the new records are not marked.
    assert offsets(redelivered=True) == list(range(10))
    assert [offset for offset in offsets(redelivered=False) if offset >= 10] == [10, 11]


def test_a_hand_out_mark_rides_on_the_committed_offset() -> None:
    assert mark(5, 5) == Committed(5, "")
    assert read_mark(mark(5, 12)) == 12
    assert read_mark(Committed(7, "")) == 7
    assert read_mark(Committed(7, "hoptrace.handed-out=oops")) == 7
    assert read_mark(None) == -1


def test_a_record_is_redelivered_below_the_mark_learned_or_what_this_process_took_itself() -> None:
    partition = Partition("t", 0)
    handed_out = HandedOut()
    handed_out.assigned([partition])
    assert handed_out.unlearned([partition]) == [partition]
    handed_out.learn({partition: 3})
    assert handed_out.unlearned([partition]) == []
    assert [handed_out.take(partition, offset) for offset in (1, 2, 3, 4)] == [True, True, False, False]
    assert handed_out.take(partition, 4)  # taken again by this process (a retry after a seek back)


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_a_member_joining_takes_partitions_over_without_a_crash_or_a_redelivery(
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    kafka_admin: KafkaAdminClient,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    topic = f"{namespace}slow.in"
    kafka_admin.create_topics([NewTopic(topic, 2, 1)])
    payload = json.dumps({"order_id": "r{n}", "sleep_s": 0.1})
    run_hoptrace(hoptrace_env, "publish", SLOW, "take", "--count", "30", "--payload", payload)
    take = (SLOW, "--no-monitor", "--stage", "take")
    with hoptrace_worker(*take, ready=f"assigned partitions {topic}[0], {topic}[1]") as first:
        assert wait_for(lambda: len(slow_outbox(hoptrace_env, namespace)) >= 3, timeout=30), first.output()
        # The second member's join revokes the first one's partitions: it commits what it processed (on kafka-python's IO loop).
        with hoptrace_worker(*take, ready=f"assigned partitions {topic}[") as second:
            assert wait_for(lambda: len(slow_outbox(hoptrace_env, namespace)) >= 30, timeout=60), second.output()
            assert first.popen.poll() is None, first.output()
    orders = [note["order_id"] for note in slow_outbox(hoptrace_env, namespace)]
    assert sorted(orders) == sorted(f"r{n}" for n in range(1, 31)), orders
    assert not [span for span in _process_spans(store, topic) if "hoptrace.redelivered" in span.attributes]
    assert own_tracebacks(first.output() + second.output()) == []
