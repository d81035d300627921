"""Telling a broker that is away from a message it refused: the first is waited out, the second goes through the retry policy.

A forward or a dead letter the broker did not take because it could not be reached or did not
answer in time (connection refused or reset, a timeout, no leader yet, a rebalance) says nothing
about the message: the same send succeeds once the broker is back. A refusal of the message
itself (too large, not authorized, an unknown topic with creation off) does not go away by waiting.
"""

from __future__ import annotations

import redis
from kafka.errors import KafkaError
from kombu.exceptions import OperationalError


def is_outage(error: BaseException) -> bool:
    """Whether ERROR means the broker was unreachable or did not answer in time, rather than that it refused the message."""
    if isinstance(error, KafkaError):
        return bool(error.retriable)
    return isinstance(error, OperationalError | redis.ConnectionError | redis.TimeoutError | ConnectionError | TimeoutError)
