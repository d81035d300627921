"""Depth of the Celery queues of a pipeline, read from the Redis broker in one round trip.

kombu's Redis transport keeps one queue in a list per priority step: ``queue`` for
priorities 0-2 and ``queue\\x06\\x163``, ``\\x06\\x166``, ``\\x06\\x169`` for the others
(``PRIORITY_STEPS``, ``Channel.sep``, ``Channel._q_for_pri``). A message a worker fetched
but has not acknowledged yet waits in the hash ``unacked`` as JSON
``[message, exchange, routing_key]``; Celery routes to a queue by its name, so the routing
key is the queue. kombu's ``global_keyprefix`` transport option prefixes every one of
these keys: pass the same prefix as KEY_PREFIX.
"""

from __future__ import annotations

import json
from collections import Counter

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from opentelemetry.metrics import Observation
from redis.backoff import NoBackoff
from redis.retry import Retry

from hoptrace.pipeline.attributes import stage_attributes
from hoptrace.pipeline.semconv import QUEUE_STATE
from hoptrace.pipeline.stages import CeleryTransport, Pipeline

READY = "ready"
UNACKED = "unacked"


def _routing_key(unacked_value: bytes) -> str | None:
    """The routing key of one ``unacked`` hash value, None when the value is not kombu's."""
    try:
        _, _, routing_key = json.loads(unacked_value)
    except (ValueError, TypeError):
        return None
    return routing_key if isinstance(routing_key, str) else None


class RedisQueueDepth:
    """Ready and unacked message counts of every Celery stage's queue of a pipeline."""

    def __init__(self, pipeline: Pipeline, redis_url: str, key_prefix: str = "", timeout_s: float = 1.0) -> None:
        """Read PIPELINE's queues at REDIS_URL (keys prefixed with KEY_PREFIX), waiting at most TIMEOUT_S per attempt."""
        self._attributes = {
            stage.transport.queue: stage_attributes(pipeline.name, stage) for stage in pipeline if isinstance(stage.transport, CeleryTransport)
        }
        self._key_prefix = key_prefix
        # One quick retry covers a pooled connection the server closed; the next refresh retries the rest.
        self._client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1))

    def _list_keys(self, queue: str) -> list[str]:
        """The lists kombu spreads QUEUE's ready messages over, one per priority step."""
        return [self._key_prefix + (f"{queue}{Channel.sep}{step}" if step else queue) for step in PRIORITY_STEPS]

    def read(self) -> list[Observation]:
        """One observation per queue and state; one pipelined round trip (LLEN of every list, HVALS of ``unacked``)."""
        if not self._attributes:
            return []
        with self._client.pipeline(transaction=False) as pipe:
            for queue in self._attributes:
                for key in self._list_keys(queue):
                    pipe.llen(key)
            pipe.hvals(self._key_prefix + Channel.unacked_key)
            *lengths, unacked_values = pipe.execute()
        unacked = Counter(_routing_key(value) for value in unacked_values)
        observations = []
        for index, (queue, attributes) in enumerate(self._attributes.items()):
            ready = sum(lengths[index * len(PRIORITY_STEPS) : (index + 1) * len(PRIORITY_STEPS)])
            observations.append(Observation(ready, {**attributes, QUEUE_STATE: READY}))
            observations.append(Observation(unacked[queue], {**attributes, QUEUE_STATE: UNACKED}))
        return observations

    def close(self) -> None:
        """Close the Redis connections (a later read opens new ones)."""
        self._client.close()
