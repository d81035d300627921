"""The wrappers of ``KafkaConsumer``: a process span per record, current while the user's code handles it.

``for record in consumer:`` — ``__next__`` ends the previous record's processing when the loop
asks for the next record, and starts the new one's (span open and its context attached) when
it hands it out; StopIteration leaves nothing open. A loop left by ``break`` or an exception
keeps the last record's span open, and current, until the consumer's next call (below).

``consumer.poll()`` — the returned dict holds ``TracedRecords`` lists: iterating one
(``for record in records:``) ends the previous record's processing and starts the next one's
at each step, and ends the last one when the iteration finishes or its iterator is closed
(``break``, an exception, garbage collection). Indexing, ``len``, slicing and ``reversed`` are
plain list behaviour without spans; a pickled or copied list is a plain one. Limits: whatever
iterates a list processes its records (iterating twice processes twice; ``list(records)``,
``sorted(records)`` or ``[r.value for r in records]`` before the real loop give short spans of
their own); records reached only by index get no span; a record whose handler raises out of
the loop ends as processed, unless the exception is still being handled at ``close()`` (as
with ``with consumer:``), which marks it failed.

Whatever is open also ends at the user's ``poll()``, ``commit()``, ``commit_async()`` and
``close()``. kafka-python's iterator polls internally with ``update_offsets=False``; that call
is passed straight through, as is everything while hoptrace's own workers drive a consumer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer

from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.instrumentation.kafka_loop import STATE, ConsumerState, state_of
from hoptrace.pipeline.messages import is_owned


def _state_of(consumer: KafkaConsumer) -> ConsumerState:
    """CONSUMER's state, made on first use."""
    return state_of(consumer, consumer.config.get("group_id"), kafka_python_lags)


def wrap_next(wrapped: Any, instance: KafkaConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``KafkaConsumer.__next__``: end the previous record's processing, then start the one handed out."""
    if is_owned():
        return wrapped(*args, **kwargs)
    state: ConsumerState | None = None
    with contained("KafkaConsumer.__next__"):
        state = _state_of(instance)
        state.settle()
    record = wrapped(*args, **kwargs)
    if state is not None:
        with contained("KafkaConsumer.__next__"):
            state.start(record)
            state.lag.refresh(instance)
    return record


def _is_iterator_poll(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether this is kafka-python's iterator polling for itself (``update_offsets=False``, an internal argument)."""
    return kwargs.get("update_offsets", args[2] if len(args) > 2 else True) is False


def wrap_poll(wrapped: Any, instance: KafkaConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``KafkaConsumer.poll``: end what is open; records of the batch are processed as their lists are iterated."""
    if is_owned() or _is_iterator_poll(args, kwargs):
        return wrapped(*args, **kwargs)
    state: ConsumerState | None = None
    with contained("KafkaConsumer.poll"):
        state = _state_of(instance)
        state.settle()
    batch = wrapped(*args, **kwargs)
    return batch if state is None else state.batch(instance, batch, "KafkaConsumer.poll")


def wrap_commit(wrapped: Any, instance: KafkaConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``KafkaConsumer.commit`` and ``commit_async``: the record in hand is done."""
    if not is_owned():
        with contained("KafkaConsumer.commit"):
            state = _state_of(instance)
            state.settle()
            state.lag.refresh(instance)
    return wrapped(*args, **kwargs)


def wrap_close(wrapped: Any, instance: KafkaConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``KafkaConsumer.close``: end what is open (failed, when closing because of an exception) and stop reporting lag."""
    if not is_owned():
        with contained("KafkaConsumer.close"):
            state = instance.__dict__.get(STATE)
            if state is not None:
                state.close()
    return wrapped(*args, **kwargs)


def kafka_python_lags(consumer: KafkaConsumer) -> Iterable[tuple[str, int, int]]:
    """A kafka-python CONSUMER's lag per fetched partition of its assignment, from its memory (``instrumentation.kafka_lag`` says why)."""
    assignment = consumer._subscription.assignment  # noqa: SLF001 - the position in memory, as instrumentation.kafka_lag says
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        state = assignment.get(tp)
        position = state.position if state is not None else None
        if highwater is not None and position is not None:
            yield tp.topic, tp.partition, highwater - position.offset
