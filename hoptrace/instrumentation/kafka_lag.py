"""``hoptrace.kafka.consumer.lag`` of instrumented consumers (kafka-python, confluent-kafka, aiokafka), from their own assignment.

Per assigned partition: highwater (the offset the next produced record gets, known from the
last fetch response) minus the consumer's position (the next offset it hands out). Both are
in the consumer's memory; each client has its ``LagSource`` that reads them:

- kafka-python (``clients.kafka_python.traced_consumer.kafka_python_lags``): ``position()`` is not used: besides possible network
  round-trips, it raises (and so clears) errors cached for the next ``poll()``, which the user's
  code would then never see; the position is read from the consumer's subscription state instead;
- confluent-kafka (``clients.confluent.traced_clients.confluent_lags``): ``position()`` and the cached
  ``get_watermark_offsets``, both local to librdkafka;
- aiokafka (``clients.aiokafka.traced_clients.aiokafka_lags``): the position from the subscription state, as for
  kafka-python (aiokafka's ``position()`` is a coroutine that may wait on the network).

No admin client is used.

Partitions not fetched yet (no highwater) are left out. Consumers are not thread-safe, so the
lag is computed in the consumer's own thread, by the instrumentation's wrappers, at most once per
``REFRESH_S``; an observable gauge, registered once per meter provider, reports the last
snapshot of every live instrumented consumer and never touches a consumer. A consumer that sits
in a long handler keeps its last snapshot.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from hoptrace.pipeline import semconv
from hoptrace.pipeline.attributes import consumer_attributes
from hoptrace.pipeline.stages import Stage

REFRESH_S = 1.0
"""Least time between two lag computations of one consumer."""

LagSource = Callable[[Any], Iterable[tuple[str, int, int]]]
"""Reads a consumer's (topic, partition, lag) per fetched partition of its assignment, in the consumer's thread."""

_live: weakref.WeakSet[ConsumerLag] = weakref.WeakSet()
_registered: weakref.WeakSet[MeterProvider] = weakref.WeakSet()
_lock = threading.Lock()


class ConsumerLag:
    """The lag of one consumer's assigned partitions, as last computed in the consumer's thread."""

    def __init__(self, pipeline: str, stage_of: Callable[[str], Stage], source: LagSource) -> None:
        """Report under PIPELINE, each topic as the stage STAGE_OF(topic), the lags SOURCE reads of the consumer."""
        self._pipeline = pipeline
        self._stage_of = stage_of
        self._source = source
        self._due = 0.0
        self.observations: tuple[Observation, ...] = ()
        """One per fetched partition of the assignment, when last computed."""

    def refresh(self, consumer: object) -> None:
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

    def _lags(self, consumer: object) -> Iterable[Observation]:
        for topic, partition, lag in self._source(consumer):
            attributes = {**consumer_attributes(self._pipeline, self._stage_of(topic)), semconv.MESSAGING_PARTITION: str(partition)}
            yield Observation(max(0, lag), attributes)


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
