"""The wrapper of kafka-python's ``KafkaProducer.send``: each record published as every Kafka client's drop-in does (``kafka_producer``)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer

from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.instrumentation.kafka_producer import Answer, Handover, replace_headers, start_publish
from hoptrace.pipeline.messages import Outgoing, is_owned
from hoptrace.pipeline.middleware import BoundHooks

HEADERS_AT = 3
"""Position of ``headers`` in ``send(topic, value, key, headers, partition, timestamp_ms)``."""


def wrap_send(wrapped: Any, instance: KafkaProducer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``KafkaProducer.send``: trace the record and propagate its context, unless hoptrace's own publisher sends it."""
    if is_owned():
        return wrapped(*args, **kwargs)
    started: tuple[BoundHooks, Outgoing, Any] | None = None
    with contained("KafkaProducer.send"):
        topic = args[0] if args else kwargs.get("topic")
        if isinstance(topic, str):
            started = start_publish(topic, args[HEADERS_AT] if len(args) > HEADERS_AT else kwargs.get("headers"))
            args, kwargs = replace_headers(args, kwargs, started[2], HEADERS_AT)
    if started is None:
        return wrapped(*args, **kwargs)
    hooks, message, _ = started
    with Handover(hooks, message):
        future = wrapped(*args, **kwargs)
    with contained("KafkaProducer.send"):
        future.add_both(Answer(hooks, message))  # one callable, called once: with the metadata or the error
    return future
