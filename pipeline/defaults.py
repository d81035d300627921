"""The middleware every stage and publisher runs unless given its own: tracing, metrics and retries, in that order.

Tracing comes first, so its span is open around what the others do and is ended last; the
retry decision comes last before an attempt and so is made first after it, for tracing and
metrics to see.
"""

from __future__ import annotations

from opentelemetry.trace import TracerProvider

from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.metrics import MetricsMiddleware
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.retries import RetryMiddleware
from hoptrace.pipeline.stages import Pipeline
from hoptrace.pipeline.tracing import TracingMiddleware


def default_middleware(pipeline: Pipeline, instruments: Instruments, tracer_provider: TracerProvider | None = None) -> list[Middleware]:
    """Tracing (on TRACER_PROVIDER, default the global one), metrics (on INSTRUMENTS) and retries, for PIPELINE."""
    return [TracingMiddleware(pipeline, tracer_provider), MetricsMiddleware(pipeline, instruments), RetryMiddleware()]
