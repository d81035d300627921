"""Per-stage instruments, created once per process (after any fork) from an injected meter provider.

Attributes stay low-cardinality: pipeline, stage, messaging system, destination, consumer
group, outcome and error type. Job ids and payload fields never become metric attributes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline import semconv
from hoptrace.pipeline.histograms import LocalHistogram, LocalHistograms
from hoptrace.pipeline.stages import KafkaTransport, Pipeline, Stage, Transport

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


class Tally:
    """A count kept in the process and reported by an observable instrument at collection.

    ``add`` is a dictionary update under a lock, not an SDK measurement: on the per-message
    path that is the difference between well under a microsecond and several (attribute
    validation and hashing on every call). Attribute dicts must be built in a fixed key order.
    """

    def __init__(self) -> None:
        """Start with nothing counted."""
        self._counts: dict[tuple[tuple[str, AttributeValue], ...], float] = {}
        self._lock = threading.Lock()

    def add(self, amount: float, attributes: Attributes) -> None:
        """Count AMOUNT (negative for an up-down count) for ATTRIBUTES."""
        key = tuple(attributes.items())
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        """The totals so far, one observation per attribute set (an observable instrument's callback)."""
        with self._lock:
            totals = list(self._counts.items())
        return [Observation(total, dict(key)) for key, total in totals]


class Instruments:
    """Every counter and histogram hoptrace records, on one meter.

    Counts are ``Tally`` objects behind observable counters. Durations are ``LocalHistogram``
    objects when HISTOGRAMS (of a provider made by ``telemetry.configure``) are given, else
    SDK histograms: a provider hoptrace did not build never exports local histograms.
    """

    def __init__(self, meter_provider: MeterProvider | None = None, histograms: LocalHistograms | None = None) -> None:
        """Create the instruments on METER_PROVIDER (default: the global one)."""
        meter = metrics.get_meter("hoptrace", meter_provider=meter_provider)

        def histogram(name: str, description: str) -> Histogram | LocalHistogram:
            if histograms is not None:
                return histograms.create(name, "s", description)
            return meter.create_histogram(name, "s", description)

        def counter(name: str, description: str) -> Tally:
            tally = Tally()
            meter.create_observable_counter(name, [tally.observe], "{message}", description)
            return tally

        self.sent = counter("messaging.client.sent.messages", "Messages published, per outcome.")
        self.consumed = counter("messaging.client.consumed.messages", "Messages handed to a worker.")
        self.retries = counter("hoptrace.stage.retries", "Handler attempts that failed and were tried again.")
        self.dead_lettered = counter("hoptrace.stage.dead_lettered", "Messages parked on a dead-letter destination.")
        self.fallbacks = counter("hoptrace.propagation.fallbacks", "Messages whose trace headers were broken and were processed as new roots.")
        self.in_flight = Tally()
        meter.create_observable_up_down_counter("hoptrace.stage.in_flight", [self.in_flight.observe], "{message}", "Messages being processed now.")
        self.process_duration = histogram("messaging.process.duration", "Handler time per message.")
        self.queue_wait = histogram("hoptrace.queue.wait", "Publish to start of processing: time spent in the queue.")
        self.job_latency = histogram("hoptrace.job.latency", "Job start to the end of this stage.")
        self.operation_duration = histogram("messaging.client.operation.duration", "Publish time until the broker accepted the message.")
