"""The middleware every stage and publisher runs unless given its own: the flight recorder's triggers, tracing, metrics and retries.

Tracing comes before metrics and retries, so its span is open around what they do and is ended last; the
retry decision comes last before an attempt and so is made first after it, for tracing and
metrics to see. The triggers come before tracing: a job kept before an attempt has that attempt's
span sampled from its start; after an attempt they see the retry decision and the ended span.
"""

from __future__ import annotations

from opentelemetry.trace import TracerProvider

from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.keeping import KeepMiddleware
from hoptrace.pipeline.metrics import MetricsMiddleware
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.pathways import DEFAULT_DEPTH
from hoptrace.pipeline.retries import RetryMiddleware
from hoptrace.pipeline.stages import Pipeline
from hoptrace.pipeline.tracing import TracingMiddleware


def default_middleware(
    pipeline: Pipeline,
    instruments: Instruments,
    tracer_provider: TracerProvider | None = None,
    slow_after_s: float | None = None,
    pathway_depth: int = DEFAULT_DEPTH,
) -> list[Middleware]:
    """Keep triggers, tracing (on TRACER_PROVIDER, default the global one), metrics (on INSTRUMENTS) and retries, for PIPELINE.

    SLOW_AFTER_S is the objective of the stages and pipeline that set none (``pipeline.keeping``); PATHWAY_DEPTH
    the stages a pathway keeps (``pipeline.pathways``).
    """
    return [
        KeepMiddleware(pipeline, slow_after_s),
        TracingMiddleware(pipeline, tracer_provider),
        MetricsMiddleware(pipeline, instruments, pathway_depth),
        RetryMiddleware(),
    ]
