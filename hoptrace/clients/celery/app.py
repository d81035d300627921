"""The Celery app of a pipeline's Celery stages, as hoptrace's workers and publishers make it."""

from __future__ import annotations

from celery import Celery

from hoptrace.clients.celery import visibility
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import Pipeline

CeleryApp = Celery
"""What the rest of hoptrace calls a Celery app (so that only this folder imports Celery)."""


def celery_app(pipeline: Pipeline, settings: Settings, held_key: str | None = None) -> CeleryApp:
    """The Celery app of PIPELINE's stages: Redis broker, late acks, no result backend.

    A worker of it keeps the messages it holds visible, recovers a dead worker's within seconds,
    and loses none when killed mid-fetch (``clients.celery.visibility``); with HELD_KEY, its own held set,
    it puts back what it held as soon as it reconnects or replaces a dead process.
    """
    app = Celery(f"hoptrace-{pipeline.name}", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    visibility.install(app, held_key)
    return app
