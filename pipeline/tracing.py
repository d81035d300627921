"""The spans around a message: a PRODUCER ``send <destination>`` per publish, a CONSUMER ``process <destination>`` per attempt.

A process span covers the handler (and the wait for its forwards to be accepted); its parent
is the publish span that sent the message, or, with ``links=True`` on the stage, it starts a
new trace linked to it (fan-in and batches, as the messaging conventions suggest). The
message's baggage stays current either way.

Bound to a stage (``StageTracing``), the span names and attribute sets are built once. Spans
are started by ``telemetry.sdk_internals.spans.LeanTracer`` when the tracer provider's configuration is
one it reproduces exactly (the SDK's samplers, tracer and limits): an unsampled message then
gets no span object beyond its span context, a sampled one a ``HopSpan``; with the flight
recorder on (``pipeline.recorder``), an unsampled one gets a recorded ``HopSpan`` (``LeanTracer.start`` with the recorder),
which ends into the recorder's buffer, and a trace the recorder kept is sampled from then on. Any other
configuration goes through the tracer's own ``start_span``; tests/test_lean_path holds the two
to the same spans.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, ProxyTracerProvider, SpanContext, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline import recorder, semconv
from hoptrace.pipeline.attributes import consumer_attributes, stage_attributes
from hoptrace.pipeline.messages import Incoming, Outcome, Outgoing
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.stages import Pipeline, Stage, Transport
from hoptrace.pipeline.telemetry.sdk_internals.spans import HopSpan, LeanTracer

INSTRUMENTATION_NAME = "hoptrace"
"""The tracer's name (the instrumentation scope of hoptrace's spans)."""


class Tracers:
    """The tracer of an injected provider, or of the global one (resolved at first use, and again while no SDK is set)."""

    def __init__(self, tracer_provider: TracerProvider | None = None, lean: bool = True) -> None:
        """Use TRACER_PROVIDER, or the global provider when None; LEAN=False always takes the tracer's own ``start_span``."""
        self._given = tracer_provider
        self._lean = lean
        self._resolved: tuple[Tracer, LeanTracer | None] | None = None

    def get(self) -> tuple[Tracer, LeanTracer | None]:
        """The tracer, and its lean twin when one reproduces it now (None: use the tracer's ``start_span``)."""
        found = self._resolved
        if found is None:
            provider = self._given or trace.get_tracer_provider()
            tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=provider)
            found = (tracer, LeanTracer.of(tracer) if self._lean else None)
            if not isinstance(provider, ProxyTracerProvider):  # the global one is not set yet: ask again next time
                self._resolved = found
        lean = found[1]
        return found if lean is None or lean.enabled else (found[0], None)


def _links(linked: tuple[SpanContext, ...]) -> list[Link]:
    return [Link(context) for context in linked]


class TracingMiddleware(Middleware):
    """Opens and ends the spans of a pipeline's messages on TRACER_PROVIDER (default: the global one)."""

    def __init__(self, pipeline: Pipeline, tracer_provider: TracerProvider | None = None, *, lean: bool = True) -> None:
        """Trace the messages of PIPELINE; LEAN=False starts every span with the tracer's ``start_span`` (the general path)."""
        self._pipeline = pipeline.name
        self._tracers = Tracers(tracer_provider, lean)

    def bind(self, stage: Stage, transport: Transport) -> StageTracing:
        """The tracing of STAGE's messages (its process spans) and of those published to TRANSPORT (send spans)."""
        return StageTracing(self._tracers, self._pipeline, stage, transport)


