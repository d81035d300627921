"""Which Kafka client library hoptrace's own stage workers and publisher run on: ``HOPTRACE_KAFKA_CLIENT``.

Each client's folder (``hoptrace.clients.kafka_python``, ``hoptrace.clients.confluent``) has a stage
consumer behind the poll loop's seam (``consumer.opener``) and a sender behind the publisher's
(``sender.connect``), both configured from the settings. A client's modules are imported only when it is
chosen: confluent-kafka is an optional extra (``hoptrace[confluent]``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hoptrace.pipeline.settings import Settings
from hoptrace.producers.publisher import ClosingSender
from hoptrace.workers.stage_consumer import Opener

FOLDERS = {"kafka-python": "kafka_python", "confluent-kafka": "confluent"}
"""The client folder under ``hoptrace.clients`` of each ``HOPTRACE_KAFKA_CLIENT`` value."""


def _module(settings: Settings, name: str) -> ModuleType:
    return importlib.import_module(f"hoptrace.clients.{FOLDERS[settings.kafka_client]}.{name}")


def stage_opener(settings: Settings) -> Opener:
    """How this process makes its Kafka stage consumers: the chosen client, its security and timeouts from SETTINGS."""
    opener: Opener = _module(settings, "consumer").opener(settings)
    return opener


def kafka_sender(settings: Settings, client_id: str) -> ClosingSender:
    """A sender through a new producer of the chosen client, named CLIENT_ID, connected (``ConnectFailed`` when it cannot)."""
    sender: ClosingSender = _module(settings, "sender").connect(settings, client_id)
    return sender
