"""The attribute sets that every span and metric point of a stage carries, built once per stage.

Low-cardinality by design: pipeline, stage, messaging system, destination and (for Kafka
consumers) the consumer group. Job ids and payload fields never become metric attributes.
The dicts are cached and shared: copy one before changing it. Where values come from the
messages themselves (drop-in stages, pathways), ``FirstSeen`` bounds them per pipeline.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from functools import lru_cache

from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline import semconv
from hoptrace.pipeline.stages import KafkaTransport, Stage, Transport

Attributes = dict[str, AttributeValue]


@lru_cache(maxsize=1024)
def stage_attributes(pipeline: str, stage: Stage, transport: Transport | None = None) -> Attributes:
    """What every instrument of STAGE of PIPELINE carries (TRANSPORT: where the message went, default the stage's own)."""
    transport = transport or stage.transport
    return {
        semconv.PIPELINE: pipeline,
        semconv.STAGE: stage.name,
        semconv.MESSAGING_SYSTEM: transport.system,
        semconv.MESSAGING_DESTINATION: transport.destination,
    }


@lru_cache(maxsize=1024)
def consumer_attributes(pipeline: str, stage: Stage) -> Attributes:
    """``stage_attributes`` of the consuming side: with the consumer group of a Kafka stage (when it has one)."""
    attributes = dict(stage_attributes(pipeline, stage))
    if isinstance(stage.transport, KafkaTransport) and stage.transport.group:
        attributes[semconv.MESSAGING_CONSUMER_GROUP] = stage.transport.group
    return attributes


class FirstSeen:
    """Per pipeline, the first distinct values of an attribute met in this process, at most a bound each: the values reported as themselves."""

    def __init__(self) -> None:
        """Nothing met yet."""
        self._seen: dict[str, set[Hashable]] = {}
        self._overflowed: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, pipeline: str, value: Hashable, bound: int) -> tuple[bool, bool]:
        """Whether VALUE is among PIPELINE's first BOUND values; and, when not, whether it is the pipeline's first value beyond (to say so once)."""
        with self._lock:
            seen = self._seen.setdefault(pipeline, set())
            if value in seen or len(seen) < bound:
                seen.add(value)
                return True, False
            first = pipeline not in self._overflowed
            self._overflowed.add(pipeline)
            return False, first

    def clear(self) -> None:
        """Forget every value met (after a fork, in tests)."""
        with self._lock:
            self._seen.clear()
            self._overflowed.clear()


def kafka_position(partition: int, offset: int) -> Attributes:
    """Where a Kafka record is (a delivery's, or a send's once the broker answered): its partition and offset."""
    return {semconv.MESSAGING_PARTITION: str(partition), semconv.MESSAGING_KAFKA_OFFSET: offset}