class StageTracing(Middleware):
    """The spans of one stage's messages, with their names and constant attributes built once."""

    def __init__(self, tracers: Tracers, pipeline: str, stage: Stage, transport: Transport) -> None:
        """Trace STAGE of PIPELINE's messages (process spans) and those published to TRANSPORT (send spans) with TRACERS."""
        self._tracers = tracers
        self._links = stage.links
        self._process_name = f"process {stage.transport.destination}"
        process = {semconv.MESSAGING_OPERATION_TYPE: "process", semconv.MESSAGING_OPERATION_NAME: "process"}
        self._process_attributes = {**consumer_attributes(pipeline, stage), **process}
        self._send_name = f"send {transport.destination}"
        send = {semconv.MESSAGING_OPERATION_TYPE: "send", semconv.MESSAGING_OPERATION_NAME: "send"}
        self._send_attributes = {**stage_attributes(pipeline, stage, transport), **send}

    def before_attempt(self, message: Incoming) -> None:
        """Start the attempt's CONSUMER span; the handler runs in ``message.attempt_context``."""
        tracer, lean = self._tracers.get()
        parent_context, parent, linked = message.context, message.parent, message.links
        if self._links:  # a new root that keeps the baggage, linked to the producer
            parent_context = trace.set_span_in_context(trace.INVALID_SPAN, message.context)
            linked, parent = (*linked, parent) if parent is not None else linked, None
        if lean is None:
            span = tracer.start_span(self._process_name, parent_context, SpanKind.CONSUMER, self._process_attributes_of(message), _links(linked))
        else:
            recording = recorder.current()
            context = lean.new_context(parent, recording.is_kept if recording is not None else None)
            if context.trace_flags & 1:
                attributes = self._process_attributes_of(message)
                span = lean.start(self._process_name, context, parent, parent_context, SpanKind.CONSUMER, attributes, _links(linked))
            elif recording is not None:
                own = self._own_process_attributes(message)
                name, base = self._process_name, self._process_attributes
                span = lean.start(name, context, parent, parent_context, SpanKind.CONSUMER, own, _links(linked), recorder=recording, base=base)
            else:
                span = NonRecordingSpan(context)
        message.span = span
        message.attempt_context = trace.set_span_in_context(span, message.context)

    def _process_attributes_of(self, message: Incoming) -> dict[str, AttributeValue]:
        return {**self._process_attributes, **self._own_process_attributes(message)}

    @staticmethod
    def _own_process_attributes(message: Incoming) -> dict[str, AttributeValue]:
        """The attributes of MESSAGE's process span that are its own (the stage's constant ones aside)."""
        attributes = {**message.delivery.attributes, semconv.JOB_ID: message.job_id, semconv.ATTEMPT: message.attempt}
        if message.delivery.redelivered:
            attributes[semconv.REDELIVERED] = True
        if message.kept is not None:  # its arrival made the flight recorder keep the job
            attributes[semconv.KEEP_REASON] = message.kept[0]
            if message.kept[1]:
                attributes[semconv.KEEP_PARTIAL] = True
        return attributes

    def after_attempt(self, message: Incoming) -> None:
        """End the attempt's span with its outcome: processed, retried or dead-lettered (the error recorded)."""
        span = message.span
        if span is None or not span.is_recording():
            return
        own = span.set_own if type(span) is HopSpan else span.set_attribute
        error = message.error
        if error is None:
            own(semconv.OUTCOME, Outcome.PROCESSED.value)
        else:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            own(semconv.ERROR_TYPE, type(error).__qualname__)
            own(semconv.OUTCOME, "retried" if message.will_retry else message.gives_up_as.value)
        span.end()

    def before_publish(self, message: Outgoing) -> None:
        """Start the PRODUCER span; the sender runs, and the headers are written, in ``message.sending_context``."""
        tracer, lean = self._tracers.get()
        if lean is None:
            span = tracer.start_span(self._send_name, message.context, SpanKind.PRODUCER, {**self._send_attributes, semconv.JOB_ID: message.job_id})
        else:
            parent = trace.get_current_span(message.context).get_span_context()
            parent = parent if parent.is_valid else None
            recording = recorder.current()
            context = lean.new_context(parent, recording.is_kept if recording is not None else None)
            if context.trace_flags & 1:
                attributes = {**self._send_attributes, semconv.JOB_ID: message.job_id}
                span = lean.start(self._send_name, context, parent, message.context, SpanKind.PRODUCER, attributes)
            elif recording is not None:
                own: dict[str, AttributeValue] = {semconv.JOB_ID: message.job_id}
                span = lean.start(
                    self._send_name, context, parent, message.context, SpanKind.PRODUCER, own, recorder=recording, base=self._send_attributes
                )
            else:
                span = NonRecordingSpan(context)
        message.span = span
        message.sending_context = trace.set_span_in_context(span, message.context)
        message.trace_id = span.get_span_context().trace_id

    def after_publish(self, message: Outgoing) -> None:
        """End the PRODUCER span with what the broker told, or its refusal."""
        span = message.span
        if span is None or not span.is_recording():
            return
        if type(span) is HopSpan:
            for key, value in message.answer.items():
                span.set_own(key, value)
        else:
            span.set_attributes(message.answer)
        if message.error is not None:
            span.record_exception(message.error)
            span.set_status(Status(StatusCode.ERROR, str(message.error)))
        span.end()
