"""A plain Celery app, as teams have them: no hoptrace import anywhere. The drop-in tests run it under ``opentelemetry-instrument``.

Broker and result backend: the test's Redis with its key prefix (``TEST_REDIS_PREFIX``), queue
``TEST_QUEUE``. ``TEST_BEAT=1`` adds a periodic ``plain.add`` every second.
"""

from __future__ import annotations

import gc
import os
import time

from celery import Celery, Task

REDIS = os.environ.get("HOPTRACE_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = {"global_keyprefix": os.environ.get("TEST_REDIS_PREFIX", "test:")}

app = Celery("plainapp", broker=REDIS, backend=REDIS)
app.conf.update(
    broker_transport_options=PREFIX,
    result_backend_transport_options=PREFIX,
    task_default_queue=os.environ.get("TEST_QUEUE", "plain"),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if os.environ.get("TEST_BEAT") == "1":
    app.conf.beat_schedule = {"tick": {"task": "plain.add", "schedule": 1.0, "args": (1, 1)}}


@app.task(name="plain.add")
def add(x: int, y: int) -> int:
    """x + y."""
    return x + y


@app.task(name="plain.mul")
def mul(x: int, y: int) -> int:
    """x * y."""
    return x * y


@app.task(name="plain.xsum")
def xsum(numbers: list[int]) -> int:
    """The sum of a chord's results."""
    return sum(numbers)


@app.task(name="plain.nap")
def nap(x: int, seconds: float) -> int:
    """Sleeps SECONDS, then returns X: the slow member of a chord."""
    time.sleep(seconds)
    return x


@app.task(name="plain.boom")
def boom(x: int) -> int:
    """Always fails: the last link of a chain that goes wrong."""
    raise RuntimeError(f"boom after {x}")


@app.task(bind=True, name="plain.flaky", max_retries=3)
def flaky(self: Task, x: int) -> int:
    """Fails its first run and asks Celery to try again in two seconds."""
    if self.request.retries == 0:
        raise self.retry(exc=ValueError("first run refused"), countdown=2)
    return x


@app.task(name="plain.auto", autoretry_for=(ValueError,), max_retries=2, default_retry_delay=0)
def auto(x: int) -> int:
    """Fails its first run; ``autoretry_for`` retries it."""
    if auto.request.retries == 0:
        raise ValueError("first run refused")
    return x


@app.task(name="plain.heap")
def heap() -> int:
    """How many objects the garbage collector has frozen in the pool process that runs it (the tests' look at the drop-in's freeze)."""
    return gc.get_freeze_count()
