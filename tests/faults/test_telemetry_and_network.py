"""The OTLP collector away for a minute, and a worker cut off from Kafka by a network partition."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.faults.harness import FAULT_AFTER_S, Scenario
from tests.faults.proxy import TcpProxy, redirect_env

COLLECTOR_DOWN_S = 60.0
PARTITION_S = 20.0


def test_the_collector_down_for_a_minute_loses_no_job(scenario: Callable[..., Scenario]) -> None:
    with scenario(f"the OTLP collector down for {COLLECTOR_DOWN_S:.0f} s") as run:
        run.start_workers()
        run.stream()
        run.wait_until(FAULT_AFTER_S)
        run.faulted()
        back_at = time.monotonic() + COLLECTOR_DOWN_S
        run.receiver.stop()
        run.wait_for_jobs()  # the jobs do not wait for the collector
        time.sleep(max(0.0, back_at - time.monotonic()))
        run.receiver.start()  # the same ports
        run.restarted()
        row = run.finish("jobs done while it was down; spans lost with it (counting them is `hoptrace.telemetry.dropped`'s job)")
    assert row.lost == [], row


def test_a_partition_between_a_kafka_stage_and_kafka_loses_no_job(scenario: Callable[..., Scenario]) -> None:
    with scenario(f"network partition: `validate` cut off from Kafka for {PARTITION_S:.0f} s") as run:
        proxy = TcpProxy("127.0.0.1", run.brokers.kafka_port)
        proxy.start()
        try:
            run.start_workers("--stage", "validate", env=redirect_env(run.folder / "redirect", {run.brokers.kafka_bootstrap: proxy.address}))
            run.start_workers("--stage", "charge", "--stage", "ship", "--stage", "notify")
            run.stream()
            run.wait_until(FAULT_AFTER_S)
            run.faulted()
            proxy.stop()
            time.sleep(PARTITION_S)
            proxy.start()
            run.restarted()
            row = run.finish("longer than the 10 s session: the member is evicted, then rejoins")
        finally:
            proxy.close()
    assert row.lost == [], row
