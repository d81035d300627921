"""A plain Celery app on the Redis broker; the worker reads its queue and key prefix from the environment."""

from __future__ import annotations

import os

from celery import Celery


def make_app(redis_url: str, key_prefix: str, queue: str) -> Celery:
    """A Celery app whose broker and result keys all start with KEY_PREFIX."""
    app = Celery("smoke", broker=redis_url, backend=redis_url)
    prefix = {"global_keyprefix": key_prefix}
    app.conf.update(
        broker_transport_options=prefix,
        result_backend_transport_options=prefix,
        task_default_queue=queue,
        worker_hijack_root_logger=False,
    )
    app.task(add, name="smoke.add")
    return app


def add(x: int, y: int) -> int:
    """Add two numbers (in a worker process)."""
    return x + y


app = make_app(
    os.environ.get("HOPTRACE_REDIS_URL", "redis://127.0.0.1:6379/0"),
    os.environ.get("TEST_REDIS_PREFIX", "test:"),
    os.environ.get("TEST_QUEUE", "smoke"),
)
