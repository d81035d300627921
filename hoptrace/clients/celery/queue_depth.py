"""Depth and oldest age of Celery queues on a Redis broker, read in one pipelined round trip.

kombu's Redis transport keeps one queue in a list per priority step: ``queue`` for
priorities 0-2 and ``queue\\x06\\x163``, ``\\x06\\x166``, ``\\x06\\x169`` for the others
(``PRIORITY_STEPS``, ``Channel.sep``, ``Channel._q_for_pri``). Producers LPUSH and workers
BRPOP/RPOP, so the message a list delivers next, its head, is its last element; a message
given back (``restore``) is RPUSHed there again. A message a worker fetched but has not
acknowledged yet waits in the hash ``unacked`` as JSON ``[message, exchange, routing_key]``;
Celery routes to a queue by its name, so the routing key is the queue. kombu's
``global_keyprefix`` transport option prefixes every one of these keys: pass the same
prefix as KEY_PREFIX.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from opentelemetry.metrics import Observation
from opentelemetry.util.types import AttributeValue
from redis.backoff import NoBackoff
from redis.retry import Retry

from hoptrace.gauges.refresher import GaugeSpec, Reading
from hoptrace.pipeline.attributes import stage_attributes
from hoptrace.pipeline.jobs import parse_epoch_seconds
from hoptrace.pipeline.semconv import HEADER_SENT_AT, QUEUE_DEPTH, QUEUE_OLDEST_AGE, QUEUE_STATE
from hoptrace.pipeline.stages import CeleryTransport, Pipeline

READY = "ready"
UNACKED = "unacked"
DEPTH = GaugeSpec(QUEUE_DEPTH, "{message}", "Messages in a Celery queue, ready (priority lists included) or unacked.")
OLDEST_AGE = GaugeSpec(QUEUE_OLDEST_AGE, "s", "Age of the oldest message waiting at the head of a Celery queue's lists (its hoptrace-sent-at).")


def _routing_key(unacked_value: bytes) -> str | None:
    """The routing key of one ``unacked`` hash value, None when the value is not kombu's."""
    try:
        _, _, routing_key = json.loads(unacked_value)
    except (ValueError, TypeError, RecursionError):
        return None
    return routing_key if isinstance(routing_key, str) else None


def sent_at(message: bytes) -> float | None:
    """The ``hoptrace-sent-at`` header (epoch seconds as text) of one kombu message; None when it has none or is not kombu's JSON."""
    try:
        value = json.loads(message)["headers"][HEADER_SENT_AT]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return parse_epoch_seconds(value) if isinstance(value, str) else None


def _oldest_age(heads: Sequence[bytes | None], now: float) -> float | None:
    """NOW minus the earliest ``hoptrace-sent-at`` of HEADS (one per list, None for an empty list); 0 when every list is empty.

    None when lists hold messages but none of their heads carries a readable one: the age is unknown, not 0.
    """
    waiting = [sent_at(head) for head in heads if head is not None]
    known = [seconds for seconds in waiting if seconds is not None]
    if not known:
        return None if waiting else 0.0
    return max(now - min(known), 0.0)


class RedisQueueDepth:
    """``hoptrace.queue.depth`` and ``hoptrace.queue.oldest_age`` of some Celery queues.

    Depth: the messages of each queue, ready (every priority list) and unacked, one point per
    ``hoptrace.queue.state``. Oldest age: now minus the ``hoptrace-sent-at`` header of the
    oldest head of the queue's priority lists (clamped at 0 against clock skew), as of the
    read; 0 when the queue is empty. A head without a readable ``hoptrace-sent-at`` (a message
    published by something else) is skipped; when every non-empty list's head is such a
    message, the queue has no age point. Unacked messages are being worked on, not waiting:
    they count in depth only.
    """

    gauges = (DEPTH, OLDEST_AGE)

    def __init__(self, redis_url: str, queues: Mapping[str, Mapping[str, AttributeValue]], key_prefix: str = "", timeout_s: float = 1.0) -> None:
        """Read QUEUES ({queue name: attributes of its points}) at REDIS_URL, keys prefixed with KEY_PREFIX, waiting at most TIMEOUT_S per attempt."""
        self._queues = {queue: dict(attributes) for queue, attributes in queues.items()}
        self._key_prefix = key_prefix
        # One quick retry covers a pooled connection the server closed; the next refresh retries the rest.
        self._client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1))

    @classmethod
    def of_pipeline(cls, pipeline: Pipeline, redis_url: str, key_prefix: str = "", timeout_s: float = 1.0) -> RedisQueueDepth:
        """The queues of PIPELINE's Celery stages, each with its stage's attributes."""
        queues = {stage.transport.queue: stage_attributes(pipeline.name, stage) for stage in pipeline if isinstance(stage.transport, CeleryTransport)}
        return cls(redis_url, queues, key_prefix, timeout_s)

    def _list_keys(self, queue: str) -> list[str]:
        """The lists kombu spreads QUEUE's ready messages over, one per priority step."""
        return [self._key_prefix + (f"{queue}{Channel.sep}{step}" if step else queue) for step in PRIORITY_STEPS]

    def read(self) -> Reading:
        """Both gauges' points; one pipelined round trip (LLEN and LINDEX -1 of every list, HVALS of ``unacked``)."""
        if not self._queues:
            return {DEPTH.name: [], OLDEST_AGE.name: []}
        with self._client.pipeline(transaction=False) as pipe:
            for queue in self._queues:
                for key in self._list_keys(queue):
                    pipe.llen(key)
                    pipe.lindex(key, -1)
            pipe.hvals(self._key_prefix + Channel.unacked_key)
            *replies, unacked_values = pipe.execute()
        now = time.time()
        unacked = Counter(_routing_key(value) for value in unacked_values)
        depth, ages = [], []
        per_queue = 2 * len(PRIORITY_STEPS)
        for index, (queue, attributes) in enumerate(self._queues.items()):
            lists = replies[index * per_queue : (index + 1) * per_queue]
            depth.append(Observation(sum(lists[0::2]), {**attributes, QUEUE_STATE: READY}))
            depth.append(Observation(unacked[queue], {**attributes, QUEUE_STATE: UNACKED}))
            age = _oldest_age(lists[1::2], now)
            if age is not None:
                ages.append(Observation(age, attributes))
        return {DEPTH.name: depth, OLDEST_AGE.name: ages}

    def close(self) -> None:
        """Close the Redis connections (a later read opens new ones)."""
        self._client.close()
