"""The attribute sets that every span and metric point of a stage carries, built once per stage.

Low-cardinality by design: pipeline, stage, messaging system, destination and (for Kafka
consumers) the consumer group. Job ids and payload fields never become metric attributes.
The dicts are cached and shared: copy one before changing it.
"""

from __future__ import annotations

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
