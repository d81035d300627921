"""A job's identity and start time, carried in baggage from its first publish to its last stage."""

from __future__ import annotations

import time
import uuid

from opentelemetry import baggage
from opentelemetry.context import Context

from pipeline.semconv import BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT


def ensure_job(context: Context) -> Context:
    """CONTEXT with a job in its baggage: the one already there, or a new id started now."""
    if baggage.get_baggage(BAGGAGE_JOB_ID, context) is not None:
        return context
    context = baggage.set_baggage(BAGGAGE_JOB_ID, uuid.uuid4().hex, context)
    return baggage.set_baggage(BAGGAGE_JOB_STARTED_AT, f"{time.time():.6f}", context)


def job_id(context: Context | None = None) -> str | None:
    """The job id in CONTEXT's baggage (default: the current context), if any."""
    value = baggage.get_baggage(BAGGAGE_JOB_ID, context)
    return str(value) if value is not None else None


def job_started_at(context: Context | None = None) -> float | None:
    """When the job began (epoch seconds), from baggage; None when missing or not a number."""
    value = baggage.get_baggage(BAGGAGE_JOB_STARTED_AT, context)
    try:
        return float(str(value)) if value is not None else None
    except ValueError:
        return None
