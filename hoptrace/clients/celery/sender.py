"""Sending pipeline messages to Celery queues (any broker Celery supports; hoptrace uses Redis)."""

from __future__ import annotations

from collections.abc import Mapping

from celery import Celery

from hoptrace.pipeline import semconv
from hoptrace.pipeline.stages import CeleryTransport, Payload, Transport
from hoptrace.producers.publisher import Done


class CelerySender:
    """Sends each payload as the single argument of its stage's task, headers as message headers."""

    def __init__(self, app: Celery) -> None:
        """Send through APP's broker connection pool."""
        self.app = app

    def send(self, transport: Transport, payload: Payload, headers: Mapping[str, str], done: Done) -> None:
        """Send PAYLOAD to the queue, waiting for the broker; DONE gets the task id as the message id."""
        assert isinstance(transport, CeleryTransport)
        result = self.app.send_task(transport.task, args=(dict(payload),), queue=transport.queue, headers=dict(headers))
        done({semconv.MESSAGING_MESSAGE_ID: result.id}, None)
