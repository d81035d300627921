"""A tracer provider without the SDK's span work, to tell it apart from the rest of a hop's cost.

Its tracer hands out one prepared ``NonRecordingSpan`` for every span asked for: no sampler, no
id generation, no attributes kept, no span processor. The span context is valid and carries
the sampled flag of the hop it stands in for, so everything else runs as with the SDK: the
``traceparent`` is written and read, the current span decides exemplars, hoptrace's middleware
does all its own work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

TRACE_ID, SPAN_ID = 0x5B8AA5A2D2C872E8321CF37308D69DF2, 0x051581BF3CB55C13


class SpanlessTracer(trace.Tracer):
    """Returns the same non-recording span for every ``start_span``."""

    def __init__(self, sampled: bool) -> None:
        """Hand out a span whose context is sampled or not, as SAMPLED says."""
        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        self._span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, False, flags))

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        """The prepared span."""
        return self._span

    @contextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Iterator[trace.Span]:
        """The prepared span, current for the block."""
        with trace.use_span(self._span, end_on_exit=False):
            yield self._span


class SpanlessTracerProvider(trace.TracerProvider):
    """Gives one ``SpanlessTracer`` to every caller."""

    def __init__(self, sampled: bool) -> None:
        """Spans sampled or not, as SAMPLED says."""
        self._tracer = SpanlessTracer(sampled)

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        """The spanless tracer."""
        return self._tracer
