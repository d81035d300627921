"""Celery messages a hoptrace worker cannot read are dead-lettered by their stage, never dropped.

Celery's consumer logs and discards a message whose body does not decode, whose task it does not
know, or that is not a task message at all, and stops on one whose body has the wrong shape (the
message, restored, then stops every worker that takes it); kombu's Redis channel raises on a list
item that is not a message envelope (its Redis list pop has already taken it), or crashes on one
that is JSON but no envelope. On a queue of a hoptrace stage, each
of these is instead sent again to the stage's own task, its text in place of the payload and the
reason in the ``UNREADABLE_HEADER`` header; the stage then dead-letters it as a Kafka stage does an
undecodable record (``UndecodableMessage``: counted, logged, parked on ``<queue>.dead-letter``).
The original is acknowledged once the new one is sent: at least once, as every hoptrace message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer
from kombu.message import Message
from vine import promise

from hoptrace.workers.processing import undecodable_payload

logger = logging.getLogger(__name__)

UNREADABLE_HEADER = "hoptrace-unreadable"
"""Why a message that comes back to its stage's task could not be read."""
TASKS_OPTION = "hoptrace_queue_tasks"
"""The Celery setting holding ``{queue: task name}`` of the pipeline's stages (``install``)."""
UNREADABLE_CONTENT_TYPE = "application/x-hoptrace-unreadable"
"""The content type ``envelope`` gives a list item that is no message, so that Celery's decoding refuses it."""


def install(app: Celery, tasks_by_queue: Mapping[str, str]) -> None:
    """Have APP's workers send unreadable messages of the queues in TASKS_BY_QUEUE back to those queues' tasks."""
    app.conf.update({TASKS_OPTION: dict(tasks_by_queue), "worker_consumer": f"{__name__}:UnreadableAwareConsumer"})


def envelope(item: str, queue: str) -> dict[str, Any]:
    """A message envelope around a Redis list ITEM of QUEUE that is none, for Celery's consumer to find unreadable."""
    properties = {"delivery_tag": uuid.uuid4().hex, "delivery_info": {"exchange": "", "routing_key": queue}, "body_encoding": "utf-8"}
    return {"body": item, "content-type": UNREADABLE_CONTENT_TYPE, "content-encoding": "utf-8", "headers": {}, "properties": properties}


def is_envelope(message: object) -> bool:
    """Whether MESSAGE (a decoded Redis list item) has what kombu reads of a message envelope: properties, a delivery tag and info."""
    properties = message.get("properties") if isinstance(message, dict) else None
    return isinstance(properties, dict) and "delivery_tag" in properties and isinstance(properties.get("delivery_info"), dict)


def reason_of(request: object) -> str | None:
    """Why the message of a task REQUEST could not be read; None for a readable one."""
    found = vars(request).get(UNREADABLE_HEADER)
    return None if found is None else str(found)


class UnreadableAwareConsumer(Consumer):
    """Celery's consumer, which sends unreadable messages of the pipeline's queues back to their stage instead of dropping them."""

    def create_task_handler(self, promise: Any = promise) -> Callable[[Message], Any]:
        """Celery's handler of task messages, for which a body of the wrong shape (``[]`` or ``{}`` as JSON) is invalid, not fatal.

        Celery unpacks the body outside its own error handling: the ``ValueError`` or ``TypeError`` stopped the
        worker, and the message, restored, stopped the next one (found by the fuzzer).
        """
        handle = super().create_task_handler(promise)

        def on_task_received(message: Message) -> Any:
            try:
                return handle(message)
            except (ValueError, TypeError) as exc:  # raised before the task ran: the message was neither taken nor acknowledged
                return self.on_invalid_task(None, message, exc)

        return on_task_received

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """A body that does not decode."""
        if not self._sent_back(message, f"the body does not decode: {type(exc).__name__}: {exc}"):
            super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        """A message that is not a task message."""
        if not self._sent_back(message, "not a task message"):
            super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        """A task message for a task this worker does not have."""
        if not self._sent_back(message, f"no such task here: {exc}"):
            super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        """A task message Celery finds malformed."""
        if not self._sent_back(message, f"not a valid task message: {exc}"):
            super().on_invalid_task(body, message, exc)

    def _sent_back(self, message: Message, reason: str) -> bool:
        """Send MESSAGE to its queue's stage task as unreadable for REASON, then acknowledge it; False when the queue is no stage's."""
        queue = str((message.delivery_info or {}).get("routing_key") or "")
        task = (self.app.conf.get(TASKS_OPTION) or {}).get(queue)
        if task is None:
            return False
        body = message.body
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        self.app.send_task(task, args=[undecodable_payload(text)], queue=queue, headers={UNREADABLE_HEADER: reason[:500]})
        message.ack()
        logger.warning("queue %s: a message that cannot be read (%s) goes to its stage's task, to be dead-lettered", queue, reason[:200])
        return True
