"""A Celery worker's health file: ready once it consumes its queues, and a heartbeat while its consumer is connected.

Written by the worker's main process (``hoptrace probe`` reads it): ``worker_ready`` makes it
ready, a daemon thread beats every few seconds while the consumer's broker connection is up,
and ``worker_shutdown`` makes it not ready.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from hoptrace.pipeline.health import HealthFile

BEAT_EVERY_S = 5.0


def report_health(health: HealthFile) -> None:
    """Keep HEALTH current for the Celery worker this process is about to run."""
    stopping = threading.Event()

    def beat(consumer: Any) -> None:
        while not stopping.wait(BEAT_EVERY_S):
            connection = getattr(consumer, "connection", None)
            if connection is not None and connection.connected:
                health.beat(force=True)

    def ready(sender: Any = None, **_: Any) -> None:
        health.ready(True)
        threading.Thread(target=beat, args=(sender,), name="hoptrace-celery-health", daemon=True).start()

    def stopped(**_: Any) -> None:
        stopping.set()
        health.ready(False)

    worker_ready.connect(ready, weak=False)
    worker_shutdown.connect(stopped, weak=False)
