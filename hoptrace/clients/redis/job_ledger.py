"""A ledger of jobs in Redis, so a job that never reaches a final outcome is found, by id.

A job's first publish writes it down as started (``hoptrace:jobs:<pipeline>:started``, a sorted
set scored by start time); a message processed by a final stage (one that forwards nowhere)
or dead-lettered anywhere writes it down as finished (``...:finished``, scored by end time).
``hoptrace monitor`` compares the two (``hoptrace.clients.redis.stuck_jobs``): a job started longer
ago than the limit and not finished is stuck, lost by a broker or waiting at a stage that is
down. The two sets are written independently, so the order in which processes write them
does not matter.

Writes never slow a message: they are queued in memory and sent by a background thread in one
pipelined round trip every 200 ms (one ZADD per set); while Redis does not answer they wait (up to a bound, then
the oldest are dropped, counted in ``JobLedger.dropped`` and warned about once), and one warning
per outage says so.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Literal

import redis
from opentelemetry.instrumentation.utils import suppress_instrumentation

from hoptrace.pipeline.messages import Incoming, Outcome, Outgoing
from hoptrace.pipeline.middleware import Middleware

logger = logging.getLogger(__name__)

KEY_PREFIX = "hoptrace:jobs:"
"""``<prefix><pipeline>:started`` and ``<prefix><pipeline>:finished``."""
FLUSH_INTERVAL_S = 0.2
MAX_PENDING = 100_000
"""Writes kept while Redis does not answer; beyond, the oldest are dropped (those jobs go unwatched)."""

Entry = tuple[Literal["started", "finished"], str, str, float]
"""(which set, pipeline, job id, time)."""


def key_prefix(namespace: str) -> str:
    """The ledger's key prefix for runs under NAMESPACE (``HOPTRACE_NAMESPACE``: runs sharing a Redis stay apart)."""
    return f"{namespace}{KEY_PREFIX}"


def keys(pipeline: str, prefix: str = KEY_PREFIX) -> tuple[str, str]:
    """The started and finished sets of PIPELINE."""
    return f"{prefix}{pipeline}:started", f"{prefix}{pipeline}:finished"


class JobLedger:
    """Writes jobs started and finished to Redis in the background."""

    def __init__(self, redis_url: str, prefix: str = KEY_PREFIX, timeout_s: float = 1.0) -> None:
        """Write to the Redis at REDIS_URL, keys starting with PREFIX; start the writer thread."""
        self._client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._prefix = prefix
        self._pending: collections.deque[Entry] = collections.deque()
        self._lock = threading.Lock()
        self.dropped = 0
        """Writes dropped because more than ``MAX_PENDING`` waited for Redis (those jobs go unwatched)."""
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._write_until_stopped, name="hoptrace-job-ledger", daemon=True)
        self._thread.start()

    def started(self, pipeline: str, job_id: str, at: float) -> None:
        """Write down that job JOB_ID of PIPELINE started at AT (epoch seconds)."""
        self._queue([("started", pipeline, job_id, at)])

    def finished(self, pipeline: str, job_id: str, at: float) -> None:
        """Write down that job JOB_ID of PIPELINE reached a final outcome at AT."""
        self._queue([("finished", pipeline, job_id, at)])

    def _queue(self, entries: list[Entry], front: bool = False) -> None:
        """Queue ENTRIES (at the FRONT: a batch Redis did not take); beyond the bound drop the oldest, counted, warned once."""
        with self._lock:
            if front:
                self._pending.extendleft(reversed(entries))
            else:
                self._pending.extend(entries)
            over = len(self._pending) - MAX_PENDING
            for _ in range(over):
                self._pending.popleft()
            first = over > 0 and self.dropped == 0
            self.dropped += max(over, 0)
        if first:
            logger.warning("the job ledger dropped its oldest writes: more than %d waited for Redis; those jobs cannot be found stuck", MAX_PENDING)

    def flush(self) -> bool:
        """Send what is queued now; whether Redis took it (on failure it is queued again, first)."""
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        if not batch:
            return True
        try:
            # The ledger's writes are hoptrace's bookkeeping, not the user's traffic: no stock Redis span for them.
            with suppress_instrumentation(), self._client.pipeline(transaction=False) as pipe:
                for key, members in self._by_key(batch).items():
                    pipe.zadd(key, members, nx=True)
                pipe.execute()
        except redis.RedisError as error:
            if not self._failing:
                self._failing = True
                logger.warning("the job ledger cannot write to Redis (%s); %d writes wait, stuck jobs may go unseen meanwhile", error, len(batch))
            self._queue(batch, front=True)
            return False
        if self._failing:
            self._failing = False
            logger.info("the job ledger writes to Redis again")
        return True

    def _by_key(self, batch: list[Entry]) -> dict[str, dict[str, float]]:
        """BATCH as one ZADD per set (a job's first time wins, as NX does): one command per flush, not one per job."""
        members: dict[str, dict[str, float]] = {}
        for which, pipeline, job_id, at in batch:
            started, finished = keys(pipeline, self._prefix)
            members.setdefault(started if which == "started" else finished, {}).setdefault(job_id, at)
        return members

    def _write_until_stopped(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL_S):
            self.flush()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the writer after a last flush (bounded by TIMEOUT_S and the client's own timeouts)."""
        self._stopping.set()
        self._thread.join(timeout_s)
        self.flush()
        self._client.close()


class JobLedgerMiddleware(Middleware):
    """Writes each job of a pipeline to a ``JobLedger`` when it starts and when it reaches a final outcome."""

    def __init__(self, pipeline: str, ledger: JobLedger) -> None:
        """Record the jobs of PIPELINE in LEDGER."""
        self._pipeline = pipeline
        self._ledger = ledger

    def after_publish(self, message: Outgoing) -> None:
        """A job's first message was accepted: the job started."""
        if message.error is None and message.starts_job:
            self._ledger.started(self._pipeline, message.job_id, time.time())

    def after_message(self, message: Incoming) -> None:
        """Processed by a stage that forwards nowhere, or dead-lettered: the job reached its final outcome."""
        final = message.outcome is Outcome.DEAD_LETTERED or (message.outcome is Outcome.PROCESSED and not message.stage.forwards_to)
        job_id = message.job_id
        if final and job_id:
            self._ledger.finished(self._pipeline, job_id, time.time())
