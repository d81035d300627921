"""The suite's own Kafka and Redis stopped and started, or killed with SIGKILL and started again, while jobs flow."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from tests.faults.harness import FAULT_AFTER_S, RECOVERY_JOBS, Scenario, assert_back_before_the_visibility_timeout

KAFKA_BACK_WITHIN_S = 10.0
"""The target: the last job at most this long after the Kafka broker answers again."""
AOF_FSYNC_INTERVAL_S = 1.0
"""``appendfsync everysec``: what a crash of the machine (not of the process) may lose."""


@pytest.mark.parametrize(
    ("service", "kill", "kafka_client"),
    [("kafka", False, "kafka-python"), ("kafka", True, "kafka-python"), ("kafka", False, "confluent-kafka"), ("redis", False, "kafka-python")],
)
def test_a_broker_restart_loses_nothing(scenario: Callable[..., Scenario], service: str, kill: bool, kafka_client: str) -> None:
    fault = f"{'kill -9 of' if kill else 'stop/start of'} {'the Kafka broker (JVM)' if service == 'kafka' else 'redis-server'}"
    fault += " (stages on confluent-kafka)" if kafka_client == "confluent-kafka" else ""
    with scenario(fault, kafka_client=kafka_client) as run:
        workers = run.start_workers()
        if service == "kafka":
            run.publish(RECOVERY_JOBS)  # all before the fault: a publish while the broker is away fails
        else:
            run.stream()
        run.wait_until(FAULT_AFTER_S)
        run.faulted()
        if kill:
            run.brokers.kill(service)  # type: ignore[arg-type]
        else:
            run.brokers.stop(service)  # type: ignore[arg-type]
        run.brokers.start(service)  # type: ignore[arg-type]
        run.restarted()
        row = run.finish()
    assert (row.lost, row.dead_lettered) == ([], []), row  # an outage is waited out: nothing lost, nothing dead-lettered
    if service == "redis":
        assert_back_before_the_visibility_timeout(row.from_restart_s)
    else:  # hoptrace's Kafka clients look for the broker again within a second (RECONNECT_BACKOFF_MAX_MS)
        assert row.from_restart_s is not None and row.from_restart_s <= KAFKA_BACK_WITHIN_S, row
    if service == "kafka" and kafka_client == "confluent-kafka":
        # The stages said that Kafka was away, and that it answered again: librdkafka tells only its error callback, which
        # reports every failed connection. (kafka-python's poll raises only when an outage catches it mid-request: not asserted.)
        said = workers.output()
        assert "Kafka cannot be reached" in said and "Kafka answers again" in said, said[-3000:]


def test_kill_9_of_redis_loses_at_most_one_fsync_interval_and_names_each_lost_job(scenario: Callable[..., Scenario]) -> None:
    with scenario("kill -9 of redis-server") as run:
        run.start_workers()
        run.stream()
        run.wait_until(FAULT_AFTER_S)
        done = len(run.delivered())
        run.faulted()
        run.brokers.kill("redis")
        run.brokers.start("redis")
        run.restarted()
        allowed = math.ceil(done / FAULT_AFTER_S * AOF_FSYNC_INTERVAL_S)
        row = run.finish(f"AOF fsync every second: {allowed} allowed (1 s at the rate before the kill)")
        if row.lost:
            row.note += f"; lost: {', '.join(row.lost)}"
    assert len(row.lost) <= allowed, row
    if not row.lost:  # else the last job never came (its loss is what the fsync interval allows)
        assert_back_before_the_visibility_timeout(row.from_restart_s)
