"""The per-stage numbers of every message, recorded by middleware on hoptrace's instruments.

Consumed, sent (per outcome), redelivered, retried and dead-lettered messages, broken headers and
messages in flight; handler time per attempt (with ``error.type`` on failure), time in the queue, job
latency so far (also per pathway: ``pipeline.pathways``), and publish time until the broker accepted a message.

The metrics middleware also works out each message's pathway, before any attempt, and puts it in the
context its handler runs in, so that what the handler publishes carries it on.

Bound to a stage (``StageMetrics``), every fixed attribute set's series is taken once, so a
message's measurements are appends to them (``instruments.CountSeries``,
``histograms.HistogramSeries``); a histogram the SDK aggregates (a View selects it) or one with
an exemplar filter of the user's own is recorded the general way, with its context.
"""

from __future__ import annotations

import time
from functools import cache

from opentelemetry import trace
from opentelemetry.context import Context, set_value
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanContext

from hoptrace.pipeline import semconv
from hoptrace.pipeline.attributes import Attributes, consumer_attributes, stage_attributes
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.messages import Incoming, Outcome, Outgoing
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.pathways import DEFAULT_DEPTH, PATHWAY_KEY, Pathways, component
from hoptrace.pipeline.stages import Pipeline, Stage, Transport
from hoptrace.pipeline.telemetry.histograms import LocalHistogram


class Recorder:
    """A histogram's measurements for one attribute set: through its series when it has one, else the histogram's own ``record``."""

    __slots__ = ("_attributes", "_histogram", "_series")

    def __init__(self, histogram: Histogram | LocalHistogram, attributes: Attributes) -> None:
        """Record into HISTOGRAM with ATTRIBUTES."""
        self._histogram, self._attributes = histogram, attributes
        self._series = histogram.series(attributes) if isinstance(histogram, LocalHistogram) and histogram.filter_is_standard else None

    def record(self, amount: float, span: SpanContext | None, context: Context) -> None:
        """Record AMOUNT, measured in SPAN (a valid span context, or None) of CONTEXT (what an exemplar filter of the user's own reads)."""
        if self._series is not None:
            self._series.record(amount, span)
        else:
            self._histogram.record(amount, self._attributes, context)


def _span_of(message: Incoming | Outgoing, context: Context) -> SpanContext | None:
    """The valid span context of the message's open span (of CONTEXT when the message has none); None when there is none."""
    if message.span is None:
        return _span_in(context)
    found = message.span.get_span_context()
    return found if found.is_valid else None


def _span_in(context: Context) -> SpanContext | None:
    """The valid span context current in CONTEXT; None when it has none."""
    found = trace.get_current_span(context).get_span_context()
    return found if found.is_valid else None


class MetricsMiddleware(Middleware):
    """Records a pipeline's messages on INSTRUMENTS."""

    def __init__(self, pipeline: Pipeline, instruments: Instruments, pathway_depth: int = DEFAULT_DEPTH) -> None:
        """Measure the messages of PIPELINE; their pathways keep PATHWAY_DEPTH stages, those PIPELINE declares (if it declares any)."""
        self._pipeline = pipeline.name
        self._metrics = instruments
        self._pathways = Pathways(pipeline.name, pathway_depth, [stage.name for stage in pipeline])

    def bind(self, stage: Stage, transport: Transport) -> StageMetrics:
        """The measurements of STAGE's messages and of those published to TRANSPORT."""
        return StageMetrics(self._metrics, self._pipeline, stage, transport, self._pathways)


