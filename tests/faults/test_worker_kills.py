"""kill -9 of a worker process, restarted by ``hoptrace worker``'s supervisor: the Celery main process, one pool child, a Kafka stage."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from hoptrace.workers.stage_consumer import MAX_POLL_RECORDS
from tests.faults import procs
from tests.faults.harness import FAULT_AFTER_S, RECOVERY_JOBS, Scenario, assert_back_before_the_visibility_timeout


def test_kill_9_of_the_celery_main_process_loses_nothing_and_its_replacement_puts_back_what_it_held(scenario: Callable[..., Scenario]) -> None:
    with scenario("kill -9 the Celery worker's main process") as run:
        workers = run.start_workers()
        celery = run.child(workers, "charge")
        run.stream()
        run.wait_until(FAULT_AFTER_S)
        run.faulted()
        os.kill(celery, signal.SIGKILL)
        run.wait_for_restart(workers, "charge", celery)
        row = run.finish("its replacement puts back at once what it held (its held set)")
        incomplete = run.incomplete_traces()
    assert row.lost == [], row
    assert incomplete == [], row  # the spans it had ended are exported from its spool
    assert_back_before_the_visibility_timeout(row.from_restart_s)


def test_kill_9_of_a_celery_pool_child_loses_nothing(scenario: Callable[..., Scenario]) -> None:
    with scenario("kill -9 one Celery pool child") as run:
        workers = run.start_workers()
        pool = procs.children(run.child(workers, "charge"))
        run.stream()
        run.wait_until(FAULT_AFTER_S)
        run.faulted()
        os.kill(pool[0], signal.SIGKILL)
        row = run.finish("its task is requeued at once (reject_on_worker_lost)")
        incomplete = run.incomplete_traces()
    assert row.lost == [], row
    assert incomplete == [], row


@pytest.mark.parametrize(
    ("secured", "kafka_client"),
    [(False, "kafka-python"), (True, "kafka-python"), (False, "confluent-kafka")],
    ids=["plain", "secured", "confluent-kafka"],
)
def test_kill_9_of_a_kafka_stage_recovers_within_15_s_and_repeats_at_most_one_batch(
    scenario: Callable[..., Scenario], secured: bool, kafka_client: str
) -> None:
    """Also over the secured twins (SASL_SSL with SCRAM, Redis over TLS as an ACL user): rejoining, committing and forwarding authenticate.

    And with the stages on confluent-kafka: its commits carry the same hand-out marks, its static member rejoins as fast.
    """
    name = "kill -9 the Kafka `validate` stage process" + (" (SASL_SSL Kafka, TLS Redis)" if secured else "")
    name += " (confluent-kafka)" if kafka_client == "confluent-kafka" else ""
    with scenario(name, secured=secured, kafka_client=kafka_client) as run:
        workers = run.start_workers()
        validate = run.child(workers, "validate")
        run.stream(RECOVERY_JOBS)
        run.wait_until(FAULT_AFTER_S)
        run.faulted()
        os.kill(validate, signal.SIGKILL)
        run.wait_for_restart(workers, "validate", validate)
        row = run.finish(f"static member back at once; at most one batch ({MAX_POLL_RECORDS}) again")
        incomplete = run.incomplete_traces()
    assert row.lost == [], row
    assert incomplete == [], row
    assert row.from_restart_s is not None and row.from_restart_s <= 15, row
    assert row.duplicates <= MAX_POLL_RECORDS, row
