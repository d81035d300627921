"""A broker that is away: why it is no fault of the message, what is raised for it, and how long a stage waits before it tries again.

Publishers (``producers``) raise a ``BrokerAway`` when a broker could not be reached or did not
answer in time; so does a stage's processor when the handler's own error is one
(``HandlerLostConnection``: its outbox in Redis, a Kafka client of its own, a server it calls
refusing connections). A forward or a dead letter the broker did not take because it could not be
reached or did not answer in time (connection refused or reset, a timeout, no leader yet, a
rebalance) says nothing about the message: the same send succeeds once the broker is back. A
refusal of the message itself (too large, not authorized, an unknown topic with creation off) does
not go away by waiting. ``is_outage`` tells them apart for every client hoptrace knows, without
importing any: an error of a library never imported cannot occur, so each library's error types are
looked up among the modules already loaded. Such an attempt failed
through no fault of the message: the retry middleware lets it run again after a pause that grows
with each wait (jittered, capped), without counting it against the stage's retry policy, until the
policy's ``outage_deadline_s`` has passed since the first wait; only then do its attempts count
again. A worker processes one message at a time, so while it waits it takes no new ones.
``OutageLog`` says once that a broker is away and once, when it answers again, after how long.
"""

from __future__ import annotations

import logging
import random
import sys
import time

FIRST_WAIT_S = 0.25
LONGEST_WAIT_S = 5.0
RECONNECT_BACKOFF_MAX_MS = 1000
"""Longest pause of hoptrace's Kafka clients between attempts to reach a broker that went away (kafka-python's default: 30 s)."""
_LIBRDKAFKA_AWAY = ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_MSG_TIMED_OUT", "_TIMED_OUT")
"""librdkafka's error codes for a cluster that is away: not always marked retriable."""


def is_outage(error: BaseException) -> bool:
    """Whether ERROR means a broker or server was unreachable or did not answer in time, rather than that it refused the message.

    Each client says so its own way: kafka-python, aiokafka and confluent-kafka mark their errors retriable (librdkafka also
    says when every broker is down or a message timed out waiting for one), kombu raises ``OperationalError`` for a
    Celery broker it cannot reach, redis-py its connection and timeout errors (a handler's own client), and the
    standard library's sockets ``ConnectionError`` and ``TimeoutError``.
    """
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    for errors in (sys.modules.get("kafka.errors"), sys.modules.get("aiokafka.errors")):  # kafka-python's, and aiokafka's copy
        if errors is not None and isinstance(error, errors.KafkaError):
            return bool(error.retriable)
    confluent = sys.modules.get("confluent_kafka")
    if confluent is not None and isinstance(error, confluent.KafkaException) and error.args and isinstance(error.args[0], confluent.KafkaError):
        cause = error.args[0]
        return bool(cause.retriable()) or cause.code() in {getattr(confluent.KafkaError, name) for name in _LIBRDKAFKA_AWAY}
    kombu = sys.modules.get("kombu.exceptions")
    if kombu is not None and isinstance(error, kombu.OperationalError):
        return True
    redis = sys.modules.get("redis.exceptions")
    return redis is not None and isinstance(error, redis.ConnectionError | redis.TimeoutError)


class BrokerAway(Exception):  # noqa: N818 - a state of the broker, not an error of the message
    """Raised by a publisher when the broker could not be reached or did not answer in time (mixed into its own error type)."""


class HandlerLostConnection(BrokerAway):
    """A handler failed on a connection it could not make or keep (its error, the cause, is an outage): waited out, not counted."""


def wait_s(waits: int) -> float:
    """The pause before the attempt that follows WAITS earlier waits for a broker: doubling from 0.25 s, at most 5 s, jittered down by up to half."""
    return min(LONGEST_WAIT_S, FIRST_WAIT_S * 2**waits) * random.uniform(0.5, 1.0)  # noqa: S311 - spreads retries, no secret


class OutageLog:
    """Says once per outage that a broker is away and, when it answers again, once how long it was away (warnings of the caller's logger)."""

    def __init__(self, logger: logging.Logger, away: str, back: str) -> None:
        """Warn on LOGGER with AWAY when an outage begins and with BACK, whose last placeholder takes the seconds away, when it ends."""
        self._logger = logger
        self._away = away
        self._back = back
        self._since: float | None = None
        """When the outage began (``time.monotonic()``); None while the broker answers."""

    def away(self, *args: object) -> None:
        """A try met the outage: the first since the broker last answered says AWAY, formatted with ARGS, and starts the clock."""
        if self._since is None:
            self._since = time.monotonic()
            self._logger.warning(self._away, *args)

    def back(self, *args: object) -> None:
        """A try succeeded: after an outage, say BACK, formatted with ARGS and the seconds the broker was away."""
        if self._since is not None:
            self._logger.warning(self._back, *args, time.monotonic() - self._since)
            self._since = None
