"""A handler that hangs on one job: the other jobs go on (Celery) or wait behind it in its partition (Kafka).

Without time limits the hung job is processed once it returns; with them (``pipelines.limited``) a job
that hangs forever is stopped at each attempt's hard limit, retried, then dead-lettered, and the jobs
behind it in a Kafka partition go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from hoptrace.clients.celery.visibility import RecoverySettings
from tests.faults.harness import JOBS, Scenario
from tests.faults.pipelines import LIMITED_RETRY, LIMITS

HANGING = "tests.faults.pipelines:hanging"
LIMITED = "tests.faults.pipelines:limited"
FOREVER_S = 3600.0
LIMITED_ALLOWED_S = 60.0
"""How long after the first publish the others and the hung job's dead letter may take (the target is the soft limit + 10 s: reported)."""


def _publish_with_one_hung_job(run: Scenario, stage: str, hang_s: float) -> str:
    """Publish one job that hangs at STAGE for HANG_S seconds, then the others; the hung job's id."""
    run.publish(1, {"order_id": "hung", "hang_at": stage, "hang_s": hang_s})
    run.publish(JOBS - 1)
    return run.jobs[0].job_id


def _others_done_after(run: Scenario, hung: str, timeout_s: float) -> float | None:
    """Seconds from the first publish until every job but HUNG was in the outbox; None when they were not within TIMEOUT_S."""
    others = {job.job_id for job in run.jobs} - {hung}
    while time.monotonic() < run.started + timeout_s:
        if others <= set(run.delivered()):
            return time.monotonic() - run.started
        time.sleep(0.2)
    return None


def test_a_celery_handler_hanging_longer_than_the_visibility_timeout_holds_up_no_other_job_and_runs_once(
    scenario: Callable[..., Scenario],
) -> None:
    hang_s = 2 * RecoverySettings().visibility_timeout_s
    with scenario(f"`charge` hangs {hang_s:.0f} s on one job", spec=HANGING) as run:
        run.start_workers()
        hung = _publish_with_one_hung_job(run, "charge", hang_s)
        run.faulted()
        others = _others_done_after(run, hung, hang_s)
        row = run.finish(f"the {JOBS - 1} others done {others:.1f} s in; the hung one once, after it returned" if others else "others stuck")
    assert others is not None, row
    assert row.lost == [] and row.duplicates == 0, row


def test_a_kafka_handler_hanging_holds_up_its_partition_only_while_it_hangs(scenario: Callable[..., Scenario]) -> None:
    hang_s = 20.0
    with scenario(f"`validate` hangs {hang_s:.0f} s on one job", spec=HANGING) as run:
        run.start_workers()
        hung = _publish_with_one_hung_job(run, "validate", hang_s)
        run.faulted()
        others = _others_done_after(run, hung, 180)
        row = run.finish(f"one partition, in order: the others waited behind it, done {others:.1f} s in" if others else "others stuck")
    assert row.lost == [] and row.duplicates == 0, row


@pytest.mark.parametrize("stage", ["validate", "charge"])
def test_a_handler_hung_forever_is_stopped_at_its_time_limit_retried_then_dead_lettered_and_the_others_go_on(
    scenario: Callable[..., Scenario], stage: str
) -> None:
    kind = "Kafka" if stage == "validate" else "Celery"
    limits = f"limits {LIMITS.soft_s:.0f} s / {LIMITS.hard_s:.0f} s, {LIMITED_RETRY.max_attempts} attempts"
    with scenario(f"`{stage}` ({kind}) hangs forever; {limits}", spec=LIMITED) as run:
        run.start_workers()
        hung = _publish_with_one_hung_job(run, stage, FOREVER_S)
        run.parked.add(hung)
        run.faulted()
        others = _others_done_after(run, hung, LIMITED_ALLOWED_S)
        while hung not in run.dead_lettered() and time.monotonic() < run.started + LIMITED_ALLOWED_S:
            time.sleep(0.5)
        parked_s = time.monotonic() - run.started
        row = run.finish(f"the others done {others:.1f} s in; the hung one dead-lettered {parked_s:.1f} s in" if others else "others stuck")
    assert others is not None, row
    assert (row.lost, row.duplicates, row.dead_lettered) == ([], 0, [hung]), row
