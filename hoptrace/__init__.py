"""hoptrace: one OpenTelemetry trace per job across Kafka topics and Celery queues, and per-stage metrics.

The names most code needs are here, imported on first use (so ``import hoptrace`` stays cheap)::

    from hoptrace import Pipeline, RetryPolicy, StageContext
    hoptrace.instrument()    # drop-in: Celery, kafka-python, confluent-kafka and aiokafka code that never imports hoptrace
    hoptrace.keep("refund")  # in a handler: keep this job's trace whole, though the sampler dropped it

The packages: ``hoptrace.pipeline`` (the ground floor, inside every worker and publisher; its
``telemetry`` sub-package makes and sends the spans and points), ``hoptrace.workers`` and
``hoptrace.producers`` (consuming and publishing, on any client), ``hoptrace.clients`` (one folder per
messaging client: kafka-python, confluent-kafka, aiokafka, Celery, and Redis for the job ledger and keep
channel), ``hoptrace.gauges`` (the refresher of depth and lag gauges), ``hoptrace.instrumentation`` (the drop-in's record path),
``hoptrace.view`` (what ``hoptrace watch`` and ``traces`` run) and ``hoptrace.testing``
(``capture_telemetry`` for your tests).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Pipeline": "hoptrace.pipeline.stages",
    "RetryPolicy": "hoptrace.pipeline.stages",
    "PipelineError": "hoptrace.pipeline.stages",
    "StageContext": "hoptrace.pipeline.stage_context",
    "instrument": "hoptrace.instrumentation",
    "uninstrument": "hoptrace.instrumentation",
    "keep": "hoptrace.pipeline.recorder",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """The public name NAME, imported from its module on first use (``hoptrace.kafka`` is a module)."""
    if name == "kafka":
        return importlib.import_module("hoptrace.kafka")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hoptrace' has no attribute {name!r}")
