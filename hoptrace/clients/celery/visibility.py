"""Celery over Redis: a dead worker's messages come back within seconds, a live worker's never.

kombu's Redis transport keeps every message a worker fetched and has not acknowledged in two
keys: ``unacked`` (hash, delivery tag -> message) and ``unacked_index`` (sorted set, delivery
tag -> when it was fetched). Every ``unacked_restore_interval`` seconds each worker runs
``restore_visible``: under the ``unacked_mutex`` lock it puts back on its queue, flagged
``redelivered``, every message whose time is older than ``visibility_timeout``. kombu's default
timeout, one hour, is how long the messages a kill -9'd worker had prefetched used to wait.

hoptrace shortens the timeout (``RecoverySettings``) and keeps a live worker's messages out of
the sweep with a heartbeat (``VisibilityHeartbeat``, a consumer bootstep): every
``heartbeat_s`` it sets the time of each message the worker still holds (prefetched, reserved,
running, or waiting for its ETA) to now, under the same mutex so that no sweep interleaves with a
refresh, and with ``ZADD XX`` so that a message acknowledged meanwhile is not brought back. A
worker whose heartbeat stops (killed, or frozen longer than the timeout) has its messages put
back within ``visibility_timeout_s + restore_interval_s``. Every worker sharing a Redis database
must use the same timeout: the unacked index is one per database, swept by every worker.

What a worker holds is also known after it lost it. A worker that loses its broker connection
(Redis restarted, a network cut) keeps running the tasks it had started, but Celery drops the
messages it had only prefetched: their delivery tags belong to the dead channel. A worker killed
-9 leaves everything it held. ``hoptrace worker`` gives its Celery process a held set of its own
(``held_key``: one per pipeline and host slot, so the process that replaces a dead one gets the dead
one's), where the one-step fetch records each message it takes. Whenever the consumer starts (first
start, or after a reconnect) the heartbeat puts back at once every message of that set still
unacknowledged that the worker does not run now: they come back within seconds of the reconnect or
the restart, not after the visibility timeout. Putting back is kombu's ``restore_by_tag``, a
transaction that does nothing for a message acknowledged meanwhile. Two live workers must never
share a held set (they would put back each other's messages: processed twice, never lost).

With ``one_step_fetch`` (the default) a worker also takes each message from its queue into the
unacked index in one step (``redis_fetch``), so a worker killed while fetching loses none.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, bootsteps
from celery.worker import state
from opentelemetry.instrumentation.utils import suppress_instrumentation
from pydantic_settings import BaseSettings, SettingsConfigDict

from hoptrace.clients.celery import redis_fetch

logger = logging.getLogger(__name__)

MUTEX_EXPIRE_S = 10
"""Lifetime of the sweep lock (kombu: 300 s): a worker killed while sweeping no longer blocks every sweep for 5 minutes.
A sweep outliving it is harmless: each restore is a transaction that finds an already restored message gone."""
MUTEX_WAIT_S = 0.5
"""How long a heartbeat waits for a sweep in progress before refreshing anyway (sweeps take milliseconds)."""


class RecoverySettings(BaseSettings):
    """How fast the messages of a dead Celery worker come back, from ``HOPTRACE_CELERY_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="HOPTRACE_CELERY_", frozen=True)

    visibility_timeout_s: float = 30.0
    """A held message not refreshed for this long is put back on its queue. A worker must not freeze this long."""
    one_step_fetch: bool = True
    """Fetch with ``redis_fetch`` (no message in flight); False: kombu's BRPOP, which loses the message being fetched on a kill -9."""
    fetch_wait_s: float = redis_fetch.WAIT_S
    """With ``one_step_fetch``: how long an idle worker waits before it looks at its queues again (its added latency)."""

    @property
    def heartbeat_s(self) -> float:
        """How often a live worker refreshes its messages: six times per timeout, so five missed beats are survived."""
        return self.visibility_timeout_s / 6

    @property
    def restore_interval_s(self) -> float:
        """How often each worker sweeps for messages to put back."""
        return min(2.0, self.visibility_timeout_s / 4)

    def transport_options(self) -> dict[str, Any]:
        """kombu Redis transport options (``broker_transport_options``) for these settings."""
        return {
            "visibility_timeout": self.visibility_timeout_s,
            "unacked_restore_interval": self.restore_interval_s,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": MUTEX_EXPIRE_S,
            redis_fetch.WAIT_OPTION: self.fetch_wait_s,
        }


