"""StageProcessor and its middleware: exact spans, metrics, retries, dead letters, links, and hooks that fail.

No broker: messages are published by the real ``PipelinePublisher`` into a recording sender
and handed to the processor with the headers it wrote (the end-to-end tests with real Kafka,
Celery and OTLP are test_orders_*). Telemetry is captured with ``hoptrace.testing``, through
the global providers, as a user's tests would.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from hoptrace.pipeline.carriers import dict_pairs
from hoptrace.pipeline.messages import Delivery, Incoming, Outcome, Outgoing
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.stage_context import StageContext
from hoptrace.pipeline.stages import Pipeline, RetryPolicy, Transport
from hoptrace.producers.publisher import Done, PipelinePublisher
from hoptrace.testing import CapturedTelemetry, capture_telemetry
from hoptrace.workers.processing import StageProcessor
from tests.conftest import REPOSITORY

Payload = Mapping[str, Any]


class Sender:
    """Records what is sent and accepts it at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[Transport, Payload, dict[str, str]]] = []

    def send(self, transport: Transport, payload: Payload, headers: Mapping[str, str], done: Done) -> None:
        self.sent.append((transport, payload, dict(headers)))
        done({}, None)


def flaky(failures: int) -> Callable[[Payload, StageContext], None]:
    """A handler that fails its first FAILURES attempts, then forwards to ``ship``."""

    def handle(payload: Payload, ctx: StageContext) -> None:
        if ctx.attempt <= failures:
            raise ValueError(f"attempt {ctx.attempt} refused")
        ctx.forward("ship", payload)

    return handle


def pipeline_with(handler: Callable[[Payload, StageContext], None], *, links: bool = False) -> Pipeline:
    pipeline = Pipeline("orders")
    pipeline.stage("charge", celery_queue="payments", forwards_to=("ship",), links=links, retry=RetryPolicy(3, 0.0))(handler)
    pipeline.stage("ship", kafka_topic="orders.charged")(lambda payload, ctx: None)
    return pipeline.check()


@pytest.fixture
def telemetry() -> Iterator[CapturedTelemetry]:
    with capture_telemetry() as captured:
        yield captured


def run(pipeline: Pipeline, middleware: list[Middleware] | None = None) -> tuple[Outcome, Sender]:
    """Publish one job to ``charge``, then process it (both with MIDDLEWARE, default: hoptrace's); the outcome and everything sent."""
    sender = Sender()
    publisher = PipelinePublisher(pipeline, {"kafka": sender, "celery": sender}, middleware=middleware)
    publisher.publish(pipeline["charge"], {"order": 1})
    processor = StageProcessor(pipeline, pipeline["charge"], publisher, middleware=middleware)
    return processor.process(Delivery({"order": 1}, dict_pairs(sender.sent[0][2], fields()))), sender


def counts(telemetry: CapturedTelemetry, name: str) -> dict[str | None, float]:
    """A counter's values (or a histogram's counts) by error type."""
    return {point.attributes.get("error.type"): point.value if point.value is not None else point.count for point in telemetry.points(name)}


def test_a_processed_message_continues_the_trace_and_is_counted(telemetry: CapturedTelemetry) -> None:
    outcome, sender = run(pipeline_with(flaky(0)))

    assert outcome is Outcome.PROCESSED
    assert [span.name for span in telemetry.spans] == ["send payments", "send orders.charged", "process payments"]  # in the order they ended
    publish, forward, process = telemetry.spans
    assert {span.trace_id for span in telemetry.spans} == {publish.trace_id}
    assert (process.kind, process.parent_span_id, forward.parent_span_id) == ("CONSUMER", publish.span_id, process.span_id)
    assert process.attributes == {
        "hoptrace.pipeline": "orders",
        "hoptrace.stage": "charge",
        "messaging.system": "celery",
        "messaging.destination.name": "payments",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "hoptrace.job.id": publish.attributes["hoptrace.job.id"],
        "hoptrace.attempt": 1,
        "hoptrace.outcome": "processed",
    }
    assert [transport.destination for transport, _, _ in sender.sent] == ["payments", "orders.charged"]
    for name in ("messaging.client.consumed.messages", "messaging.process.duration", "hoptrace.queue.wait", "hoptrace.job.latency"):
        assert counts(telemetry, name) == {None: 1}, name
    assert counts(telemetry, "hoptrace.stage.in_flight") == {None: 0}
    assert [point.unit for point in telemetry.points("messaging.process.duration")] == ["s"]


