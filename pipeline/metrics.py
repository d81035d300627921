"""Per-stage instruments, created once per process (after any fork) from an injected meter provider.

Attributes stay low-cardinality: pipeline, stage, messaging system, destination, consumer
group, outcome and error type. Job ids and payload fields never become metric attributes.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.util.types import AttributeValue

from pipeline import semconv
from pipeline.stages import KafkaTransport, Pipeline, Stage, Transport

Attributes = Mapping[str, AttributeValue]


def stage_attributes(pipeline: Pipeline, stage: Stage, transport: Transport | None = None) -> dict[str, AttributeValue]:
    """The attributes every instrument of STAGE carries (TRANSPORT: where the message went, default the stage's own)."""
    transport = transport or stage.transport
    return {
        semconv.PIPELINE: pipeline.name,
        semconv.STAGE: stage.name,
        semconv.MESSAGING_SYSTEM: transport.system,
        semconv.MESSAGING_DESTINATION: transport.destination,
    }


def consumer_attributes(pipeline: Pipeline, stage: Stage) -> dict[str, AttributeValue]:
    """``stage_attributes`` of the consuming side: with the consumer group of a Kafka stage."""
    attributes = stage_attributes(pipeline, stage)
    if isinstance(stage.transport, KafkaTransport):
        attributes[semconv.MESSAGING_CONSUMER_GROUP] = stage.transport.group
    return attributes


class Instruments:
    """Every counter and histogram hoptrace records, on one meter."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        """Create the instruments on METER_PROVIDER (default: the global one)."""
        meter = metrics.get_meter("hoptrace", meter_provider=meter_provider)
        self.sent = meter.create_counter("messaging.client.sent.messages", "{message}", "Messages published, per outcome.")
        self.consumed = meter.create_counter("messaging.client.consumed.messages", "{message}", "Messages handed to a worker.")
        self.retries = meter.create_counter("hoptrace.stage.retries", "{message}", "Handler attempts that failed and were tried again.")
        self.dead_lettered = meter.create_counter("hoptrace.stage.dead_lettered", "{message}", "Messages parked on a dead-letter destination.")
        self.fallbacks = meter.create_counter(
            "hoptrace.propagation.fallbacks", "{message}", "Messages whose trace headers were broken and were processed as new roots."
        )
        self.in_flight = meter.create_up_down_counter("hoptrace.stage.in_flight", "{message}", "Messages being processed now.")
        self.process_duration = meter.create_histogram("messaging.process.duration", "s", "Handler time per message.")
        self.queue_wait = meter.create_histogram("hoptrace.queue.wait", "s", "Publish to start of processing: time spent in the queue.")
        self.job_latency = meter.create_histogram("hoptrace.job.latency", "s", "Job start to the end of this stage.")
        self.operation_duration = meter.create_histogram(
            "messaging.client.operation.duration", "s", "Publish time until the broker accepted the message."
        )