def held_tags(consumer: Any) -> list[str]:
    """Delivery tags of the messages CONSUMER (a Celery worker's consumer) holds and has not acknowledged."""
    tags: set[str] = set()
    task_consumer = consumer.task_consumer
    if task_consumer is not None:
        qos = task_consumer.channel.qos
        dirty = set(qos._dirty)  # acknowledged, not yet dropped from _delivered
        tags.update(tag for tag in list(qos._delivered) if tag not in dirty)
    # Tasks still running from before a reconnection belong to the old channel's bookkeeping.
    tags.update(request.message.delivery_tag for request in list(state.active_requests))
    return sorted(tags)


def refresh(channel: Any, tags: list[str], now: float) -> int:
    """Set the unacked time of TAGS that CHANNEL's broker still has to NOW, under kombu's sweep mutex; how many were refreshed."""
    with channel.conn_or_acquire() as client:
        lock = client.lock(channel.unacked_mutex_key, timeout=MUTEX_EXPIRE_S, blocking_timeout=MUTEX_WAIT_S)
        locked = lock.acquire()
        if not locked:
            logger.info("a restore sweep holds %s; refreshing %d messages without it", channel.unacked_mutex_key, len(tags))
        try:
            return int(client.zadd(channel.unacked_index_key, dict.fromkeys(tags, now), xx=True, ch=True))
        finally:
            if locked:
                lock.release()


class VisibilityHeartbeat(bootsteps.StartStopStep):
    """Consumer bootstep: refreshes the unacked entries of the worker's held messages every ``heartbeat_s``."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        """Set up for CONSUMER; the timer entry is made at start."""
        super().__init__(consumer, **kwargs)
        self._entry: Any = None
        self._settings = RecoverySettings()

    def start(self, consumer: Any) -> None:
        """Put back what an earlier connection or process left behind, then beat on the worker's timer (the event loop's, with prefork)."""
        channel = consumer.task_consumer.channel
        if not hasattr(channel, "unacked_index_key"):
            logger.info("broker transport %s keeps no visibility index; no heartbeat", type(channel).__module__)
            return
        self._put_back(consumer, channel)
        self._entry = consumer.timer.call_repeatedly(self._settings.heartbeat_s, self._beat, (consumer,), priority=10)

    def stop(self, consumer: Any) -> None:
        """Stop beating (the consumer restarts or shuts down)."""
        if self._entry is not None:
            self._entry.cancel()
            self._entry = None

    shutdown = stop

    def _put_back(self, consumer: Any, channel: Any) -> None:
        """Put back on their queues the messages of the worker's held set that it neither runs nor holds now."""
        if not getattr(channel, "held_key", ""):
            return
        try:
            with suppress_instrumentation():
                holding = set(held_tags(consumer))
                tags = [tag for tag in channel.held() if tag not in holding]
                for tag in tags:
                    channel.qos.restore_by_tag(tag, leftmost=True)
        except Exception as error:  # the broker went away again: the visibility timeout brings them back
            logger.warning("could not put back the messages held before this connection: %s", error)
            return
        if tags:
            logger.info("put back %d messages held before this connection or process (not waiting for the visibility timeout)", len(tags))

    def _beat(self, consumer: Any) -> None:
        if consumer.task_consumer is None:
            return
        tags = held_tags(consumer)
        channel = consumer.task_consumer.channel
        try:
            with suppress_instrumentation():  # hoptrace's bookkeeping, not the user's Redis traffic
                if tags:
                    refresh(channel, tags, time.time())
                if getattr(channel, "held_key", ""):
                    channel.held()  # drops the tags acknowledged since the last beat from the held set
        except Exception as error:  # the broker is away: the next beat tries again
            logger.warning("could not refresh the visibility of %d held messages: %s", len(tags), error)


def install(app: Celery, held_key: str | None = None) -> None:
    """Make APP's workers recover dead workers' messages within seconds, and (over ``redis://`` or ``rediss://``) fetch in one step.

    HELD_KEY: the worker's own held set (see the module), for a worker process; publishers need none.
    """
    settings = RecoverySettings()
    options = settings.transport_options() | ({redis_fetch.HELD_OPTION: held_key} if held_key else {})
    app.conf.broker_transport_options = {**options, **(app.conf.broker_transport_options or {})}
    if settings.one_step_fetch and urlsplit(app.conf.broker_url or "").scheme in ("redis", "rediss"):
        app.conf.broker_transport = redis_fetch.TRANSPORT
    app.steps["consumer"].add(VisibilityHeartbeat)
