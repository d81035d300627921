"""Processing one message of a stage, the same for every transport.

Around the user's handler: a CONSUMER ``process`` span continuing the publisher's trace (or
linked to it), the job id, the metrics, and the retry policy. Every message ends processed
or dead-lettered; which one is returned, put on the span and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline import jobs, propagation, semconv
from hoptrace.pipeline.instruments import Instruments, consumer_attributes
from hoptrace.pipeline.stage_context import Publisher, StageContext
from hoptrace.pipeline.stages import Payload, Pipeline, Stage

logger = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 30.0
"""Longest wait for the brokers to accept a message's forwards before the attempt counts as failed."""


class Outcome(str, Enum):
    """How a message left the worker."""

    PROCESSED = "processed"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class Delivery:
    """One message as a worker took it from its transport."""

    payload: Payload
    headers: Iterable[tuple[object, object]]
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    """What the transport knows: partition, offset, message id."""
    decode_error: str | None = None
    """Why the body could not be read; the message is then dead-lettered without running the handler."""


class UndecodableMessage(ValueError):
    """A message body that is not the JSON object a handler expects."""


class StageProcessor:
    """Runs one stage's handler on deliveries, with tracing, metrics, retries and dead-lettering."""

    def __init__(
        self,
        pipeline: Pipeline,
        stage: Stage,
        publisher: Publisher,
        instruments: Instruments,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """Process messages of STAGE, forwarding and dead-lettering through PUBLISHER."""
        self.pipeline = pipeline
        self.stage = stage
        self._publisher = publisher
        self._metrics = instruments
        self._tracer = trace.get_tracer("hoptrace", tracer_provider=tracer_provider)
        self._stages = {each.name: each for each in pipeline}
        self._attributes = consumer_attributes(pipeline, stage)
        self._span_name = f"process {stage.transport.destination}"

    def process(self, delivery: Delivery) -> Outcome:
        """Run the handler until it succeeds or the retry policy gives up; then dead-letter."""
        started = time.time()
        extracted = propagation.extract(delivery.headers, self.pipeline.baggage_allowlist)
        if jobs.job_id(extracted.context) is None:  # published outside hoptrace: the job starts here
            extracted = replace(extracted, context=jobs.ensure_job(extracted.context))
        self._metrics.consumed.add(1, self._attributes)
        if extracted.fallbacks:
            self._metrics.fallbacks.add(1, self._attributes)
        if extracted.sent_at is not None:
            self._metrics.queue_wait.record(max(0.0, started - extracted.sent_at), self._attributes)
        self._metrics.in_flight.add(1, self._attributes)
        try:
            outcome = self._attempts(delivery, extracted)
        finally:
            self._metrics.in_flight.add(-1, self._attributes)
        job_started = jobs.job_started_at(extracted.context)
        if job_started is not None:
            self._metrics.job_latency.record(max(0.0, time.time() - job_started), self._attributes)
        return outcome

    def _attempts(self, delivery: Delivery, extracted: propagation.Extracted) -> Outcome:
        policy = self.stage.retry
        for attempt in range(1, policy.max_attempts + 1):
            last = attempt == policy.max_attempts or delivery.decode_error is not None
            if self._attempt(delivery, extracted.context, attempt, last):
                return Outcome.PROCESSED
            if last:
                return Outcome.DEAD_LETTERED
            self._metrics.retries.add(1, self._attributes)
            time.sleep(policy.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last attempt returns")

    def _discard_unconfirmed(self) -> None:
        """Forget forwards of a failed attempt (the next attempt sends them again: at least once)."""
        try:
            self._publisher.confirm(CONFIRM_TIMEOUT_S)
        except Exception as error:  # already failing; the attempt's own error is what counts
            logger.debug("stage %s: forwards of a failed attempt were refused too: %s", self.stage.name, error)

    def _span_parent(self, context: Context) -> tuple[Context, list[Link]]:
        """Parent context and links: the producer as parent, or (``links=True``) as a link of a new root."""
        if not self.stage.links:
            return context, []
        producer = trace.get_current_span(context).get_span_context()
        root = trace.set_span_in_context(trace.INVALID_SPAN, context)  # keeps the baggage
        return root, [Link(producer)] if producer.is_valid else []

    def _attempt(self, delivery: Delivery, context: Context, attempt: int, last: bool) -> bool:
        """One run of the handler in its own span; True when it succeeded. On the last failure, dead-letter."""
        parent, links = self._span_parent(context)
        span = self._tracer.start_span(
            self._span_name,
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                **self._attributes,
                **delivery.attributes,
                semconv.MESSAGING_OPERATION_TYPE: "process",
                semconv.MESSAGING_OPERATION_NAME: "process",
                semconv.JOB_ID: jobs.job_id(context) or "",
                semconv.ATTEMPT: attempt,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, context))  # the span, and the message's baggage
        began = time.perf_counter()
        try:
            if delivery.decode_error is not None:
                raise UndecodableMessage(delivery.decode_error)
            self.stage.handler(delivery.payload, StageContext(self.stage, self._publisher, self._stages, attempt))
            # Only forwards the brokers accepted make the message done; a refused one fails the attempt.
            self._publisher.confirm(CONFIRM_TIMEOUT_S)
        except Exception as error:  # the handler's failure is the message's, never the worker's
            self._discard_unconfirmed()
            failed = {**self._attributes, semconv.ERROR_TYPE: type(error).__qualname__}
            self._metrics.process_duration.record(time.perf_counter() - began, failed)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
            span.set_attribute(semconv.OUTCOME, Outcome.DEAD_LETTERED.value if last else "retried")
            logger.warning("stage %s attempt %d failed: %s: %s", self.stage.name, attempt, type(error).__name__, error)
            if last:
                self._publisher.dead_letter(self.stage, delivery.payload, error)
                self._publisher.confirm(CONFIRM_TIMEOUT_S)  # not parked: raise, so the worker keeps the message
                self._metrics.dead_lettered.add(1, failed)
            return False
        else:
            self._metrics.process_duration.record(time.perf_counter() - began, self._attributes)
            span.set_attribute(semconv.OUTCOME, Outcome.PROCESSED.value)
            return True
        finally:
            otel_context.detach(token)
            span.end()
