"""A plain kafka-python relay, written the way a user writes one: no OpenTelemetry, no hoptrace.

    python benchmarks/relay_app.py --bootstrap HOST:PORT --source IN --sink OUT --group G --count N --result PATH

``for record in consumer:`` over topic IN in consumer group G (offsets committed by hand
every 500 records), ``json.loads`` each value and ``producer.send`` it to topic OUT as JSON
again; after N records, ``producer.flush()``. Run it as it is or under ``opentelemetry-instrument``
(``benchmarks.relay`` does both). It writes to PATH, as JSON: ``count``, ``cpu_s`` (the CPU time of
the whole process, every thread, from the first record to the end of the flush), ``seconds``
(wall clock, the same span) and ``batching`` (kafka-python's producer metrics: bytes per batch,
records per produce request, time in the accumulator, record size, errors). Over the same span,
``cpu_split.CpuSplit`` adds ``cpu_by_thread_s`` and ``gc_s`` / ``gc_runs`` (time in garbage collections per generation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cpu_split import CpuSplit  # the script's own folder is first on sys.path
from kafka import KafkaConsumer, KafkaProducer

COMMIT_EVERY = 500
BATCHING = ("batch-size-avg", "batch-size-max", "records-per-request-avg", "record-queue-time-avg", "record-size-avg", "record-error-rate")
"""kafka-python's producer metrics (group ``producer-metrics``) the result keeps."""


def relay(consumer: KafkaConsumer, producer: KafkaProducer, sink: str, count: int) -> dict[str, Any]:
    """Relay COUNT records from CONSUMER to topic SINK, then flush; the CPU and wall time from the first record to the flush's end."""
    handled = 0
    split = CpuSplit()
    for record in consumer:
        if handled == 0:
            split.mark()
        order = json.loads(record.value)
        producer.send(sink, json.dumps(order).encode())
        handled += 1
        if handled % COMMIT_EVERY == 0:
            consumer.commit()
        if handled == count:
            break
    producer.flush()
    used = split.result()
    consumer.commit()
    metrics = (producer.metrics() or {}).get("producer-metrics", {})
    return used | {"count": handled, "batching": {name: metrics.get(name) for name in BATCHING}}


def arguments(description: str) -> argparse.Namespace:
    """The relay's command line (``--bootstrap --source --sink --group --count --result``), parsed; ``relay_confluent_app`` takes the same."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    return parser.parse_args()


def main() -> None:
    """Parse the command line, relay, write the result."""
    args = arguments("Relay JSON records from one Kafka topic to another.")
    consumer = KafkaConsumer(
        args.source, bootstrap_servers=args.bootstrap, group_id=args.group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    try:
        result = relay(consumer, producer, args.sink, args.count)
    finally:
        consumer.close()
        producer.close()
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
