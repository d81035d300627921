"""Which errors of the messaging clients mean a broker or server is away, not that it refused the message.

What follows from one (the attempt waited out, not counted) is the ground floor's (``hoptrace.pipeline.outages``);
which exception types say so is each client's: kafka-python and confluent-kafka mark their errors retriable (librdkafka
also says when every broker is down or a message timed out waiting for one), kombu raises
``OperationalError`` for a Celery broker it cannot reach, redis-py its connection and timeout errors (a handler's own
client), and the standard library's sockets ``ConnectionError`` and ``TimeoutError``.
"""

from __future__ import annotations

import sys

import redis
from kafka.errors import KafkaError
from kombu.exceptions import OperationalError


def is_outage(error: BaseException) -> bool:
    """Whether ERROR means a broker or server was unreachable or did not answer in time, rather than that it refused the message."""
    if isinstance(error, KafkaError):
        return bool(error.retriable)
    confluent = sys.modules.get("confluent_kafka")  # optional: when it was never imported, no error can be one of its
    if confluent is not None and isinstance(error, confluent.KafkaException) and isinstance(error.args[0], confluent.KafkaError):
        cause = error.args[0]
        return bool(cause.retriable()) or cause.code() in (cause._TRANSPORT, cause._ALL_BROKERS_DOWN, cause._MSG_TIMED_OUT, cause._TIMED_OUT)
    return isinstance(error, OperationalError | redis.ConnectionError | redis.TimeoutError | ConnectionError | TimeoutError)
