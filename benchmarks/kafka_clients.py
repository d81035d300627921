"""The measured Kafka client processes (run by ``benchmarks.kafka_hop``, one process per client and run).

``produce`` sends COUNT payloads of about 1 KB to a stage's topic and writes
``{"first": epoch_s, "last_ack": epoch_s, "count": n, "cpu_s": s, "cpu_by_thread_s": {...}, "gc_s": [...], "kafka_crc": ...}``
to a result file (``cpu_s``: the process's CPU time, every thread, from the first send to the last
acknowledgement; ``cpu_by_thread_s``: the same per Python thread, by name, and ``(native threads)``
for the rest, e.g. gRPC's own; ``kafka_crc``: the CRC kafka-python used, see ``benchmarks.crc``; and for
``hoptrace``, ``quiet_publish_cpu_us``: see below); every variant waits
for the broker's acknowledgements every CONFIRM_EVERY records (as ``hoptrace publish`` does):

* ``none``: a plain ``KafkaProducer.send`` of the JSON bytes; no OpenTelemetry at all.
* ``stock``: the same, with the stock ``KafkaInstrumentor`` (a PRODUCER span per send, exported
  in batches over OTLP gRPC; tracing only).
* ``hoptrace``: ``Runtime.publisher`` (``PipelinePublisher`` + ``KafkaSender``), with telemetry
  configured from ``OTEL_*`` and the start-up heap frozen (``pipeline.heap``) exactly as ``hoptrace publish``
  does: the ``none`` and ``stock`` producers, which are not hoptrace, keep the collector as it is. With ``--quiet-publishes N``
  (the Kafka hop section's), after the measured run it times N more publishes with the same
  middleware, one ``DiscardSender`` per system (``quiet_publish_cpu_us``: main-thread CPU µs per
  publish): hoptrace's publish alone, with no live client around it, to hold against what the
  ``MainThread`` spent beyond ``none``'s.

The first send waits for the start signal (``BENCH_GO``, see ``benchmarks.completion``).

``consume`` is the consuming side of the baselines (hoptrace's own consumer is the real
``hoptrace worker SPEC --no-monitor``); it calls the stage's own handler for each record,
after ``json.loads``, until COUNT records were handled:

* ``--loop poll``: a ``poll()`` loop committing the offsets of each polled batch (as
  ``KafkaStageWorker`` does), no OpenTelemetry.
* ``--loop iterate``: ``for record in consumer``, committing every 500 records (the default
  ``max_poll_records``); with ``--tracing stock`` the stock ``KafkaInstrumentor`` makes a
  CONSUMER span in each ``__next__`` (it ends before the handler runs: the stock
  instrumentation only wraps ``KafkaConsumer.__next__``).
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from benchmarks import crc
from benchmarks.completion import wait_for_go
from benchmarks.cpu_split import CpuSplit
from benchmarks.discard import DiscardSender
from benchmarks.pipelines import payload
from benchmarks.stock import stock_tracer_provider
from hoptrace.loader import load_pipeline
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import KafkaTransport, Pipeline, Stage
from hoptrace.producers.publisher import PipelinePublisher

ITERATE_COMMIT_EVERY = 500


def _stage(spec: str, name: str, settings: Settings) -> tuple[Pipeline, Stage, KafkaTransport]:
    pipeline = load_pipeline(spec, settings.namespace)
    stage = pipeline[name]
    assert isinstance(stage.transport, KafkaTransport), f"stage {name!r} of {spec} is not a Kafka stage"
    return pipeline, stage, stage.transport


def _instrument_stock(service_name: str) -> Callable[[], None]:
    """Trace kafka-python with the stock KafkaInstrumentor; returns the provider's shutdown."""
    from opentelemetry.instrumentation.kafka import KafkaInstrumentor

    provider = stock_tracer_provider(service_name)
    KafkaInstrumentor().instrument(tracer_provider=provider)
    return provider.shutdown


