"""Running a Celery task, for any app: a CONSUMER ``process {queue}`` span around the task body, and the stage's metrics.

``task_prerun`` and ``task_postrun`` bracket the body in the pool process (and, between them,
what continues the job: the next link of a chain, a chord's body, a retry's publish), so the
span is opened and made current in the first and ended in the second. ``task_retry`` and
``task_failure`` say how the attempt ended. Each attempt is a delivery of its own (a retried
task comes back as a new message), with ``hoptrace.attempt`` = retries + 1; the time a
``countdown``/``eta`` kept it waiting is not counted as time in the queue.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.util.types import AttributeValue

from hoptrace.clients.celery.chords import chord_links, record_chord_member
from hoptrace.instrumentation import dropin
from hoptrace.pipeline import semconv
from hoptrace.pipeline.carriers import celery_request_pairs
from hoptrace.pipeline.messages import Delivery, Incoming
from hoptrace.pipeline.middleware import BoundHooks
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.receiving import receive
from hoptrace.pipeline.stages import CeleryTransport

logger = logging.getLogger(__name__)

_running: dict[str, tuple[Incoming, object, BoundHooks]] = {}
"""Task id -> the message being processed, its context token and its stage's hooks (one per task run; threads pools run several)."""
_lock = threading.Lock()


def _eta(request: Any) -> float | None:
    """The epoch seconds a countdown or eta held the task until, when it had one."""
    eta = getattr(request, "eta", None)
    if not eta:
        return None
    try:
        return (datetime.fromisoformat(eta) if isinstance(eta, str) else eta).timestamp()
    except (TypeError, ValueError):
        return None


def _queue(request: Any) -> str:
    delivery_info = getattr(request, "delivery_info", None) or {}
    return str(delivery_info.get("routing_key") or delivery_info.get("exchange") or "celery")


def started(pipeline: str, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """``task_prerun``: open the attempt's span (current for the body) and count the message."""
    if task is None or task_id is None or str(task.name).startswith(semconv.CELERY_TASK_PREFIX):
        return
    try:
        request = task.request
        name, queue = str(task.name), _queue(request)
        stage, hooks = dropin.lane(pipeline, ("process", name, queue), lambda: dropin.stage(name, CeleryTransport(queue, name)))
        eta = _eta(request)
        attributes: dict[str, AttributeValue] = {semconv.MESSAGING_MESSAGE_ID: str(task_id)}
        if eta is not None:
            attributes[semconv.ETA] = int(eta * 1e9)  # the critical path tells the hold from the wait in the queue
        message = receive(stage, Delivery({}, celery_request_pairs(request, fields()), attributes))
        if eta is not None and message.sent_at is not None:
            message.sent_at = max(message.sent_at, eta)  # waiting for the eta is not waiting in the queue
        message.links = chord_links(task)
        token = otel_context.attach(dropin.begin(hooks, message, int(getattr(request, "retries", 0) or 0) + 1))
        with _lock:
            _running[str(task_id)] = (message, token, hooks)
        record_chord_member(task, message)
    except Exception:  # noqa: BLE001 - the task runs untraced rather than not at all
        logger.exception("hoptrace could not trace task %s", task_id)


def _message(task_id: Any) -> Incoming | None:
    with _lock:
        entry = _running.get(str(task_id))
    return entry[0] if entry is not None else None


def retried(request: Any = None, reason: Any = None, **_: Any) -> None:
    """``task_retry``: the attempt failed and Celery publishes another (its span ends as ``retried``)."""
    message = _message(getattr(request, "id", None))
    if message is not None:
        message.error = reason if isinstance(reason, Exception) else RuntimeError(str(reason))
        message.retry_after_s = 0.0  # the delay is Celery's (countdown/eta), measured on the next delivery


def failed(task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    """``task_failure``: the attempt failed and none follows."""
    message = _message(task_id)
    if message is not None:
        message.error = exception if isinstance(exception, Exception) else RuntimeError(str(exception))


def finished(task_id: str | None = None, **_: Any) -> None:
    """``task_postrun``: end the attempt's span, detach its context, record the message's outcome."""
    with _lock:
        entry = _running.pop(str(task_id), None)
    if entry is None:
        return
    message, token, hooks = entry
    dropin.finish(hooks, message)
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - the body changed the context and left it so; the span is ended regardless
        logger.debug("could not detach the context of task %s", task_id)
