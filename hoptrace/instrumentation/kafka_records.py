"""One consumed Kafka record processed within hoptrace's middleware, and ``processing(record)`` for handlers.

Records of every client hoptrace instruments come in: kafka-python's and aiokafka's ``ConsumerRecord``
(fields) and confluent-kafka's ``Message`` (methods); ``consumed`` reads each into a ``Consumed``.

A ``RecordProcessing`` drives the same hooks as hoptrace's own stage workers
(``workers.processing``): ``receive`` reads the record's untrusted headers, ``before_message``
and ``before_attempt`` open the CONSUMER ``process {topic}`` span and start the clocks, and
``end`` closes them (``after_attempt``, ``after_message``). In between, its context (the span
and the job's baggage) is attached, so the user's code runs inside the span.

The stage of a record is named after the consumer group when there is one, else after the
topic; its retry policy allows a single attempt (retrying is the user's code's business).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from contextvars import Token
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from hoptrace.instrumentation import dropin
from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.pipeline.attributes import kafka_position
from hoptrace.pipeline.carriers import kafka_pairs
from hoptrace.pipeline.messages import Delivery
from hoptrace.pipeline.propagation import fields
from hoptrace.pipeline.receiving import receive
from hoptrace.pipeline.stages import KafkaTransport, Stage

logger = logging.getLogger("hoptrace.instrumentation.kafka")

PIPELINE_DEFAULT = "kafka"
"""The pipeline name of instrumented Kafka code (any client) unless ``HOPTRACE_PIPELINE`` names another."""


def record_stage(topic: str, group: str | None) -> Stage:
    """The stage of records of TOPIC consumed by GROUP (None: no group): named after the group, else the topic."""
    return dropin.stage(group or topic, KafkaTransport(topic, group or ""))


class Consumed(NamedTuple):
    """What hoptrace reads of a consumed record, whichever client handed it out."""

    topic: str
    partition: int
    offset: int
    headers: Sequence[tuple[str, Any]] | None
    """The record's headers as the client gives them: (key, value) pairs, or None."""


def consumed(record: Any) -> Consumed | None:
    """RECORD (a kafka-python or aiokafka ``ConsumerRecord``, a confluent-kafka ``Message``) as a ``Consumed``; None for an ``error()`` event."""
    if callable(record.topic):  # confluent-kafka: accessor methods
        if record.error() is not None:
            return None
        return Consumed(record.topic(), record.partition(), record.offset(), record.headers())
    return Consumed(record.topic, record.partition, record.offset, record.headers)


def _running() -> tuple[int, object]:
    """This thread, and the asyncio task running in it (None outside one): where a context attached now must be detached."""
    loop = asyncio._get_running_loop()  # noqa: SLF001 - asyncio's own test for a running loop, which never raises
    return threading.get_ident(), asyncio.current_task(loop) if loop is not None else None


def _delivery(record: Consumed) -> Delivery:
    """RECORD as the middleware sees it: no payload (the user's code reads the value), raw headers, partition and offset."""
    attributes = kafka_position(record.partition, record.offset)
    return Delivery({}, kafka_pairs(record.headers, fields()), attributes)


class RecordProcessing:
    """The processing of one record: span open and metrics started from construction until ``end``."""

    __slots__ = ("_ended", "_hooks", "_owner", "_token", "context", "message")

    def __init__(self, record: Consumed, group: str | None) -> None:
        """Take RECORD (consumed by GROUP) in and start its processing; nothing is attached yet."""
        topic = record.topic
        stage, self._hooks = dropin.lane(dropin.pipeline_name(PIPELINE_DEFAULT), ("process", topic, group), lambda: record_stage(topic, group))
        self.message = receive(stage, _delivery(record))
        self.context: Context = dropin.begin(self._hooks, self.message, 1)
        """What the user's code runs in: the process span and the message's baggage (attached while it is current)."""
        self._token: Token[Context] | None = None
        self._owner: tuple[int, object] = (0, None)
        self._ended = False

    def attach(self) -> None:
        """Make the processing's context current in this thread, or asyncio task (until ``release``)."""
        self._token = otel_context.attach(self.context)
        self._owner = _running()

    def end(self, error: Exception | None = None) -> None:
        """End the span and record the metrics, processed or (with ERROR) failed; a second call does nothing."""
        if self._ended:
            return
        self._ended = True
        self.message.error = error
        dropin.finish(self._hooks, self.message)

    def release(self) -> bool:
        """Detach the context ``attach`` made current, when that is safe now; True when nothing stays attached.

        Safe means: in the thread and asyncio task that attached it, with it still the current
        context. Otherwise (called from another thread; from a task started while it was current,
        which shares the context but not the token; or the user's code attached a context of its
        own on top that it has yet to detach) it stays attached for a later ``release``: detaching
        now would drop the user's context, and OpenTelemetry would log an error.
        """
        if self._token is None:
            return True
        if _running() != self._owner or otel_context.get_current() is not self.context:
            logger.debug("kept the context of %s attached: not its thread or task, or another context is current", self.message.stage.name)
            return False
        token, self._token = self._token, None
        otel_context.detach(token)
        return True


class processing:  # noqa: N801 - used as a function: ``with processing(record):``
    """Process RECORD inside its own CONSUMER ``process {topic}`` span, current in this thread or task; ``with`` or ``async with`` gives the span.

    RECORD is a record of any client hoptrace instruments (kafka-python, confluent-kafka, aiokafka).
    For handlers that outlive the loop iteration (a thread pool, an asyncio task)::

        with hoptrace.kafka.processing(record, consumer_group="billing"):
            handle(record)

        async with hoptrace.kafka.processing(record, consumer_group="billing"):
            await handle(record)

    The span and metrics are those of a record processed in the loop (stage: CONSUMER_GROUP,
    else the topic), independent of the span the instrumented loop itself opens for the
    record. An exception raised in the block marks the span ERROR (outcome ``failed``) and
    is re-raised. hoptrace's own failures never reach the block.
    """

    __slots__ = ("_group", "_record", "_started")

    def __init__(self, record: Any, consumer_group: str | None = None) -> None:
        """For RECORD, consumed by CONSUMER_GROUP (None: named after its topic); nothing starts before the block."""
        self._record = record
        self._group = consumer_group
        self._started: RecordProcessing | None = None

    def __enter__(self) -> trace.Span:
        """Start the processing and make it current; its span (an invalid one when hoptrace failed)."""
        with contained("processing(record)"):
            taken = consumed(self._record)
            if taken is not None:
                self._started = RecordProcessing(taken, self._group)
                self._started.attach()
        span = self._started.message.span if self._started is not None else None
        return span or trace.INVALID_SPAN

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        """End the processing: failed when the block raised an ``Exception`` (which goes on), else processed."""
        started = self._started
        if started is not None:
            with contained("processing(record)"):
                started.release()
                started.end(error if isinstance(error, Exception) else None)

    async def __aenter__(self) -> trace.Span:
        """``async with``: as ``with``."""
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        """``async with``: as ``with``."""
        self.__exit__(kind, error, traceback)
