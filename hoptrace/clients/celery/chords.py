"""A Celery chord's body, linked to every header task it waited for.

The body is published by whichever header task finished last, inside that task's span, so it
joins the job's trace as that task's child; the other header tasks are in the same trace but
not its ancestors. Each header task's process span is therefore written down, when it starts,
under the chord's group id in the Redis result backend (which a chord needs anyway), and the
body's process span starts with a link to each (the messaging conventions' way to show a
fan-in). Without a Redis result backend there are no links; the trace is whole regardless.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanContext, TraceFlags

from hoptrace.pipeline.messages import Incoming

logger = logging.getLogger(__name__)

KEY = "hoptrace:chord:{group}"
"""The Redis list of a chord's header spans, ``trace_id-span_id-flags`` in hex."""
TTL_S = 24 * 3600
"""How long a chord's header spans are kept for its body."""


def _redis(task: Any) -> Any:
    """The result backend's Redis client, when the app's backend is Redis; else None."""
    client = getattr(getattr(getattr(task, "app", None), "backend", None), "client", None)
    return client if client is not None and hasattr(client, "rpush") and hasattr(client, "lrange") else None


def record_chord_member(task: Any, message: Incoming) -> None:
    """When TASK is a chord's header task, write its process span down for the chord's body."""
    request = task.request
    group = getattr(request, "group", None)
    if not (getattr(request, "chord", None) and group and message.span is not None):
        return
    client = _redis(task)  # only now: reading the app's backend is the costly part of a task that is no chord member
    if client is None:
        return
    context = message.span.get_span_context()
    try:
        with suppress_instrumentation(), client.pipeline() as pipe:
            pipe.rpush(KEY.format(group=group), f"{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}")
            pipe.expire(KEY.format(group=group), TTL_S)
            pipe.execute()
    except Exception as error:  # noqa: BLE001 - a missing link is better than a failed task
        logger.warning("could not record chord member %s for its body's links: %s", request.id, error)


def chord_links(task: Any) -> tuple[SpanContext, ...]:
    """When TASK may be a chord's body (it belongs to a group but is no header task), the header spans it waited for."""
    request = task.request
    group = getattr(request, "group", None)
    if not group or getattr(request, "chord", None):
        return ()
    client = _redis(task)
    if client is None:
        return ()
    try:
        with suppress_instrumentation():
            members = client.lrange(KEY.format(group=group), 0, -1)
    except Exception as error:  # noqa: BLE001 - the body runs without links
        logger.warning("could not read the chord members of %s: %s", group, error)
        return ()
    links = []
    for member in members:
        try:
            trace_id, span_id, flags = (member.decode() if isinstance(member, bytes) else str(member)).split("-")
            links.append(SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16))))
        except ValueError:
            logger.debug("ignored a malformed chord member %r", member)
    return tuple(links)
