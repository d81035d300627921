"""``hoptrace.kafka.consumer.lag`` of instrumented kafka-python consumers, from their own assignment (no admin client).

Per assigned partition: highwater (the offset the next produced record gets, known from the
last fetch response) minus the consumer's position (the next offset it hands out). Both are
in the consumer's memory. kafka-python's ``position()`` is not used: besides possible
network round-trips, it raises (and so clears) errors cached for the next ``poll()``, which the
user's code would then never see; the position is read from the consumer's subscription
state instead. Partitions not fetched yet (no highwater) are left out.

KafkaConsumer is not thread-safe, so the lag is computed in the consumer's own thread, by the
instrumentation's wrappers, at most once per ``REFRESH_S``; an observable gauge, registered
once per meter provider, reports the last snapshot of every live instrumented consumer and
never touches a consumer. A consumer that sits in a long handler keeps its last snapshot.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable

from kafka import KafkaConsumer
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from hoptrace.pipeline import semconv
from hoptrace.pipeline.attributes import consumer_attributes
from hoptrace.pipeline.stages import Stage

REFRESH_S = 1.0
"""Least time between two lag computations of one consumer."""

_live: weakref.WeakSet[ConsumerLag] = weakref.WeakSet()
_registered: weakref.WeakSet[MeterProvider] = weakref.WeakSet()
_lock = threading.Lock()


class ConsumerLag:
    """The lag of one consumer's assigned partitions, as last computed in the consumer's thread."""

    def __init__(self, pipeline: str, stage_of: Callable[[str], Stage]) -> None:
        """Report under PIPELINE, each topic as the stage STAGE_OF(topic)."""
        self._pipeline = pipeline
        self._stage_of = stage_of
        self._due = 0.0
        self.observations: tuple[Observation, ...] = ()
        """One per fetched partition of the assignment, when last computed."""

    def refresh(self, consumer: KafkaConsumer) -> None:
        """Compute CONSUMER's lag now unless it was done less than ``REFRESH_S`` ago (call it in the consumer's thread)."""
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + REFRESH_S
        self.observations = tuple(self._lags(consumer))
        _live.add(self)
        _register(metrics.get_meter_provider())

    def stop(self) -> None:
        """Report nothing more (the consumer closed)."""
        self.observations = ()
        _live.discard(self)

    def _lags(self, consumer: KafkaConsumer) -> Iterable[Observation]:
        assignment = consumer._subscription.assignment  # noqa: SLF001 - the position in memory; see the module's docstring
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            state = assignment.get(tp)
            position = state.position if state is not None else None
            if highwater is None or position is None:
                continue
            attributes = {**consumer_attributes(self._pipeline, self._stage_of(tp.topic)), semconv.MESSAGING_PARTITION: str(tp.partition)}
            yield Observation(max(0, highwater - position.offset), attributes)


def _observe(options: CallbackOptions) -> Iterable[Observation]:
    """The gauge's callback: the snapshots of every live instrumented consumer (no I/O, no consumer call)."""
    return [observation for lag in list(_live) for observation in lag.observations]


def _register(provider: MeterProvider) -> None:
    """Create the lag gauge on PROVIDER, once."""
    with _lock:
        if provider in _registered:
            return
        _registered.add(provider)
    meter = metrics.get_meter("hoptrace", meter_provider=provider)
    meter.create_observable_gauge(semconv.CONSUMER_LAG, [_observe], "{message}", "Highwater minus position, per assigned partition of a consumer.")
