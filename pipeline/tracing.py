"""The spans around a message: a PRODUCER ``send <destination>`` per publish, a CONSUMER ``process <destination>`` per attempt.

A process span covers the handler (and the wait for its forwards to be accepted); its parent
is the publish span that sent the message, or, with ``links=True`` on the stage, it starts a
new trace linked to it (fan-in and batches, as the messaging conventions suggest). The
message's baggage stays current either way.
"""

from __future__ import annotations

from functools import cache

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider

from hoptrace.pipeline import jobs, semconv
from hoptrace.pipeline.attributes import Attributes, consumer_attributes, stage_attributes
from hoptrace.pipeline.messages import Incoming, Outcome, Outgoing
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.stages import Pipeline, Stage, Transport


class TracingMiddleware(Middleware):
    """Opens and ends the spans of a pipeline's messages on TRACER_PROVIDER (default: the global one)."""

    def __init__(self, pipeline: Pipeline, tracer_provider: TracerProvider | None = None) -> None:
        """Trace the messages of PIPELINE."""
        self._pipeline = pipeline.name
        self._tracer = trace.get_tracer("hoptrace", tracer_provider=tracer_provider)

    def before_attempt(self, message: Incoming) -> None:
        """Start the attempt's CONSUMER span; the handler runs in ``message.attempt_context``."""
        stage = message.stage
        parent, links = message.context, [Link(context) for context in message.links]
        if stage.links:
            producer = trace.get_current_span(message.context).get_span_context()
            parent = trace.set_span_in_context(trace.INVALID_SPAN, message.context)  # a new root that keeps the baggage
            links += [Link(producer)] if producer.is_valid else []
        attributes = {
            **self._process_attributes(stage),
            **message.delivery.attributes,
            semconv.JOB_ID: jobs.job_id(message.context) or "",
            semconv.ATTEMPT: message.attempt,
        }
        if message.delivery.redelivered:
            attributes[semconv.REDELIVERED] = True
        span = self._tracer.start_span(f"process {stage.transport.destination}", parent, SpanKind.CONSUMER, attributes, links)
        message.span = span
        message.attempt_context = trace.set_span_in_context(span, message.context)

    def after_attempt(self, message: Incoming) -> None:
        """End the attempt's span with its outcome: processed, retried or dead-lettered (the error recorded)."""
        span, message.span = message.span, None
        if span is None:
            return
        error = message.error
        if error is None:
            span.set_attribute(semconv.OUTCOME, Outcome.PROCESSED.value)
        else:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
            span.set_attribute(semconv.OUTCOME, "retried" if message.will_retry else message.gives_up_as.value)
        span.end()

    def before_publish(self, message: Outgoing) -> None:
        """Start the PRODUCER span; the sender runs, and the headers are written, in ``message.sending_context``."""
        attributes = {**self._send_attributes(message.stage, message.transport), semconv.JOB_ID: message.job_id}
        span = self._tracer.start_span(f"send {message.transport.destination}", message.context, SpanKind.PRODUCER, attributes)
        message.span = span
        message.sending_context = trace.set_span_in_context(span, message.context)
        message.trace_id = span.get_span_context().trace_id

    def after_publish(self, message: Outgoing) -> None:
        """End the PRODUCER span with what the broker told, or its refusal."""
        span, message.span = message.span, None
        if span is None:
            return
        span.set_attributes(message.answer)
        if message.error is not None:
            span.record_exception(message.error)
            span.set_status(Status(StatusCode.ERROR, str(message.error)))
        span.end()

    @cache  # noqa: B019 - one entry per stage of one pipeline, for the middleware's life
    def _process_attributes(self, stage: Stage) -> Attributes:
        operation = {semconv.MESSAGING_OPERATION_TYPE: "process", semconv.MESSAGING_OPERATION_NAME: "process"}
        return {**consumer_attributes(self._pipeline, stage), **operation}

    @cache  # noqa: B019 - one entry per stage and destination of one pipeline
    def _send_attributes(self, stage: Stage, transport: Transport) -> Attributes:
        operation = {semconv.MESSAGING_OPERATION_TYPE: "send", semconv.MESSAGING_OPERATION_NAME: "send"}
        return {**stage_attributes(self._pipeline, stage, transport), **operation}
