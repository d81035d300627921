"""``hoptrace.queue.depth`` (and the oldest message's age) of every queue a Celery worker consumes, once per worker host.

Started in the worker's main process when it is ready (``worker_ready``), for the queues it
consumes, when the broker is Redis; read in the background (``hoptrace.gauges``), so metric
collection never waits on Redis. Pool processes forked from it report nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from hoptrace.clients.celery.queue_depth import RedisQueueDepth
from hoptrace.gauges.refresher import GaugeRefresher
from hoptrace.pipeline import semconv

logger = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _queues(consumer: Any) -> list[str]:
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        return sorted(queue.name for queue in task_consumer.queues)
    return sorted(consumer.app.amqp.queues.consume_from)


def start_depth(consumer: Any, pipeline: str) -> GaugeRefresher | None:
    """Report the depth of the queues CONSUMER (a Celery worker's consumer) reads, under PIPELINE; None when the broker is not Redis."""
    app = consumer.app
    url = str(app.conf.broker_url or app.connection_for_read().as_uri(include_password=True))
    if not url.startswith(REDIS_SCHEMES):
        logger.info("queue depth is reported for Redis brokers only; this worker's broker is %s", url.split("://", 1)[0])
        return None
    queues = {
        queue: {semconv.PIPELINE: pipeline, semconv.MESSAGING_SYSTEM: "celery", semconv.MESSAGING_DESTINATION: queue} for queue in _queues(consumer)
    }
    key_prefix = str((app.conf.broker_transport_options or {}).get("global_keyprefix", ""))
    refresher = GaugeRefresher({"redis": RedisQueueDepth(url, queues, key_prefix)}, this_process_only=True)
    refresher.start()
    return refresher
