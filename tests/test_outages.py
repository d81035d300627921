"""A broker that is away is waited for, never a reason to dead-letter: the retry policy counts only the message's own failures.

In process, with senders that answer as the brokers' clients do when their broker is away: kombu
raising ``OperationalError`` at once (a Celery forward), kafka-python failing the send's future
with ``KafkaTimeoutError`` (a Kafka forward). The real outage, a Redis stopped and started while
jobs flow, is in the fault suite (tests/faults/test_broker_restarts.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
import redis
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kombu.exceptions import OperationalError

from hoptrace.pipeline import outages
from hoptrace.pipeline.carriers import dict_pairs
from hoptrace.pipeline.messages import Delivery, Outcome
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.stage_context import StageContext
from hoptrace.pipeline.stages import Pipeline, RetryPolicy, Transport
from hoptrace.producers.publisher import BrokerUnavailable, Done, PipelinePublisher
from hoptrace.workers.processing import StageProcessor

Payload = dict[str, Any]


class Refused:
    """A send's answer that is an error, as a kafka-python future that failed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def wait(self, timeout_s: float) -> None:
        raise self.error


class AwayBroker:
    """Refuses the first REFUSALS sends to ``ship`` with ERROR (at once, or through the send's answer when LATER), then takes all."""

    def __init__(self, refusals: int, error: BaseException, later: bool = False) -> None:
        self.refusals = refusals
        self.error = error
        self.later = later
        self.taken: list[tuple[str, Payload]] = []

    def send(self, transport: Transport, payload: Payload, headers: Mapping[str, str], done: Done) -> Refused | None:
        if transport.destination.startswith("orders.charged") and self.refusals > 0:
            self.refusals -= 1
            if self.later:
                done({}, self.error)
                return Refused(self.error)
            raise self.error
        self.taken.append((transport.destination, dict(payload)))
        done({}, None)
        return None


def _forward(payload: Payload, ctx: StageContext) -> None:
    ctx.forward("ship", payload)


def _run(broker: AwayBroker, policy: RetryPolicy) -> tuple[Outcome | BaseException, list[tuple[str, Payload]]]:
    """Process one job at ``charge``, which forwards to the Kafka stage ``ship`` through BROKER; its outcome (or what it raised)."""
    pipeline = Pipeline("orders")
    pipeline.stage("charge", celery_queue="payments", forwards_to=("ship",), retry=policy)(_forward)
    pipeline.stage("ship", kafka_topic="orders.charged")(lambda payload, ctx: None)
    publisher = PipelinePublisher(pipeline.check(), {"kafka": broker, "celery": broker})
    processor = StageProcessor(pipeline, pipeline["charge"], publisher)
    try:
        outcome: Outcome | BaseException = processor.process(Delivery({"order": 1}, dict_pairs({}, fields())))
    except Exception as error:  # noqa: BLE001 - the test reads what the worker would see
        outcome = error
    return outcome, broker.taken


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits of a millisecond, doubling to 5 ms: the same schedule, sooner."""
    monkeypatch.setattr(outages, "FIRST_WAIT_S", 0.001)
    monkeypatch.setattr(outages, "LONGEST_WAIT_S", 0.005)


@pytest.mark.parametrize(
    "broker",
    [AwayBroker(7, OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")), AwayBroker(7, KafkaTimeoutError(), later=True)],
    ids=["refused at once (kombu)", "refused in the answer (kafka-python)"],
)
def test_a_forward_the_broker_is_away_for_is_waited_out_and_counts_no_attempt(broker: AwayBroker, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hoptrace.workers.processing"):
        outcome, taken = _run(broker, RetryPolicy(max_attempts=3, backoff_s=0.0))
    assert outcome is Outcome.PROCESSED  # seven refusals, more than the policy's three attempts: none of them counted
    assert taken == [("orders.charged", {"order": 1})]  # forwarded once, nothing dead-lettered
    said = [record.getMessage() for record in caplog.records]
    assert sum("a broker is away" in line for line in said) == 1, said  # once per outage, not once per attempt
    assert sum("the broker answers again" in line for line in said) == 1, said


@pytest.mark.parametrize(
    "lost", [redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), ConnectionRefusedError(111, "refused")]
)
def test_a_handler_failing_on_a_connection_it_cannot_make_is_waited_out_too(lost: Exception) -> None:
    failures = iter(range(5))

    def writes_its_outbox_then_forwards(payload: Payload, ctx: StageContext) -> None:
        if next(failures, None) is not None:  # its own Redis client, during the outage
            raise lost
        ctx.forward("ship", payload)

    pipeline = Pipeline("orders")
    pipeline.stage("charge", celery_queue="payments", forwards_to=("ship",), retry=RetryPolicy(max_attempts=2, backoff_s=0.0))(
        writes_its_outbox_then_forwards
    )
    pipeline.stage("ship", kafka_topic="orders.charged")(lambda payload, ctx: None)
    broker = AwayBroker(0, OperationalError("unused"))
    processor = StageProcessor(pipeline, pipeline["charge"], PipelinePublisher(pipeline.check(), {"kafka": broker, "celery": broker}))
    outcome = processor.process(Delivery({"order": 1}, dict_pairs({}, fields())))
    assert outcome is Outcome.PROCESSED  # five failures, more than the policy's two attempts: none counted
    assert broker.taken == [("orders.charged", {"order": 1})]


def test_a_message_the_broker_refuses_goes_through_the_retry_policy_to_the_dead_letter() -> None:
    outcome, taken = _run(AwayBroker(10, MessageSizeTooLargeError("1 MB"), later=True), RetryPolicy(max_attempts=3, backoff_s=0.0))
    assert outcome is Outcome.DEAD_LETTERED
    assert taken == [("payments.dead-letter", {"order": 1})]


def test_past_the_outage_deadline_attempts_count_again_and_the_worker_keeps_what_it_cannot_park() -> None:
    broker = AwayBroker(10**9, OperationalError("Connection refused"))  # away for good, the dead-letter queue's broker too
    broker.send = _everything_refused(broker)  # type: ignore[method-assign]
    outcome, taken = _run(broker, RetryPolicy(max_attempts=3, backoff_s=0.0, outage_deadline_s=0.05))
    assert isinstance(outcome, BrokerUnavailable)  # the worker keeps the message and takes it again later: not lost
    assert taken == []


def _everything_refused(broker: AwayBroker) -> Any:
    def send(transport: Transport, payload: Payload, headers: Mapping[str, str], done: Done) -> None:
        raise broker.error

    return send
