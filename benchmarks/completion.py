"""How a measured run starts and knows it is done.

Start: a producer is started together with its consumer, sets up its clients, and waits for
the file named by ``BENCH_GO`` (created once the consumer is ready), so neither the producer's
start-up nor its connection shows in the measured time nor delays the run.

Done: the handler that processes the last expected message notes the time. A Kafka stage
worker is one process, so it counts in memory and writes a small JSON file (with the CRC
kafka-python used, see ``benchmarks.crc``); Celery tasks run in several prefork processes, so
they count with a Redis ``INCR`` and the one that reaches the expected count stores the time. Both read what to expect from the environment
(``BENCH_EXPECTED`` and ``BENCH_DONE``: a file path or a Redis key).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import redis

from benchmarks import crc

EXPECTED_ENV = "BENCH_EXPECTED"
DONE_ENV = "BENCH_DONE"
GO_ENV = "BENCH_GO"
GO_POLL_S = 0.005


def wait_for_go(timeout_s: float = 120.0) -> None:
    """Block until the file named by ``BENCH_GO`` exists (no-op when unset); TimeoutError after TIMEOUT_S."""
    name = os.environ.get(GO_ENV)
    if not name:
        return
    deadline = time.monotonic() + timeout_s
    while not Path(name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no start signal ({name}) within {timeout_s:.0f} s")
        time.sleep(GO_POLL_S)


class FileCompletion:
    """Counts messages in this process; the EXPECTED-th one writes ``{"first": s, "done": s, "count": n, **about}`` to PATH.

    ``first`` is when the first message was handled, ``done`` when the last one was (epoch
    seconds); ABOUT says what the process found about itself (e.g. kafka-python's CRC).
    """

    def __init__(self, expected: int, path: Path, about: Mapping[str, str] | None = None) -> None:
        """Expect EXPECTED messages; report to PATH."""
        self.expected = expected
        self.path = path
        self.about = dict(about or {})
        self.seen = 0
        self.first = 0.0

    def count(self) -> None:
        """One more message processed."""
        self.seen += 1
        if self.seen == 1:
            self.first = time.time()
        if self.seen == self.expected:
            done = time.time()
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps({"first": self.first, "done": done, "count": self.seen, **self.about}))
            partial.replace(self.path)

    @staticmethod
    def read(path: Path) -> dict[str, float] | None:
        """What was written to PATH once every message was handled, or None before."""
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None


class RedisCompletion:
    """Counts messages across processes in Redis key KEY; the EXPECTED-th one stores the time in ``KEY:done``."""

    def __init__(self, expected: int, url: str, key: str) -> None:
        """Expect EXPECTED messages, counted in KEY on the Redis at URL."""
        self.expected = expected
        self.key = key
        self._client = redis.Redis.from_url(url)

    def count(self) -> None:
        """One more message processed."""
        if self._client.incr(self.key) == self.expected:
            self._client.set(f"{self.key}:done", repr(time.time()))

    @staticmethod
    def read(client: redis.Redis, key: str) -> float | None:
        """The completion time stored for KEY, or None while there is none."""
        value = client.get(f"{key}:done")
        return float(value) if value is not None else None


@lru_cache(maxsize=1)
def file_completion() -> FileCompletion:
    """This process's ``FileCompletion``, from ``BENCH_EXPECTED`` and ``BENCH_DONE`` (made on first use: a Kafka consumer's, so it tells its CRC)."""
    return FileCompletion(int(os.environ[EXPECTED_ENV]), Path(os.environ[DONE_ENV]), {"kafka_crc": crc.active()})


@lru_cache(maxsize=1)
def redis_completion() -> RedisCompletion:
    """This process's ``RedisCompletion`` (made on first use, so after a prefork fork)."""
    url = os.environ.get("HOPTRACE_REDIS_URL", "redis://127.0.0.1:6379/0")
    return RedisCompletion(int(os.environ[EXPECTED_ENV]), url, os.environ[DONE_ENV])
