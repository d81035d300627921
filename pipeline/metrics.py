"""The per-stage numbers of every message, recorded by middleware on hoptrace's instruments.

Consumed, sent (per outcome), redelivered, retried and dead-lettered messages, broken headers and
messages in flight; handler time per attempt (with ``error.type`` on failure), time in the queue, job
latency so far, and publish time until the broker accepted a message.
"""

from __future__ import annotations

import time
from functools import cache

from hoptrace.pipeline import jobs, semconv
from hoptrace.pipeline.attributes import Attributes, consumer_attributes, stage_attributes
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.messages import Incoming, Outcome, Outgoing
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.stages import Pipeline, Stage, Transport


class MetricsMiddleware(Middleware):
    """Records a pipeline's messages on INSTRUMENTS."""

    def __init__(self, pipeline: Pipeline, instruments: Instruments) -> None:
        """Measure the messages of PIPELINE."""
        self._pipeline = pipeline.name
        self._metrics = instruments

    def before_message(self, message: Incoming) -> None:
        """Count the message (and its broken headers); record how long it waited in the queue."""
        attributes = consumer_attributes(self._pipeline, message.stage)
        self._metrics.consumed.add(1, attributes)
        if message.fallbacks:
            self._metrics.fallbacks.add(1, attributes)
        if message.delivery.redelivered:
            self._metrics.redeliveries.add(1, attributes)
        if message.sent_at is not None:
            self._metrics.queue_wait.record(max(0.0, message.received_at - message.sent_at), attributes, message.context)
        self._metrics.in_flight.add(1, attributes)

    def before_attempt(self, message: Incoming) -> None:
        """Start the attempt's clock."""
        message.attempt_started = time.perf_counter()

    def after_attempt(self, message: Incoming) -> None:
        """Record the handler's time, with the error's type when it failed; count a retry."""
        attributes = consumer_attributes(self._pipeline, message.stage)
        elapsed = time.perf_counter() - message.attempt_started
        context = message.attempt_context or message.context  # the attempt's span: its exemplar leads to the trace
        if message.error is None:
            self._metrics.process_duration.record(elapsed, attributes, context)
            return
        self._metrics.process_duration.record(elapsed, self._failed(message.stage, type(message.error).__qualname__), context)
        if message.will_retry:
            self._metrics.retries.add(1, attributes)

    def after_message(self, message: Incoming) -> None:
        """Count a dead letter; record the job's latency up to the end of this stage."""
        attributes = consumer_attributes(self._pipeline, message.stage)
        self._metrics.in_flight.add(-1, attributes)
        if message.outcome is None:  # not even parked: the worker keeps it and it comes back
            return
        if message.outcome is Outcome.DEAD_LETTERED and message.error is not None:
            self._metrics.dead_lettered.add(1, self._failed(message.stage, type(message.error).__qualname__))
        started = jobs.job_started_at(message.context)
        if started is not None:
            self._metrics.job_latency.record(max(0.0, time.time() - started), attributes, message.attempt_context or message.context)

    def after_publish(self, message: Outgoing) -> None:
        """Count the message as sent, per outcome, and record the time until the broker answered."""
        error = message.error
        attributes = self._sent(message.stage, message.transport, None if error is None else type(error).__qualname__)
        self._metrics.sent.add(1, attributes)
        self._metrics.operation_duration.record(time.perf_counter() - message.started, attributes, message.sending_context or message.context)

    @cache  # noqa: B019 - one entry per stage and error type, for the middleware's life
    def _failed(self, stage: Stage, error_type: str) -> Attributes:
        return {**consumer_attributes(self._pipeline, stage), semconv.ERROR_TYPE: error_type}

    @cache  # noqa: B019 - one entry per destination, outcome and error type
    def _sent(self, stage: Stage, transport: Transport, error_type: str | None) -> Attributes:
        attributes = {**stage_attributes(self._pipeline, stage, transport), semconv.OUTCOME: "ok" if error_type is None else "error"}
        if error_type is not None:
            attributes[semconv.ERROR_TYPE] = error_type
        return attributes
