"""Sending pipeline messages to Kafka topics with kafka-python."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from hoptrace.clients.kafka_python.options import kafka_client_options
from hoptrace.pipeline.attributes import kafka_position
from hoptrace.pipeline.carriers import kafka_headers
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import KafkaTransport, Payload, Transport
from hoptrace.producers.publisher import ConnectFailed, Done, Pending


def _send_method(producer: KafkaProducer) -> Any:
    """``producer.send``, minus the stock KafkaInstrumentor's wrapper when it is installed.

    The stock wrapper appends a second ``traceparent`` to headers that already hold ours;
    hoptrace's own PRODUCER span takes its place. Any other wrapper is kept.
    """
    send = type(producer).send
    wrapper = getattr(send, "_self_wrapper", None)
    if wrapper is not None and getattr(wrapper, "__module__", "").startswith("opentelemetry.instrumentation.kafka"):
        return send.__wrapped__.__get__(producer)
    return producer.send


class KafkaSender:
    """Sends JSON payloads with text headers through one ``KafkaProducer``."""

    def __init__(self, producer: KafkaProducer) -> None:
        """Send through PRODUCER (created by the caller, after any fork)."""
        self.producer = producer
        self._send = _send_method(producer)

    def close(self, timeout_s: float) -> None:
        """Send what is buffered, waiting at most TIMEOUT_S, and close the producer."""
        self.producer.close(timeout=timeout_s)

    def send(self, transport: Transport, payload: Payload, headers: Mapping[str, str], done: Done) -> Pending:
        """Send PAYLOAD as JSON; DONE gets the partition and offset once the broker acknowledged it."""
        assert isinstance(transport, KafkaTransport)
        future = self._send(transport.topic, value=json.dumps(payload).encode(), headers=kafka_headers(headers))
        future.add_callback(lambda metadata: done(kafka_position(metadata.partition, metadata.offset), None))
        future.add_errback(lambda error: done({}, error))
        return _Acknowledgement(future)


class _Acknowledgement:
    """The broker's answer to one record, to wait for."""

    def __init__(self, future: FutureRecordMetadata) -> None:
        self._future = future

    def wait(self, timeout_s: float) -> None:
        """Block until the broker acknowledged the record; raise its error (or a timeout) when it did not."""
        self._future.get(timeout=timeout_s)


def connect(settings: Settings, client_id: str) -> KafkaSender:
    """A sender through a new producer named CLIENT_ID, configured from SETTINGS; ``ConnectFailed`` when it cannot bootstrap."""
    try:
        return KafkaSender(KafkaProducer(bootstrap_servers=settings.kafka_servers, client_id=client_id, **kafka_client_options(settings)))
    except KafkaError as error:
        raise ConnectFailed(str(error)) from error