def test_links_start_a_new_trace_linked_to_the_publish_and_keep_the_job(telemetry: CapturedTelemetry) -> None:
    run(pipeline_with(flaky(0), links=True))

    publish, forward, process = telemetry.spans
    assert (process.parent_span_id, process.links) == (None, ((publish.trace_id, publish.span_id),))
    assert process.trace_id != publish.trace_id
    assert (forward.trace_id, forward.parent_span_id) == (process.trace_id, process.span_id)
    assert process.attributes["hoptrace.job.id"] == forward.attributes["hoptrace.job.id"] == publish.attributes["hoptrace.job.id"]


def test_retried_attempts_each_have_a_span_and_are_counted(telemetry: CapturedTelemetry) -> None:
    outcome, _ = run(pipeline_with(flaky(2)))

    assert outcome is Outcome.PROCESSED
    attempts = [span for span in telemetry.spans if span.kind == "CONSUMER"]
    assert [(span.attributes["hoptrace.attempt"], span.attributes["hoptrace.outcome"], span.status) for span in attempts] == [
        (1, "retried", "ERROR"),
        (2, "retried", "ERROR"),
        (3, "processed", "UNSET"),
    ]
    assert [span.attributes.get("error.type") for span in attempts] == ["ValueError", "ValueError", None]
    assert counts(telemetry, "hoptrace.stage.retries") == {None: 2}
    assert counts(telemetry, "messaging.process.duration") == {None: 1, "ValueError": 2}
    assert counts(telemetry, "hoptrace.stage.dead_lettered") == {}


def test_a_message_no_attempt_is_left_for_is_dead_lettered_from_its_last_attempt(telemetry: CapturedTelemetry) -> None:
    outcome, sender = run(pipeline_with(flaky(9)))

    assert outcome is Outcome.DEAD_LETTERED
    attempts = [span for span in telemetry.spans if span.kind == "CONSUMER"]
    [parked] = [span for span in telemetry.spans if span.name == "send payments.dead-letter"]
    assert [span.attributes["hoptrace.outcome"] for span in attempts] == ["retried", "retried", "dead_lettered"]
    assert parked.parent_span_id == attempts[-1].span_id
    assert [transport.destination for transport, _, _ in sender.sent] == ["payments", "payments.dead-letter"]
    assert sender.sent[1][2]["hoptrace-error"] == "ValueError: attempt 3 refused"
    assert counts(telemetry, "hoptrace.stage.dead_lettered") == {"ValueError": 1}
    assert counts(telemetry, "hoptrace.job.latency") == {None: 1}


