"""hoptrace for Kafka handlers that run outside the consumer's loop (threads, asyncio): kafka-python, confluent-kafka, aiokafka.

With the client instrumented (``opentelemetry-instrument``, ``hoptrace.instrument()``), the
loop's own span of a record ends when the loop moves on. A handler that keeps working on the
record elsewhere gets a process span of its own, current in its thread or task::

    import hoptrace.kafka

    def handle(record):
        with hoptrace.kafka.processing(record, consumer_group="billing"):
            ...   # spans made here are its children; a KafkaProducer.send continues the trace

    async def handle_async(record):
        async with hoptrace.kafka.processing(record, consumer_group="billing"):
            ...

An exception raised in the block marks the span ERROR (outcome ``failed``) and goes on up.
"""

from __future__ import annotations

from hoptrace.instrumentation.kafka_records import processing

__all__ = ["processing"]
