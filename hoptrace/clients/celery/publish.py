"""Publishing Celery tasks, for any app: a PRODUCER ``send {queue}`` span per message and hoptrace's headers in it.

Every publish (``delay``, ``apply_async``, ``send_task`` by name, retries, canvas members,
beat) goes through Celery's ``before_task_publish`` and ``after_task_publish`` signals. The
span starts in the first, where the message headers are written (replacing what a retried
task's old headers carried: ``traceparent``, ``baggage``, ``hoptrace-sent-at``), and ends in
the second; when publishing raises, Celery sends no ``after_task_publish``, so the wrapper of
``Celery.send_task`` ends it with the error instead. No context is left attached either way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry import context as otel_context

from hoptrace.instrumentation import dropin
from hoptrace.pipeline import propagation, semconv
from hoptrace.pipeline.carriers import DICT_SETTER
from hoptrace.pipeline.messages import Outgoing, is_owned
from hoptrace.pipeline.middleware import BoundHooks
from hoptrace.pipeline.stages import CeleryTransport

logger = logging.getLogger(__name__)

_pending = threading.local()
"""Per thread: task id -> the ``Outgoing`` whose span is open (between the two signals), and its hooks."""


def _open() -> dict[str, tuple[Outgoing, BoundHooks]]:
    if not hasattr(_pending, "messages"):
        _pending.messages = {}
    return _pending.messages  # type: ignore[no-any-return]


def _skipped(sender: object) -> bool:
    """Messages hoptrace's own publisher sends, or its own stage tasks retry, are traced already."""
    return is_owned() or str(sender).startswith(semconv.CELERY_TASK_PREFIX)


def before_publish(pipeline: str, sender: Any = None, headers: dict[str, Any] | None = None, routing_key: str | None = None, **_: Any) -> None:
    """``before_task_publish``: start the send span and write the propagation headers into HEADERS."""
    if headers is None or _skipped(sender):
        return
    try:
        name, queue = str(sender), str(routing_key or "celery")
        stage, hooks = dropin.lane(pipeline, ("send", name, queue), lambda: dropin.stage(name, CeleryTransport(queue, name)))
        message = Outgoing.published_in(otel_context.get_current(), stage, stage.transport, {}, {})
        hooks.before_publish(message)
        propagation.inject(headers, DICT_SETTER, message.sending_context or message.context)
        message.answer = {semconv.MESSAGING_MESSAGE_ID: str(headers.get("id", ""))}
        _open()[str(headers.get("id"))] = (message, hooks)
    except Exception:  # noqa: BLE001 - publishing goes on without telemetry
        logger.exception("hoptrace could not trace the publish of %s", sender)


def after_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``after_task_publish``: the broker took the message; end its span."""
    found = _open().pop(str((headers or {}).get("id")), None)
    if found is not None:
        message, hooks = found
        hooks.after_publish(message)


def publish_failed(error: BaseException) -> None:
    """``Celery.send_task`` raised: end, with ERROR, every span of this thread's publishes that got no answer."""
    for message, hooks in _open().values():
        message.error = error
        hooks.after_publish(message)
    _open().clear()
