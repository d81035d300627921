"""A job's identity and start time, carried in baggage from its first publish to its last stage."""

from __future__ import annotations

import math
import random
import re
import time

from opentelemetry import baggage
from opentelemetry.baggage import _BAGGAGE_KEY  # read without a mapping proxy around it: the publisher reads it for every message
from opentelemetry.context import Context

from hoptrace.pipeline import w3c
from hoptrace.pipeline.semconv import BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT

JOB_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""A job id taken from a message: 1 to 128 visible ASCII characters (hoptrace makes 32 hex digits); no
space, newline or escape character that would forge a log line or a terminal's output."""


def parse_epoch_seconds(text: str) -> float | None:
    """TEXT as a finite number of seconds; None when it is not one (``nan``, ``inf`` and garbage alike)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def ensure_job(context: Context) -> Context:
    """CONTEXT with a job in its baggage: the one already there, or a new id started now.

    A job id that came without a start time gets one now, so its latency is still measured.
    """
    return job_of(context)[0]


def job_of(context: Context) -> tuple[Context, str, bool]:
    """``ensure_job``'s context, the job's id, and whether the job is new (CONTEXT had no job id).

    The baggage is read once and, when something is missing, written once: the publisher calls
    this for every message.
    """
    members = context.get(_BAGGAGE_KEY) or {}
    job, started = members.get(BAGGAGE_JOB_ID), members.get(BAGGAGE_JOB_STARTED_AT)
    if job is not None and started is not None and parse_epoch_seconds(str(started)) is not None:
        return context, str(job), False
    added: dict[str, str] = {}
    if job is None:
        # Not uuid4: os.urandom releases the GIL, and behind a busy producer thread getting it back
        # took milliseconds (measured in the benchmarks). A job id needs uniqueness, not secrecy.
        job = added[BAGGAGE_JOB_ID] = f"{random.getrandbits(128):032x}"
    added[BAGGAGE_JOB_STARTED_AT] = f"{time.time():.6f}"
    return w3c.with_members(context, added), str(job), BAGGAGE_JOB_ID in added


def job_id(context: Context | None = None) -> str | None:
    """The job id in CONTEXT's baggage (default: the current context), if any."""
    value = baggage.get_baggage(BAGGAGE_JOB_ID, context)
    return str(value) if value is not None else None


def job_started_at(context: Context | None = None) -> float | None:
    """When the job began (epoch seconds), from baggage; None when missing or not a number."""
    value = baggage.get_baggage(BAGGAGE_JOB_STARTED_AT, context)
    return parse_epoch_seconds(str(value)) if value is not None else None
