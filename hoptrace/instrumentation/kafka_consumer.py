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

import sys
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord

from hoptrace.instrumentation import dropin
from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.instrumentation.kafka_lag import ConsumerLag
from hoptrace.instrumentation.kafka_records import PIPELINE_DEFAULT, RecordProcessing, record_stage
from hoptrace.pipeline.messages import is_owned

_STATE = "_hoptrace_kafka"
"""The consumer instance's attribute holding its ``ConsumerState``."""
MAX_UNRELEASED = 8
"""Ended processings whose context could not be detached yet, kept per consumer for a later try."""


class ConsumerState:
    """What the instrumentation keeps on one consumer: the record processing open now, and the lag."""

    def __init__(self, group: str | None) -> None:
        """For a consumer in GROUP (None: no group)."""
        self.group = group
        self.open: RecordProcessing | None = None
        self._unreleased: list[RecordProcessing] = []
        self.lag = ConsumerLag(dropin.pipeline_name(PIPELINE_DEFAULT), partial(record_stage, group=group))

    def start(self, record: ConsumerRecord) -> RecordProcessing:
        """End what is open, then start RECORD's processing and make it current."""
        self.settle()
        started = RecordProcessing(record, self.group)
        started.attach()
        self.open = started
        return started

    def settle(self, error: Exception | None = None) -> None:
        """End the open processing (failed with ERROR when given) and detach every context that can be now.

        A context that cannot be detached yet (another context on top of it, another thread)
        is tried again at the next call, newest first, so contexts come off in stack order.
        """
        ending, self.open = self.open, None
        if ending is not None:
            self._unreleased.append(ending)
        kept = [each for each in reversed(self._unreleased) if not each.release()]
        self._unreleased = kept[::-1][-MAX_UNRELEASED:]
        if ending is not None:
            ending.end(error)

    def iterate(self, records: Iterable[ConsumerRecord]) -> Iterator[ConsumerRecord]:
        """RECORDS, each processed from the step that hands it out until the next step (or the end, or ``close()``)."""
        mine: RecordProcessing | None = None
        try:
            for record in records:
                mine = None
                with contained("iterating poll() records"):
                    mine = self.start(record)
                yield record
        finally:
            if mine is not None and self.open is mine:
                with contained("iterating poll() records"):
                    self.settle()


class TracedRecords(list):  # type: ignore[type-arg]
    """A partition's records from ``poll()``: a plain list, except that iterating it processes each record in turn."""

    def __init__(self, records: Iterable[ConsumerRecord], state: ConsumerState) -> None:
        """RECORDS, processed through STATE as they are iterated."""
        super().__init__(records)
        self._state = state

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Each record, its process span current until the next one is asked for."""
        return self._state.iterate(list.__iter__(self))

    def __reduce__(self) -> tuple[type[list[ConsumerRecord]], tuple[list[ConsumerRecord]]]:
        """Pickled or copied, it is a plain list (without this, pickle would iterate it, and its state does not pickle)."""
        return list, (self[:],)


def _state_of(consumer: KafkaConsumer) -> ConsumerState:
    """CONSUMER's state, made on first use."""
    state = consumer.__dict__.get(_STATE)
    if state is None:
        state = consumer.__dict__[_STATE] = ConsumerState(consumer.config.get("group_id"))
    return state


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
    if state is not None:
        with contained("KafkaConsumer.poll"):
            state.lag.refresh(instance)
            return {partition: TracedRecords(records, state) for partition, records in batch.items()}
    return batch


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
            state = instance.__dict__.get(_STATE)
            if state is not None:
                raised = sys.exc_info()[1]  # set when closed from ``__exit__`` or an ``except`` block
                state.settle(raised if isinstance(raised, Exception) else None)
                state.lag.stop()
    return wrapped(*args, **kwargs)
