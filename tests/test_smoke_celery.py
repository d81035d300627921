"""The local Redis is real: a real `celery worker` (prefork pool) runs tasks through it."""

from __future__ import annotations

import sys
from pathlib import Path

from celery.result import ResultSet

from hoptrace.pipeline.settings import Settings
from tests.apps.smoke_celery import make_app
from tests.processes import running

TASKS = 100


def test_hundred_tasks_through_a_prefork_worker(settings: Settings, redis_prefix: str, unique: str, tmp_path: Path) -> None:
    queue = f"smoke-{unique}"
    env = {"HOPTRACE_REDIS_URL": settings.redis_url, "TEST_REDIS_PREFIX": redis_prefix, "TEST_QUEUE": queue}
    worker = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.apps.smoke_celery",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "2",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]
    client = make_app(settings.redis_url, redis_prefix, queue)
    with running(worker, tmp_path / "worker.log", env, ready=" ready.") as process:
        results = ResultSet([client.send_task("smoke.add", (i, i)) for i in range(TASKS)])
        assert sorted(results.get(timeout=60)) == [2 * i for i in range(TASKS)]
    assert process.popen.returncode == 0
    assert "ForkPoolWorker" in process.output()