class Recorder(Middleware):
    """Writes each hook it gets into a shared list, as ``NAME.hook``."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def before_message(self, message: Incoming) -> None:
        self.calls.append(f"{self.name}.before_message")

    def before_attempt(self, message: Incoming) -> None:
        self.calls.append(f"{self.name}.before_attempt")

    def after_attempt(self, message: Incoming) -> None:
        self.calls.append(f"{self.name}.after_attempt")

    def after_message(self, message: Incoming) -> None:
        self.calls.append(f"{self.name}.after_message:{message.outcome.value if message.outcome else None}")

    def before_publish(self, message: Outgoing) -> None:
        self.calls.append(f"{self.name}.before_publish:{message.transport.destination}")

    def after_publish(self, message: Outgoing) -> None:
        self.calls.append(f"{self.name}.after_publish:{message.transport.destination}")


def test_before_hooks_run_in_order_and_after_hooks_in_reverse() -> None:
    calls: list[str] = []
    pipeline = pipeline_with(flaky(0))
    sender = Sender()
    publisher = PipelinePublisher(pipeline, {"kafka": sender, "celery": sender}, middleware=[Recorder("a", calls), Recorder("b", calls)])
    publisher.publish(pipeline["charge"], {"order": 1})
    processor = StageProcessor(pipeline, pipeline["charge"], publisher, middleware=[Recorder("a", calls), Recorder("b", calls)])

    assert processor.process(Delivery({"order": 1}, dict_pairs(sender.sent[0][2], fields()))) is Outcome.PROCESSED

    assert calls == [
        "a.before_publish:payments",
        "b.before_publish:payments",
        "b.after_publish:payments",
        "a.after_publish:payments",
        "a.before_message",
        "b.before_message",
        "a.before_attempt",
        "b.before_attempt",
        "a.before_publish:orders.charged",
        "b.before_publish:orders.charged",
        "b.after_publish:orders.charged",
        "a.after_publish:orders.charged",
        "b.after_attempt",
        "a.after_attempt",
        "b.after_message:processed",
        "a.after_message:processed",
    ]


class Broken(Middleware):
    """Every hook raises."""

    def before_message(self, message: Incoming) -> None:
        raise RuntimeError("broken before_message")

    def before_attempt(self, message: Incoming) -> None:
        raise RuntimeError("broken before_attempt")

    def after_attempt(self, message: Incoming) -> None:
        raise RuntimeError("broken after_attempt")

    def before_publish(self, message: Outgoing) -> None:
        raise RuntimeError("broken before_publish")


def test_a_failing_hook_is_logged_and_never_fails_the_message(telemetry: CapturedTelemetry, caplog: pytest.LogCaptureFixture) -> None:
    from hoptrace.pipeline.defaults import default_middleware
    from hoptrace.pipeline.instruments import Instruments

    pipeline = pipeline_with(flaky(0))
    calls: list[str] = []
    chain = [Broken(), *default_middleware(pipeline, Instruments.of()), Recorder("last", calls)]
    with caplog.at_level(logging.ERROR, logger="hoptrace.pipeline.middleware"):
        outcome, sender = run(pipeline, chain)

    assert outcome is Outcome.PROCESSED
    assert [transport.destination for transport, _, _ in sender.sent] == ["payments", "orders.charged"]
    assert [span.name for span in telemetry.spans] == ["send payments", "send orders.charged", "process payments"]
    assert "last.after_message:processed" in calls
    failed = [record.getMessage() for record in caplog.records]
    assert failed == [
        "middleware hook Broken.before_publish failed for a message of stage charge; the message goes on",
        "middleware hook Broken.before_message failed for a message of stage charge; the message goes on",
        "middleware hook Broken.before_attempt failed for a message of stage charge; the message goes on",
        "middleware hook Broken.before_publish failed for a message of stage ship; the message goes on",
        "middleware hook Broken.after_attempt failed for a message of stage charge; the message goes on",
    ]


class BrokenRetries(Middleware):
    """A retry policy that crashes when asked."""

    def after_attempt(self, message: Incoming) -> None:
        raise RuntimeError("no decision")


def test_when_the_retry_decision_fails_the_message_is_dead_lettered_not_lost(telemetry: CapturedTelemetry) -> None:
    outcome, sender = run(pipeline_with(flaky(9)), [BrokenRetries()])

    assert outcome is Outcome.DEAD_LETTERED
    assert [transport.destination for transport, _, _ in sender.sent] == ["payments", "payments.dead-letter"]


def test_counts_of_instruments_made_before_any_global_provider_do_not_run_on_into_a_capture() -> None:
    # A fresh interpreter: hoptrace's instruments made on the API's proxy (no SDK yet), then two capture blocks.
    script = "\n".join(
        [
            "from hoptrace.pipeline.instruments import Instruments",
            "from hoptrace.testing import capture_telemetry",
            "from tests.test_processing import counts, flaky, pipeline_with, run",
            "Instruments.of()",
            "for _ in range(2):",
            "    with capture_telemetry() as captured:",
            "        run(pipeline_with(flaky(0)))",
            "    print(counts(captured, 'messaging.process.duration'), counts(captured, 'messaging.client.consumed.messages'))",
        ]
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["{None: 1} {None: 1}", "{None: 1} {None: 1}"]
