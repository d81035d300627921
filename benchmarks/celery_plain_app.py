"""A plain Celery app, written the way a user writes one: no OpenTelemetry, no hoptrace.

    celery -A benchmarks.celery_plain_app worker --pool prefork --concurrency 2 -Q QUEUE

Redis broker (``CELERY_BROKER_URL``), every task on one queue (``BENCH_CELERY_QUEUE``), Celery's
defaults otherwise (early acks, prefetch 4, no result backend). Its one task, ``work``, is trivial:
it counts itself in Redis so the benchmark knows when the last one ran (``benchmarks.completion``).
Run it as it is or under ``opentelemetry-instrument`` (``benchmarks.celery_plain`` does both).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from benchmarks.completion import redis_completion

BROKER_ENV = "CELERY_BROKER_URL"
QUEUE_ENV = "BENCH_CELERY_QUEUE"

app = Celery("bench_plain", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
app.conf.task_default_queue = os.environ.get(QUEUE_ENV, "celery")


@app.task(name="bench.plain.work")
def work(order: dict[str, Any]) -> None:
    """The trivial task: count one more task done."""
    redis_completion().count()
