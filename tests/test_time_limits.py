"""Handler time limits: the soft limit is raised inside the handler, the hard one fails the attempt, retried then dead-lettered.

The limits are real SIGALRM timers on this (main) thread; the handlers block in ``time.sleep``
far longer than any limit, so a test that finishes at all shows the handler was interrupted.
The same limits on real workers and brokers: ``tests/faults/test_hung_handler.py``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from hoptrace.pipeline.messages import Outcome
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stage_context import StageContext
from hoptrace.pipeline.stages import Payload, Pipeline, PipelineError, RetryPolicy
from hoptrace.pipeline.time_limits import SoftTimeLimitExceeded, TimeLimitExceeded, TimeLimits, limited
from hoptrace.testing import CapturedTelemetry, capture_telemetry
from tests.test_processing import counts, run

FOREVER_S = 3600.0


@pytest.fixture
def telemetry() -> Iterator[CapturedTelemetry]:
    with capture_telemetry() as captured:
        yield captured


def test_the_soft_limit_is_raised_inside_the_handler_which_may_finish_up() -> None:
    seen: list[str] = []
    with limited(TimeLimits(soft_s=0.1, hard_s=FOREVER_S), "charge"):
        try:
            time.sleep(FOREVER_S)
        except SoftTimeLimitExceeded as error:
            seen.append(str(error))
    assert seen == ["stage charge: the handler ran past its soft time limit of 0.1 s"]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_the_hard_limit_stops_a_handler_that_swallows_every_exception_and_leaves_no_timer_or_handler_behind() -> None:
    before = signal.getsignal(signal.SIGALRM)
    interrupted = 0
    with pytest.raises(TimeLimitExceeded, match=r"^stage charge: the handler ran past its time limit of 0.3 s and was stopped$"):  # noqa: PT012
        with limited(TimeLimits(soft_s=0.1, hard_s=0.3), "charge"):
            for _ in range(5):
                try:
                    time.sleep(FOREVER_S)
                except BaseException:  # noqa: BLE001 - a handler that swallows even the hard limit, twice
                    interrupted += 1
                    if interrupted == 3:
                        raise
    assert interrupted == 3  # the soft limit, the hard limit, and the hard limit again a second later
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


def test_a_handler_within_its_limits_is_not_touched_and_no_alarm_comes_later() -> None:
    with limited(TimeLimits(soft_s=0.2, hard_s=0.4), "charge"):
        time.sleep(0.01)
    time.sleep(0.6)  # past both limits: an alarm left armed would raise here


def test_off_the_main_thread_the_limits_are_not_enforced_and_the_log_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[int] = []

    def handle() -> None:
        for _ in range(2):
            with limited(TimeLimits(hard_s=0.05), "pooled"):
                time.sleep(0.1)
                ran.append(1)

    with caplog.at_level(logging.WARNING, "hoptrace.pipeline.time_limits"):
        thread = threading.Thread(target=handle)
        thread.start()
        thread.join()
    assert ran == [1, 1]
    assert [record.getMessage() for record in caplog.records if record.name == "hoptrace.pipeline.time_limits"] == [
        "stage pooled: its time limits are not enforced: its handler runs outside the main thread (TimeLimits(soft_s=None, hard_s=0.05))"
    ]


def hangs(payload: Payload, ctx: StageContext) -> None:
    time.sleep(FOREVER_S)


def test_a_handler_that_hangs_at_every_attempt_is_retried_then_dead_lettered(telemetry: CapturedTelemetry) -> None:
    pipeline = Pipeline("orders")
    pipeline.stage("charge", celery_queue="payments", forwards_to=("ship",), retry=RetryPolicy(2, 0.0), time_limit_s=0.2)(hangs)
    pipeline.stage("ship", kafka_topic="orders.charged")(lambda payload, ctx: None)

    outcome, sender = run(pipeline.check())

    assert outcome is Outcome.DEAD_LETTERED
    assert [transport.destination for transport, _, _ in sender.sent] == ["payments", "payments.dead-letter"]
    attempts = [span for span in telemetry.spans if span.name == "process payments"]
    message = "stage charge: the handler ran past its time limit of 0.2 s and was stopped"
    assert [(span.attributes["hoptrace.attempt"], span.status, span.status_message) for span in attempts] == [
        (1, "ERROR", f"TimeLimitExceeded: {message}"),
        (2, "ERROR", f"TimeLimitExceeded: {message}"),
    ]
    assert [[(name, event["exception.type"]) for name, event in span.events] for span in attempts] == [
        [("exception", "hoptrace.pipeline.time_limits.TimeLimitExceeded")]
    ] * 2
    assert counts(telemetry, "messaging.process.duration") == {"TimeLimitExceeded": 2}
    assert counts(telemetry, "hoptrace.stage.retries") == {None: 1}
    assert counts(telemetry, "hoptrace.stage.dead_lettered") == {"TimeLimitExceeded": 1}


def test_a_handler_that_finishes_up_on_the_soft_limit_is_processed(telemetry: CapturedTelemetry) -> None:
    def finishes_up(payload: Payload, ctx: StageContext) -> None:
        try:
            time.sleep(FOREVER_S)
        except SoftTimeLimitExceeded:
            ctx.forward("ship", {**payload, "partial": True})

    pipeline = Pipeline("orders")
    pipeline.stage("charge", celery_queue="payments", forwards_to=("ship",), soft_time_limit_s=0.1, time_limit_s=FOREVER_S)(finishes_up)
    pipeline.stage("ship", kafka_topic="orders.charged")(lambda payload, ctx: None)

    outcome, sender = run(pipeline.check())

    assert outcome is Outcome.PROCESSED
    assert [(transport.destination, payload) for transport, payload, _ in sender.sent] == [
        ("payments", {"order": 1}),
        ("orders.charged", {"order": 1, "partial": True}),
    ]


def test_the_settings_limit_stages_that_set_none_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPTRACE_SOFT_TIME_LIMIT_S", "5")
    monkeypatch.setenv("HOPTRACE_TIME_LIMIT_S", "9")
    defaults = Settings().time_limits
    assert defaults == TimeLimits(5.0, 9.0)
    assert TimeLimits().or_else(defaults) == defaults
    assert TimeLimits(hard_s=2.0).or_else(defaults) == TimeLimits(hard_s=2.0)  # never half from the settings


@pytest.mark.parametrize(
    ("soft", "hard", "message"),
    [
        (5.0, 5.0, "stage 'charge': the soft time limit (5.0 s) must be below the hard one (5.0 s), or left out"),
        (0.0, None, "stage 'charge': the soft time limit must be a positive number of seconds, not 0.0"),
        (None, -1.0, "stage 'charge': the time limit must be a positive number of seconds, not -1.0"),
    ],
)
def test_limits_that_make_no_sense_are_refused_with_the_stage_named(soft: float | None, hard: float | None, message: str) -> None:
    with pytest.raises(PipelineError) as refused:
        Pipeline("orders").stage("charge", celery_queue="payments", soft_time_limit_s=soft, time_limit_s=hard)
    assert str(refused.value) == message


def test_settings_whose_soft_limit_is_not_below_the_hard_one_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPTRACE_SOFT_TIME_LIMIT_S", "9")
    monkeypatch.setenv("HOPTRACE_TIME_LIMIT_S", "5")
    with pytest.raises(ValidationError, match=r"the soft time limit \(9.0 s\) must be below the hard one \(5.0 s\), or left out"):
        Settings()


def test_a_kafka_stage_whose_attempts_would_outlast_the_poll_interval_is_refused() -> None:
    stage = Pipeline("orders").stage("validate", kafka_topic="orders.placed", retry=RetryPolicy(3, 1.0), time_limit_s=99.0)
    with pytest.raises(PipelineError) as refused:
        stage(hangs)
    assert str(refused.value) == (
        "stage 'validate': 3 attempts at its time limit of 99.0 s take 300 s, past Kafka's poll interval of 300 s"
        " (the group would take its partitions away); lower the time limit or the attempts"
    )
    Pipeline("orders").stage("validate", kafka_topic="orders.placed", retry=RetryPolicy(3, 1.0), time_limit_s=98.0)(hangs)
