"""The command line's own Redis requests: is the server there and which version, a run's keys deleted, a list's length."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis


class ServerUnavailable(Exception):
    """The Redis server did not answer; the message says why."""


def server_version(url: str, timeout_s: float) -> str:
    """The version of the Redis at URL, after a PING; ``ServerUnavailable`` when it does not answer within TIMEOUT_S."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
        return str(client.info("server")["redis_version"])
    except redis.RedisError as error:
        raise ServerUnavailable(str(error)) from error
    finally:
        client.close()


def delete_keys(url: str, prefix: str) -> None:
    """Delete every key of the Redis at URL that starts with PREFIX."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def list_lengths(url: str) -> Iterator[Callable[[str], int]]:
    """Within the block, a function giving the length of a list of the Redis at URL, over one connection."""
    client = redis.Redis.from_url(url)
    try:
        yield lambda key: int(client.llen(key))
    finally:
        client.close()
