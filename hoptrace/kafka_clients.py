"""Which Kafka client library hoptrace's own stage workers and publisher run on: ``HOPTRACE_KAFKA_CLIENT``.

Each client has a stage consumer (``workers.kafka_python``, ``workers.confluent``) behind the poll
loop's seam and a sender (``producers.kafka``, ``producers.confluent``) behind the publisher's; both
are configured from the same settings (``clients.kafka_options``). A client's modules are imported
only when it is chosen: confluent-kafka is an optional extra (``hoptrace[confluent]``).
"""

from __future__ import annotations

from typing import Protocol

from hoptrace.clients.kafka_options import confluent_client_options, kafka_client_options
from hoptrace.pipeline.settings import Settings
from hoptrace.producers.publisher import Sender
from hoptrace.workers.stage_consumer import Opener


class KafkaSender(Sender, Protocol):
    """A Kafka client's sender: it holds a producer, which closes when the process is done with it."""

    def close(self, timeout_s: float) -> None:
        """Send what is buffered, waiting at most TIMEOUT_S, and close."""
        ...


def stage_opener(settings: Settings) -> Opener:
    """How this process makes its Kafka stage consumers: the chosen client, its security and timeouts from SETTINGS."""
    if settings.kafka_client == "confluent-kafka":
        from hoptrace.workers import confluent

        return confluent.opener(settings.kafka_servers, confluent_client_options(settings), settings.kafka_connect_timeout_s)
    from hoptrace.workers import kafka_python

    return kafka_python.opener(settings.kafka_servers, kafka_client_options(settings))


class KafkaUnreachable(Exception):
    """A Kafka producer could not reach the cluster or authenticate within the connect timeout; its client's error is the cause."""


def kafka_sender(settings: Settings, client_id: str) -> KafkaSender:
    """A sender through a new producer of the chosen client, named CLIENT_ID, configured from SETTINGS and connected.

    Raises ``KafkaUnreachable`` when the cluster does not answer within ``kafka_connect_timeout_s`` or refuses the credentials.
    """
    if settings.kafka_client == "confluent-kafka":
        from confluent_kafka import KafkaException

        from hoptrace.producers.confluent import ConfluentSender

        config = {"bootstrap.servers": ",".join(settings.kafka_servers), "client.id": client_id, **confluent_client_options(settings)}
        try:
            return ConfluentSender(config, settings.kafka_connect_timeout_s)
        except KafkaException as error:
            raise KafkaUnreachable(str(error)) from error
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from hoptrace.producers.kafka import KafkaSender as KafkaPythonSender

    try:
        return KafkaPythonSender(KafkaProducer(bootstrap_servers=settings.kafka_servers, client_id=client_id, **kafka_client_options(settings)))
    except KafkaError as error:
        raise KafkaUnreachable(str(error)) from error
