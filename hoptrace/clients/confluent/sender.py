"""Sending pipeline messages to Kafka topics with confluent-kafka (librdkafka), chosen by ``HOPTRACE_KAFKA_CLIENT``.

librdkafka reports deliveries inside ``poll()`` and ``flush()``: each send serves the reports of
earlier ones (``poll(0)``), and waiting for one record flushes until its report came. A send into a
full local queue (the broker away for long) waits for room, as kafka-python's ``send`` blocks, up to
``QUEUE_FULL_WAIT_S``, then raises ``TimeoutError``: an outage, waited out, never the message's fault.
The plain client class is used, so hoptrace's drop-in instrumentation of confluent-kafka never sees these sends.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.cimpl import Producer

from hoptrace.clients.confluent.options import confluent_client_options
from hoptrace.pipeline.attributes import kafka_position
from hoptrace.pipeline.carriers import kafka_headers
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import KafkaTransport, Payload, Transport
from hoptrace.producers.publisher import ConnectFailed, Done

logger = logging.getLogger(__name__)

QUEUE_FULL_WAIT_S = 60.0
"""Longest wait for room in librdkafka's queue (kafka-python's ``max_block_ms``: 60 s)."""


class _Report:
    """The delivery report of one record, to wait for."""

    def __init__(self, producer: Producer, done: Done) -> None:
        self._producer = producer
        self._done = done
        self.came = False
        self.error: KafkaException | None = None

    def __call__(self, error: KafkaError | None, record: Message) -> None:
        """librdkafka's delivery callback: tell the publisher the partition and offset, or the error."""
        self.came = True
        if error is None:
            self._done(kafka_position(record.partition(), record.offset()), None)
        else:
            self.error = KafkaException(error)
            self._done({}, self.error)

    def wait(self, timeout_s: float) -> None:
        """Flush until the report came; raise its error, or ``TimeoutError`` when none came within TIMEOUT_S."""
        deadline = time.monotonic() + timeout_s
        while not self.came:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Kafka did not acknowledge the record within {timeout_s:.1f} s")
            self._producer.flush(left)
        if self.error is not None:
            raise self.error


class ConfluentSender:
    """Sends JSON payloads with text headers through one confluent-kafka ``Producer``."""

    def __init__(self, config: Mapping[str, Any], connect_timeout_s: float) -> None:
        """Send through a producer made with CONFIG (librdkafka settings; in the caller's process, after any fork).

        Raises ``KafkaException`` when the cluster does not answer within CONNECT_TIMEOUT_S or refuses the credentials.
        """
        self.producer = Producer({**config, "logger": logging.getLogger("librdkafka")})
        self.producer.list_topics(timeout=connect_timeout_s)

    def send(self, transport: Transport, payload: Payload, headers: Mapping[str, str], done: Done) -> _Report:
        """Send PAYLOAD as JSON; DONE gets the partition and offset once the broker acknowledged it."""
        assert isinstance(transport, KafkaTransport)
        report = _Report(self.producer, done)
        value, written = json.dumps(payload).encode(), kafka_headers(headers)
        deadline = time.monotonic() + QUEUE_FULL_WAIT_S
        while True:
            try:
                self.producer.produce(transport.topic, value=value, headers=written, on_delivery=report)
                break
            except BufferError:  # librdkafka's queue is full: serve reports, which makes room, until the deadline
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"librdkafka's send queue stayed full for {QUEUE_FULL_WAIT_S:.0f} s: Kafka does not take records") from None
                self.producer.poll(0.1)
        self.producer.poll(0)
        return report

    def close(self, timeout_s: float) -> None:
        """Send what is buffered, waiting at most TIMEOUT_S; say how many records were left unsent."""
        left = self.producer.flush(timeout_s)
        if left:
            logger.warning("%d records were not sent to Kafka within %.1f s of closing", left, timeout_s)


def connect(settings: Settings, client_id: str) -> ConfluentSender:
    """A sender through a new producer named CLIENT_ID, configured from SETTINGS; ``ConnectFailed`` when the cluster does not answer in time."""
    config = {"bootstrap.servers": ",".join(settings.kafka_servers), "client.id": client_id, **confluent_client_options(settings)}
    try:
        return ConfluentSender(config, settings.kafka_connect_timeout_s)
    except KafkaException as error:
        raise ConnectFailed(str(error)) from error