class StageMetrics(Middleware):
    """One stage's measurements, its constant attribute sets' series taken once."""

    def __init__(self, instruments: Instruments, pipeline: str, stage: Stage, transport: Transport, pathways: Pathways | None = None) -> None:
        """Measure STAGE of PIPELINE's messages, and those it publishes to TRANSPORT, on INSTRUMENTS; follow their PATHWAYS."""
        self._metrics = instruments
        self._pipeline = pipeline
        self._stage = stage
        self._transport = transport
        attributes = consumer_attributes(pipeline, stage)
        self._consumed = instruments.consumed.series(attributes)
        self._fallbacks = instruments.fallbacks.series(attributes)
        self._redeliveries = instruments.redeliveries.series(attributes)
        self._retries = instruments.retries.series(attributes)
        self._in_flight = instruments.in_flight.series(attributes)
        self._queue_wait = Recorder(instruments.queue_wait, attributes)
        self._process_duration = Recorder(instruments.process_duration, attributes)
        self._job_latency = Recorder(instruments.job_latency, attributes)
        self._pathways = pathways or Pathways(pipeline)
        self._component = component(stage.name)
        self._pathway_latency: dict[str, Recorder] = {}  # one per pathway label: at most pathways.MAX_PATHWAYS + 1
        self._sent_ok = instruments.sent.series(self._sent(None))
        self._operation_ok = Recorder(instruments.operation_duration, self._sent(None))

    def before_message(self, message: Incoming) -> None:
        """Put the message's pathway in its context; count the message (and its broken headers); record how long it waited in the queue."""
        pathway = self._pathways.follow(message.pathway_in, self._component, message.attempt > 1)  # attempt: a drop-in Celery retry's
        message.pathway = pathway.label
        message.context = set_value(PATHWAY_KEY, pathway.value, message.context)
        if pathway.refused:
            message.fallbacks += ("malformed_pathway",)
        self._consumed.add(1)
        if message.fallbacks:
            self._fallbacks.add(1)
        if message.delivery.redelivered:
            self._redeliveries.add(1)
        if message.sent_at is not None:
            self._queue_wait.record(max(0.0, message.received_at - message.sent_at), message.parent, message.context)
        self._in_flight.add(1)

    def before_attempt(self, message: Incoming) -> None:
        """Start the attempt's clock."""
        message.attempt_started = time.perf_counter()

    def after_attempt(self, message: Incoming) -> None:
        """Record the handler's time, with the error's type when it failed; count a retry."""
        elapsed = time.perf_counter() - message.attempt_started
        context = message.attempt_context or message.context  # the attempt's span: its exemplar leads to the trace
        if message.error is None:
            self._process_duration.record(elapsed, _span_of(message, context), context)
            return
        failed = self._failed(type(message.error).__qualname__)
        Recorder(self._metrics.process_duration, failed).record(elapsed, _span_of(message, context), context)
        if message.will_retry:
            self._retries.add(1)

    def after_message(self, message: Incoming) -> None:
        """Count a dead letter; record the job's latency up to the end of this stage, and for the message's pathway."""
        self._in_flight.add(-1)
        if message.outcome is None:  # not even parked: the worker keeps it and it comes back
            return
        if message.outcome is Outcome.DEAD_LETTERED and message.error is not None:
            self._metrics.dead_lettered.add(1, self._failed(type(message.error).__qualname__))
        started = message.job_started_at
        if started is not None:
            context = message.attempt_context or message.context
            latency, span = max(0.0, time.time() - started), _span_of(message, context)
            self._job_latency.record(latency, span, context)
            pathway = message.pathway
            if pathway is not None:
                recorder = self._pathway_latency.get(pathway)
                if recorder is None:
                    recorder = self._pathway_latency[pathway] = self._along(pathway)
                recorder.record(latency, span, context)

    def after_publish(self, message: Outgoing) -> None:
        """Count the message as sent, per outcome, and record the time until the broker answered."""
        error = message.error
        context = message.sending_context or message.context
        span = _span_of(message, context)
        if error is None:
            self._sent_ok.add(1)
            self._operation_ok.record(time.perf_counter() - message.started, span, context)
            return
        attributes = self._sent(type(error).__qualname__)
        self._metrics.sent.add(1, attributes)
        Recorder(self._metrics.operation_duration, attributes).record(time.perf_counter() - message.started, span, context)

    def _along(self, pathway: str) -> Recorder:
        """The ``hoptrace.pathway.latency`` of this stage's messages that came along PATHWAY (a label)."""
        attributes = {semconv.PIPELINE: self._pipeline, semconv.STAGE: self._stage.name, semconv.PATHWAY: pathway}
        return Recorder(self._metrics.pathway_latency, attributes)

    @cache  # noqa: B019 - one entry per error type, for the binding's life
    def _failed(self, error_type: str) -> Attributes:
        return {**consumer_attributes(self._pipeline, self._stage), semconv.ERROR_TYPE: error_type}

    @cache  # noqa: B019 - one entry per outcome and error type
    def _sent(self, error_type: str | None) -> Attributes:
        attributes = {**stage_attributes(self._pipeline, self._stage, self._transport), semconv.OUTCOME: "ok" if error_type is None else "error"}
        if error_type is not None:
            attributes[semconv.ERROR_TYPE] = error_type
        return attributes
