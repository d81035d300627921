"""Which errors of the messaging clients mean a broker or server is away, not that it refused the message.

What follows from one (the attempt waited out, not counted) is the ground floor's (``hoptrace.pipeline.outages``);
which exception types say so is each client's: kafka-python marks its errors retriable, kombu raises
``OperationalError`` for a Celery broker it cannot reach, redis-py its connection and timeout errors (a handler's own
client), and the standard library's sockets ``ConnectionError`` and ``TimeoutError``.
"""

from __future__ import annotations

import redis
from kafka.errors import KafkaError
from kombu.exceptions import OperationalError


def is_outage(error: BaseException) -> bool:
    """Whether ERROR means a broker or server was unreachable or did not answer in time, rather than that it refused the message."""
    if isinstance(error, KafkaError):
        return bool(error.retriable)
    return isinstance(error, OperationalError | redis.ConnectionError | redis.TimeoutError | ConnectionError | TimeoutError)
