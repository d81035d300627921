"""What the consumer wrappers of both Kafka clients share: the record processing open on one consumer, and lists that process as they are iterated.

A ``ConsumerState`` keeps at most one ``RecordProcessing`` open per consumer: starting the next
record's ends the previous one's, and ``settle`` ends it at the client calls that mean the user's
code is done with it (the next poll, a commit, close). ``TracedRecords`` is the list type of a
batch (kafka-python's ``poll()`` and aiokafka's ``getmany()`` per partition, confluent-kafka's ``consume()``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from hoptrace.instrumentation import dropin
from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.instrumentation.kafka_lag import ConsumerLag, LagSource
from hoptrace.instrumentation.kafka_records import PIPELINE_DEFAULT, RecordProcessing, consumed, record_stage

MAX_UNRELEASED = 8
"""Ended processings whose context could not be detached yet, kept per consumer for a later try."""


class ConsumerState:
    """What the instrumentation keeps on one consumer, of either client: the record processing open now, and the lag."""

    def __init__(self, group: str | None, lags: LagSource) -> None:
        """For a consumer in GROUP (None: no group) whose partitions' lags LAGS reads."""
        self.group = group
        self.open: RecordProcessing | None = None
        self._unreleased: list[RecordProcessing] = []
        self.lag = ConsumerLag(dropin.pipeline_name(PIPELINE_DEFAULT), partial(record_stage, group=group), lags)

    def start(self, record: object) -> RecordProcessing | None:
        """End what is open, then start RECORD's processing and make it current; None for a client event that is no record."""
        self.settle()
        taken = consumed(record)
        if taken is None:
            return None
        started = RecordProcessing(taken, self.group)
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

    def close(self) -> None:
        """The consumer closes: end what is open (failed, when it closes because of an exception) and stop reporting its lag."""
        raised = sys.exc_info()[1]  # set when closed from ``__exit__`` or an ``except`` block
        self.settle(raised if isinstance(raised, Exception) else None)
        self.lag.stop()

    def batch(self, consumer: object, batch: dict[Any, list[Any]], kind: str) -> dict[Any, list[Any]]:
        """BATCH (records per partition, from kafka-python's ``poll()`` or aiokafka's ``getmany()``, the client call KIND) with each list
        processing as it is iterated, after a refresh of CONSUMER's lag; BATCH itself when hoptrace fails."""
        with contained(kind):
            self.lag.refresh(consumer)
        with contained(kind):
            return {partition: TracedRecords(records, self) for partition, records in batch.items()}
        return batch

    def iterate(self, records: Iterable[Any]) -> Iterator[Any]:
        """RECORDS, each processed from the step that hands it out until the next step (or the end, or ``close()``)."""
        mine: RecordProcessing | None = None
        try:
            for record in records:
                mine = None
                with contained("iterating a batch of records"):
                    mine = self.start(record)
                yield record
        finally:
            if mine is not None and self.open is mine:
                with contained("iterating a batch of records"):
                    self.settle()


class TracedRecords(list):  # type: ignore[type-arg]
    """A batch of records (a partition's from ``poll()`` or ``getmany()``; ``consume()``'s): a plain list; iterating it processes each record."""

    def __init__(self, records: Iterable[Any], state: ConsumerState) -> None:
        """RECORDS, processed through STATE as they are iterated."""
        super().__init__(records)
        self._state = state

    def __iter__(self) -> Iterator[Any]:
        """Each record, its process span current until the next one is asked for."""
        return self._state.iterate(list.__iter__(self))

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        """Pickled or copied, it is a plain list (without this, pickle would iterate it, and its state does not pickle)."""
        return list, (self[:],)


STATE = "_hoptrace_kafka"
"""The consumer instance's attribute holding its ``ConsumerState`` (kafka-python, aiokafka)."""


def state_of(consumer: Any, group: str | None, lags: LagSource) -> ConsumerState:
    """CONSUMER's state, made on first use (for a consumer in GROUP whose lags LAGS reads)."""
    state = consumer.__dict__.get(STATE)
    if state is None:
        state = consumer.__dict__[STATE] = ConsumerState(group, lags)
    return state
