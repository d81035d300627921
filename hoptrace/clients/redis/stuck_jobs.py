"""``hoptrace.jobs.stuck``: jobs a pipeline started that reached no final outcome in time, found by id.

Reads the job ledger (``hoptrace.clients.redis.job_ledger``) in Redis: a job started longer than
``stuck_after_s`` ago and not finished is stuck, lost by a broker or waiting at a stage that is
down. Each newly stuck job is logged once, by id. Pairs found finished are removed from both
sets as they come of age; finished entries without a start (jobs started elsewhere) are
forgotten after a day, and stuck ones after ``forget_after_s`` (a week by default).
"""

from __future__ import annotations

import logging
import time

import redis
from opentelemetry.metrics import Observation

from hoptrace.clients.redis.job_ledger import KEY_PREFIX, keys
from hoptrace.gauges.refresher import GaugeSpec, Reading
from hoptrace.pipeline import semconv

logger = logging.getLogger(__name__)

STUCK = GaugeSpec(semconv.JOBS_STUCK, "{job}", "Jobs started longer ago than the limit that reached no final outcome.")
CANDIDATES = 10_000
"""Most jobs of age looked at per read."""
UNMATCHED_FINISHED_S = 24 * 3600.0
REMEMBERED = 100_000
"""Most stuck job ids remembered as already logged."""


class StuckJobs:
    """The stuck jobs of one pipeline, read from its ledger."""

    def __init__(
        self,
        redis_url: str,
        pipeline: str,
        stuck_after_s: float,
        forget_after_s: float = 7 * 24 * 3600.0,
        prefix: str = KEY_PREFIX,
        timeout_s: float = 1.0,
    ) -> None:
        """Read PIPELINE's ledger at REDIS_URL; a job is stuck STUCK_AFTER_S after it started, forgotten FORGET_AFTER_S after."""
        self._client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._pipeline = pipeline
        self._stuck_after_s = stuck_after_s
        self._forget_after_s = forget_after_s
        self._started, self._finished = keys(pipeline, prefix)
        self._logged: set[str] = set()

    @property
    def gauges(self) -> tuple[GaugeSpec, ...]:
        """``hoptrace.jobs.stuck``."""
        return (STUCK,)

    def read(self) -> Reading:
        """One observation: how many jobs are stuck now; newly stuck ones are logged by id."""
        now = time.time()
        with self._client.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self._started, "-inf", now - self._forget_after_s)
            pipe.zremrangebyscore(self._finished, "-inf", now - UNMATCHED_FINISHED_S)
            pipe.zrangebyscore(self._started, "-inf", now - self._stuck_after_s, start=0, num=CANDIDATES, withscores=True)
            *_, aged = pipe.execute()
        stuck = dict(aged)
        if stuck:
            finished = [job for job, score in zip(stuck, self._client.zmscore(self._finished, list(stuck)), strict=True) if score is not None]
            if finished:
                with self._client.pipeline(transaction=False) as pipe:
                    pipe.zrem(self._started, *finished)
                    pipe.zrem(self._finished, *finished)
                    pipe.execute()
            for job in finished:
                del stuck[job]
        self._log_new(stuck, now)
        return {semconv.JOBS_STUCK: [Observation(len(stuck), {semconv.PIPELINE: self._pipeline})]}

    def _log_new(self, stuck: dict[bytes, float], now: float) -> None:
        jobs = {(raw.decode() if isinstance(raw, bytes) else str(raw)): started for raw, started in stuck.items()}
        for job, started in jobs.items():
            if job not in self._logged:
                logger.warning(
                    "job %s of pipeline %s started %.0f s ago and reached no final outcome: lost by a broker, or its stage is down",
                    job,
                    self._pipeline,
                    now - started,
                )
        if len(self._logged) > REMEMBERED:
            self._logged.clear()
        self._logged.update(jobs)

    def close(self) -> None:
        """Close the Redis connections."""
        self._client.close()
