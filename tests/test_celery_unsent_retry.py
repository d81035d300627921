"""A Celery stage whose message could be neither processed nor dead-lettered, and whose retry cannot be sent either, gives it back.

Celery's ``Task.retry`` rejects the message without requeueing it when the retry cannot be
published: with a broker away, a message that failed then was dropped. The stage's task is run
here as a worker runs it (a request pushed), its broker a port nothing listens on.
"""

from __future__ import annotations

import socket

import pytest
from celery import Celery
from celery.exceptions import Reject

from hoptrace.clients.celery.worker import register
from hoptrace.pipeline.messages import Delivery, Outcome
from hoptrace.pipeline.stages import Pipeline, Stage


class _Failing:
    """A processor whose dead-lettering failed: it raises, as ``StageProcessor.process`` does then."""

    def process(self, delivery: Delivery) -> Outcome:
        raise ConnectionError("the broker took neither the message's forward nor its dead letter")


class _Runtime:
    def processor(self, stage: Stage) -> _Failing:
        return _Failing()

    def shutdown(self) -> None:
        """Nothing to flush."""


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_retry_that_cannot_be_sent_rejects_the_message_back_onto_its_queue() -> None:
    pipeline = Pipeline("orders")
    pipeline.stage("notify", celery_queue="notify")(lambda payload, ctx: None)
    app = Celery("unsent-retry", broker=f"redis://127.0.0.1:{_unused_port()}/0", set_as_current=False)
    app.conf.broker_connection_retry = False
    app.conf.task_publish_retry = False
    register(app, pipeline, _Runtime())
    task = app.tasks[pipeline["notify"].transport.task]  # type: ignore[union-attr]
    payload = {"order_id": 1}
    task.push_request(
        id="t-1", args=[payload], kwargs={}, delivery_info={"routing_key": "notify"}, is_eager=False, called_directly=False, retries=0, headers={}
    )
    try:
        with pytest.raises(Reject) as rejected:
            task.run(payload)
    finally:
        task.pop_request()
        app.close()
    assert rejected.value.requeue is True
    assert "Connection refused" in str(rejected.value.reason), rejected.value.reason  # the retry failed on the broker, as in an outage