def produce(tracing: str, spec: str, stage_name: str, count: int, confirm_every: int, quiet_publishes: int = 0) -> dict[str, Any]:
    """Send COUNT payloads to the stage's topic as TRACING says; the first send and last acknowledgement times.

    With QUIET_PUBLISHES, hoptrace's producer then times that many publishes through discarding senders.
    """
    settings = Settings()
    pipeline, stage, transport = _stage(spec, stage_name, settings)
    quiet: Callable[[], float] | None = None
    if tracing == "hoptrace":
        from hoptrace.clients.celery.app import celery_app
        from hoptrace.pipeline import heap
        from hoptrace.runtime import Runtime

        runtime = Runtime(pipeline, settings, "publisher", celery_app(pipeline, settings))
        heap.freeze(settings)  # as ``hoptrace publish`` does once it is set up
        publisher = runtime.publisher
        send: Callable[[dict[str, Any]], object] = lambda message: publisher.publish(stage, message)  # noqa: E731
        confirm: Callable[[], None] = lambda: publisher.confirm(30.0)  # noqa: E731
        close: Callable[[], None] = runtime.shutdown
        if quiet_publishes:
            discarding = {each.transport.system: DiscardSender() for each in pipeline}
            quiet_publisher = PipelinePublisher(pipeline, discarding, middleware=runtime.middleware)
            quiet = lambda: _publish_cpu_us(quiet_publisher, stage, quiet_publishes)  # noqa: E731
    else:
        shutdown = _instrument_stock("bench-kafka-producer") if tracing == "stock" else (lambda: None)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, client_id=f"hoptrace-{pipeline.name}")
        futures: list[Any] = []

        def send(message: dict[str, Any]) -> object:
            futures.append(producer.send(transport.topic, value=json.dumps(message).encode()))
            return None

        def confirm() -> None:
            for future in futures:
                future.get(30.0)
            futures.clear()

        def close() -> None:
            producer.close(timeout=5)
            shutdown()

    wait_for_go()
    first, split = time.time(), CpuSplit()
    for number in range(count):
        send(payload(number))
        if (number + 1) % confirm_every == 0:
            confirm()
    confirm()
    last, used = time.time(), split.result()
    result = {"first": first, "last_ack": last, "count": count, "kafka_crc": crc.active()}
    result |= {key: used[key] for key in ("cpu_s", "cpu_by_thread_s", "gc_s")}
    if quiet is not None:
        result["quiet_publish_cpu_us"] = quiet()
    close()
    return result


def _publish_cpu_us(publisher: PipelinePublisher, stage: Stage, count: int) -> float:
    """Main-thread CPU µs per publish of COUNT payloads to STAGE through PUBLISHER."""
    began = time.thread_time()
    for number in range(count):
        publisher.publish(stage, payload(number))
    return (time.thread_time() - began) / count * 1e6


def consume(tracing: str, loop: str, spec: str, stage_name: str, count: int) -> dict[str, Any]:
    """Handle COUNT records of the stage's topic in its group, as LOOP and TRACING say; then return."""
    settings = Settings()
    pipeline, stage, transport = _stage(spec, stage_name, settings)
    shutdown = _instrument_stock("bench-kafka-consumer") if tracing == "stock" else (lambda: None)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers,
        group_id=transport.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=f"hoptrace-{pipeline.name}-{stage.name}",
    )
    consumer.subscribe([transport.topic])
    try:
        handled = _handle(consumer, loop, stage.handler, count)
    finally:  # also on SIGTERM: leave the group, so it can be deleted at once
        consumer.close(autocommit=False)
        shutdown()
    return {"handled": handled}


def _handle(consumer: KafkaConsumer, loop: str, handler: Callable[[Any, Any], None], count: int) -> int:
    """Hand COUNT records to HANDLER as LOOP says, committing as the module docstring tells; how many were handled."""
    handled = 0
    if loop == "poll":
        while handled < count:
            done: dict[TopicPartition, OffsetAndMetadata] = {}
            for partition, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    handler(json.loads(record.value), None)
                    done[partition] = OffsetAndMetadata(record.offset + 1, "", -1)
                    handled += 1
            if done:
                consumer.commit(done)
    else:
        pending: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in consumer:
            handler(json.loads(record.value), None)
            pending[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(record.offset + 1, "", -1)
            handled += 1
            if handled % ITERATE_COMMIT_EVERY == 0 or handled >= count:
                consumer.commit(dict(pending))
                pending.clear()
            if handled >= count:
                break
    return handled


def _interrupt(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {number}")


def main() -> None:
    """Parse the command line and run one client; the result goes to ``--result`` as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_clients", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("produce", "consume"))
    parser.add_argument("--tracing", choices=("none", "stock", "hoptrace"), default="none")
    parser.add_argument("--loop", choices=("poll", "iterate"), default="poll")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--confirm-every", type=int, default=500)
    parser.add_argument("--quiet-publishes", type=int, default=0, help="hoptrace only: publishes timed through discarding senders after the run")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    if args.role == "produce":
        result = produce(args.tracing, args.spec, args.stage, args.count, args.confirm_every, args.quiet_publishes)
    else:
        result = consume(args.tracing, args.loop, args.spec, args.stage, args.count)
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
