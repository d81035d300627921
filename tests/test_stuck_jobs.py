"""Lost-job detection: the job ledger in the real Redis, and ``hoptrace.jobs.stuck`` naming each stuck job by id.

Jobs go through a real publisher and processor (a recording sender, no broker needed for the
messages themselves); the ledger writes to the test's Redis under a prefix of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis

from hoptrace.clients.redis import job_ledger
from hoptrace.clients.redis.job_ledger import JobLedger, JobLedgerMiddleware, keys
from hoptrace.clients.redis.stuck_jobs import StuckJobs
from hoptrace.pipeline.carriers import dict_pairs
from hoptrace.pipeline.defaults import default_middleware
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.messages import Delivery, Outcome
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stage_context import StageContext
from hoptrace.pipeline.stages import Pipeline, RetryPolicy
from hoptrace.producers.publisher import PipelinePublisher
from hoptrace.workers.processing import StageProcessor
from tests.conftest import free_port
from tests.test_processing import Sender


def validate(order: Mapping[str, Any], ctx: StageContext) -> None:
    if order.get("bad"):
        raise ValueError("rejected")
    ctx.forward("notify", order)


@pytest.fixture
def ledger(settings: Settings, redis_prefix: str) -> Iterator[JobLedger]:
    made = JobLedger(settings.redis_url, prefix=f"{redis_prefix}jobs:")
    yield made
    made.close()


def test_every_job_without_a_final_outcome_is_stuck_by_id(
    settings: Settings, redis_prefix: str, ledger: JobLedger, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = Pipeline("ledgered")
    pipeline.stage("validate", kafka_topic="orders", forwards_to=("notify",), retry=RetryPolicy(1, 0.0))(validate)
    pipeline.stage("notify", celery_queue="notes")(lambda order, ctx: None)
    middleware = [*default_middleware(pipeline, Instruments.of()), JobLedgerMiddleware(pipeline.name, ledger)]
    sender = Sender()
    publisher = PipelinePublisher(pipeline.check(), {"kafka": sender, "celery": sender}, middleware=middleware)
    jobs = [publisher.publish(pipeline["validate"], {"n": n, "bad": n == 3}).job_id for n in range(5)]

    first, final = (StageProcessor(pipeline, pipeline[name], publisher, middleware=middleware) for name in ("validate", "notify"))
    outcomes = [first.process(Delivery(payload, dict_pairs(headers, fields()))) for _, payload, headers in sender.sent[:4]]  # job 4 is lost
    forwarded = [(payload, headers) for transport, payload, headers in sender.sent[5:] if transport.destination == "notes"]
    outcomes += [final.process(Delivery(payload, dict_pairs(headers, fields()))) for payload, headers in forwarded[:2]]  # job 2 waits at notify
    assert outcomes == [Outcome.PROCESSED, Outcome.PROCESSED, Outcome.PROCESSED, Outcome.DEAD_LETTERED, Outcome.PROCESSED, Outcome.PROCESSED]
    assert ledger.flush()

    stuck = StuckJobs(settings.redis_url, pipeline.name, stuck_after_s=0.5, prefix=f"{redis_prefix}jobs:")
    time.sleep(0.6)
    with caplog.at_level(logging.WARNING, logger="hoptrace.clients.redis.stuck_jobs"):
        [observation] = stuck.read()["hoptrace.jobs.stuck"]
        again = stuck.read()["hoptrace.jobs.stuck"][0]
    stuck.close()

    assert (observation.value, observation.attributes, again.value) == (2, {"hoptrace.pipeline": "ledgered"}, 2)
    logged = {record.getMessage().split()[1] for record in caplog.records if record.name == "hoptrace.clients.redis.stuck_jobs"}
    assert logged == {jobs[2], jobs[4]}  # each stuck job named once, by id
    client = redis.Redis.from_url(settings.redis_url)
    started, finished = keys("ledgered", f"{redis_prefix}jobs:")
    assert {job.decode() for job in client.zrange(started, 0, -1)} == {jobs[2], jobs[4]}  # the finished ones are cleaned away
    assert client.zcard(finished) == 0
    client.close()


def test_a_ledger_whose_redis_does_not_answer_keeps_its_writes_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    ledger = JobLedger(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="hoptrace.clients.redis.job_ledger"):
        ledger.started("orders", "job-1", time.time())
        assert not ledger.flush()
        ledger.finished("orders", "job-1", time.time())
        assert not ledger.flush()
    ledger.close(timeout_s=0.5)
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == ["the job ledger cannot write to Redis"]


def test_a_ledger_past_its_bound_drops_the_oldest_writes_counted_and_keeps_the_newest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(job_ledger, "MAX_PENDING", 3)
    monkeypatch.setattr(job_ledger, "FLUSH_INTERVAL_S", 3600.0)  # only this test's flushes run
    ledger = JobLedger(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="hoptrace.clients.redis.job_ledger"):
        for n in range(2):
            ledger.started("orders", f"job-{n}", time.time())
        assert not ledger.flush()  # the two go back to the queue, first
        for n in range(2, 5):
            ledger.started("orders", f"job-{n}", time.time())
    assert ledger.dropped == 2
    assert [job_id for _, _, job_id, _ in ledger._pending] == ["job-2", "job-3", "job-4"]
    dropped_lines = [record.getMessage() for record in caplog.records if "dropped" in record.getMessage()]
    assert len(dropped_lines) == 1 and "more than 3 waited for Redis" in dropped_lines[0]
    ledger.close(timeout_s=0.5)
