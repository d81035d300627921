"""A plain confluent-kafka relay, written the way a user writes one: no OpenTelemetry, no hoptrace.

    python benchmarks/relay_confluent_app.py --bootstrap HOST:PORT --source IN --sink OUT --group G --count N --result PATH

The confluent-kafka twin of ``relay_app.py`` (whose command line it takes): ``consumer.poll()`` over topic IN in consumer group G
(offsets committed by hand every 500 records), ``json.loads`` each value and ``producer.produce`` it
to topic OUT as JSON again (``producer.poll(0)`` after each, for the delivery reports); after N
records, ``producer.flush()``. It writes to PATH, as JSON: ``count``, ``cpu_s`` (the CPU time of the
whole process, librdkafka's threads too, from the first record to the end of the flush), ``seconds``
(wall clock, the same span), ``batching`` (empty: librdkafka reports its batching only through its
statistics callback) and ``clients``: the module of the producer's and consumer's classes, which says
whose instrumentation (if any) replaced them; and ``cpu_by_thread_s``, ``gc_s``, ``gc_runs`` (``cpu_split``).
"""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Consumer, Producer
from cpu_split import CpuSplit  # the script's own folder is first on sys.path
from relay_app import arguments

COMMIT_EVERY = 500
POLL_S = 1.0


def relay(consumer: Consumer, producer: Producer, sink: str, count: int) -> dict[str, Any]:
    """Relay COUNT records from CONSUMER to topic SINK, then flush; the CPU and wall time from the first record to the flush's end."""
    handled = 0
    split = CpuSplit()
    while handled < count:
        record = consumer.poll(POLL_S)
        if record is None or record.error() is not None:
            continue
        if handled == 0:
            split.mark()
        order = json.loads(record.value())
        producer.produce(sink, json.dumps(order).encode())
        producer.poll(0)
        handled += 1
        if handled % COMMIT_EVERY == 0:
            consumer.commit(asynchronous=False)
    producer.flush()
    used = split.result()
    if handled % COMMIT_EVERY:  # librdkafka refuses a commit with nothing new to commit
        consumer.commit(asynchronous=False)
    clients = {"producer": type(producer).__module__, "consumer": type(consumer).__module__}
    return used | {"count": handled, "batching": {}, "clients": clients}


def main() -> None:
    """Parse the command line, relay, write the result."""
    args = arguments("Relay JSON records from one Kafka topic to another with confluent-kafka.")
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([args.source])
    producer = Producer({"bootstrap.servers": args.bootstrap})
    try:
        result = relay(consumer, producer, args.sink, args.count)
    finally:
        consumer.close()
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
