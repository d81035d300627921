"""The wrappers of aiokafka's ``AIOKafkaProducer`` and ``AIOKafkaConsumer``: hoptrace's per-message work around their coroutines.

- ``send`` (and so ``send_and_wait``): a PRODUCER ``send {topic}`` span, current while ``send``
  runs; the propagation headers written into a copy of the record's headers, replacing any already
  there; the span ends when the returned future resolves (partition and offset, or the error).
- ``getone`` (and so ``async for record in consumer``): a CONSUMER ``process {topic}`` span for
  the record, current in the caller's task while the user's code handles it (the wrapper runs in
  that task: what it attaches is the task's context), ended at the consumer's next ``getone``,
  ``getmany``, ``commit`` or ``stop``.
  A ``getone`` awaited in a task of its own stays current in that task only: ``asyncio.wait_for``
  before Python 3.12 runs it so (``asyncio.timeout``, Python 3.11+, does not); such code takes
  ``async with hoptrace.kafka.processing(record)`` around its handling.
- ``getmany``: lists whose iteration processes each record in turn (``kafka_loop.TracedRecords``).
- The lag of the consumer's assignment, from its memory (``aiokafka_lags``).

The spans, metrics and stage names are those of the other clients' drop-ins (``kafka_records``,
``kafka_producer``). Calls while hoptrace's own code drives a client pass through untouched.
"""

from __future__ import annotations

from asyncio import CancelledError, Future
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.instrumentation.kafka_loop import STATE, ConsumerState, state_of
from hoptrace.instrumentation.kafka_producer import Answer, Handover, replace_headers, start_publish
from hoptrace.pipeline.messages import is_owned

HEADERS_AT = 5
"""Position of ``headers`` in ``send(topic, value, key, partition, timestamp_ms, headers)``."""


class _Resolved:
    """The done-callback of a send's future: its metadata, or its error, to ``Answer``."""

    __slots__ = ("answer",)

    def __init__(self, answer: Answer) -> None:
        """Pass the outcome on to ANSWER."""
        self.answer = answer

    def __call__(self, future: Future[Any]) -> None:
        """FUTURE is done: resolved, failed or cancelled."""
        with contained("AIOKafkaProducer.send result"):
            if future.cancelled():
                self.answer(CancelledError("the send was cancelled"))
            else:
                self.answer(future.exception() or future.result())


async def wrap_send(wrapped: Any, instance: AIOKafkaProducer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``AIOKafkaProducer.send``: trace the record and propagate its context, unless hoptrace's own code sends it."""
    if is_owned():
        return await wrapped(*args, **kwargs)
    started = None
    with contained("AIOKafkaProducer.send"):
        topic = args[0] if args else kwargs.get("topic")
        headers = args[HEADERS_AT] if len(args) > HEADERS_AT else kwargs.get("headers")
        if isinstance(topic, str) and (headers is None or isinstance(headers, (list, tuple))):
            hooks, message, written = start_publish(topic, None if headers is None else list(headers))
            args, kwargs = replace_headers(args, kwargs, written, HEADERS_AT)
            started = hooks, message
    if started is None:
        return await wrapped(*args, **kwargs)
    hooks, message = started
    with Handover(hooks, message):
        future = await wrapped(*args, **kwargs)
    with contained("AIOKafkaProducer.send"):
        future.add_done_callback(_Resolved(Answer(hooks, message)))
    return future


def aiokafka_lags(consumer: AIOKafkaConsumer) -> Iterable[tuple[str, int, int]]:
    """CONSUMER's lag per partition of its assignment that has a position and a highwater, from its memory (no request)."""
    subscription = consumer._subscription.subscription  # noqa: SLF001 - the position in memory (``position()`` may wait on the network)
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return
    for tp in consumer.assignment():
        state = assignment.state_value(tp)
        highwater = consumer.highwater(tp)
        if state is not None and state.has_valid_position and highwater is not None:
            yield tp.topic, tp.partition, highwater - state.position


def _state(consumer: AIOKafkaConsumer) -> ConsumerState | None:
    """CONSUMER's state when hoptrace traces this call (not while hoptrace's own code drives it); its open processing settled."""
    if is_owned():
        return None
    with contained("AIOKafkaConsumer"):
        state = state_of(consumer, consumer._group_id, aiokafka_lags)  # noqa: SLF001 - the group the consumer was made with
        state.settle()
        return state
    return None


async def wrap_getone(wrapped: Any, instance: AIOKafkaConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``AIOKafkaConsumer.getone``: end the previous record's processing, then start the one handed out, current in the caller's task."""
    state = _state(instance)
    record = await wrapped(*args, **kwargs)
    if state is not None:
        with contained("AIOKafkaConsumer.getone"):
            state.start(record)
            state.lag.refresh(instance)
    return record


async def wrap_getmany(wrapped: Any, instance: AIOKafkaConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``AIOKafkaConsumer.getmany``: end what is open; records of the batch are processed as their lists are iterated."""
    state = _state(instance)
    batch = await wrapped(*args, **kwargs)
    return batch if state is None else state.batch(instance, batch, "AIOKafkaConsumer.getmany")


async def wrap_commit(wrapped: Any, instance: AIOKafkaConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``AIOKafkaConsumer.commit``: the record in hand is done."""
    _state(instance)
    return await wrapped(*args, **kwargs)


async def wrap_stop(wrapped: Any, instance: AIOKafkaConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``AIOKafkaConsumer.stop``: end what is open (failed, when stopping because of an exception) and stop reporting lag."""
    if not is_owned():
        with contained("AIOKafkaConsumer.stop"):
            state = instance.__dict__.get(STATE)
            if state is not None:
                state.close()
    return await wrapped(*args, **kwargs)
