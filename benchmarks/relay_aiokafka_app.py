"""A plain aiokafka relay, written the way a user writes one: no OpenTelemetry, no hoptrace.

    python benchmarks/relay_aiokafka_app.py --bootstrap HOST:PORT --source IN --sink OUT --group G --count N --result PATH

The asyncio twin of ``relay_app.py`` (whose command line it takes): ``async for record in consumer``
over topic IN in consumer group G (offsets committed by hand every 500 records), ``json.loads``
each value and ``await producer.send`` it to topic OUT as JSON again (enqueued, not awaited to the
broker); after N records, ``await producer.flush()``. It writes to PATH, as JSON: ``count``,
``cpu_s`` (the CPU time of the whole process from the first record to the end of the flush),
``seconds`` (wall clock, the same span), ``batching`` (empty) and ``clients``: the module of what
runs as ``AIOKafkaProducer.send`` and ``AIOKafkaConsumer.getone`` (an instrumentor's wrapper, or
aiokafka's own), which says whose instrumentation (if any) is in place; and ``cpu_by_thread_s``, ``gc_s``, ``gc_runs`` (``cpu_split``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cpu_split import CpuSplit  # the script's own folder is first on sys.path
from relay_app import arguments

COMMIT_EVERY = 500


def _module(method: Any) -> str:
    """The module of METHOD, or of the wrapper an instrumentor put around it."""
    wrapper = getattr(method, "_self_wrapper", None)
    return (wrapper or method).__module__


async def relay(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, sink: str, count: int) -> dict[str, Any]:
    """Relay COUNT records from CONSUMER to topic SINK, then flush; the CPU and wall time from the first record to the flush's end."""
    handled = 0
    split = CpuSplit()
    async for record in consumer:
        if handled == 0:
            split.mark()
        order = json.loads(record.value)
        await producer.send(sink, json.dumps(order).encode())
        handled += 1
        if handled % COMMIT_EVERY == 0:
            await consumer.commit()
        if handled == count:
            break
    await producer.flush()
    used = split.result()
    await consumer.commit()
    clients = {"producer": _module(AIOKafkaProducer.send), "consumer": _module(AIOKafkaConsumer.getone)}
    return used | {"count": handled, "batching": {}, "clients": clients}


async def main() -> None:
    """Parse the command line, relay, write the result."""
    args = arguments("Relay JSON records from one Kafka topic to another with aiokafka.")
    consumer = AIOKafkaConsumer(
        args.source, bootstrap_servers=args.bootstrap, group_id=args.group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap)
    await consumer.start()
    await producer.start()
    try:
        result = await relay(consumer, producer, args.sink, args.count)
    finally:
        await producer.stop()
        await consumer.stop()
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
