"""Publishes into the plain Celery app (tests/apps/plain_celery.py) like any client would, then waits for the results.

``python -m tests.apps.plain_celery_client CASE``; CASE is ``canvas`` (a chain of 3, a chord of 5 + body, a
plain task), ``retry``, ``autoretry``, ``countdown`` (a task held 1.5 s), ``slow-chord`` (a chord of 4 quick
members and one that takes 1.5 s, + body), ``by-name`` (``send_task`` from an app that does not register the
task), ``heap`` (the frozen objects of the pool process that runs it) or ``failing-chains`` (3 chains whose
last task raises, among 60 plain tasks; the client then stays ``TEST_LINGER_S`` seconds, as a long-lived
client would, for its flight recorder to hand over what it holds of the failed jobs). Prints ``result
<value>`` per result (the exception's type for a failed one) and ``leaked <bool>`` (a span still current after
publishing).
"""

from __future__ import annotations

import os
import sys
import time

from celery import Celery, chain, chord
from celery.result import AsyncResult
from opentelemetry import trace

from tests.apps.plain_celery import PREFIX, REDIS, add, app, auto, boom, flaky, heap, mul, nap, xsum


def by_name() -> AsyncResult:
    """``send_task('plain.add')`` from an app that has no such task (its tasks are shared with every app, so unregister it)."""
    stranger = Celery("stranger", broker=REDIS, backend=REDIS, set_as_current=False)
    stranger.conf.update(broker_transport_options=PREFIX, result_backend_transport_options=PREFIX, task_default_queue=app.conf.task_default_queue)
    stranger.tasks.unregister("plain.add")
    assert "plain.add" not in stranger.tasks
    return stranger.send_task("plain.add", (20, 22))


def main(case: str) -> None:
    """Publish CASE's messages and print their results."""
    if case == "canvas":
        results = [chain(add.s(1, 2), mul.s(3), add.s(4)).apply_async(), chord([add.s(i, i) for i in range(5)])(xsum.s()), add.delay(2, 2)]
    elif case == "retry":
        results = [flaky.delay(7)]
    elif case == "countdown":
        results = [add.apply_async((1, 2), countdown=1.5)]
    elif case == "slow-chord":
        results = [chord([*(add.s(i, i) for i in range(4)), nap.s(5, 1.5)])(xsum.s())]
    elif case == "autoretry":
        results = [auto.delay(8)]
    elif case == "by-name":
        results = [by_name()]
    elif case == "heap":
        results = [heap.delay()]
    elif case == "failing-chains":
        results = [chain(add.s(1, 2), mul.s(3), boom.s()).apply_async() for _ in range(3)] + [add.delay(n, n) for n in range(60)]
    else:
        raise SystemExit(f"unknown case {case!r}")
    print("leaked", trace.get_current_span().get_span_context().is_valid, flush=True)
    for result in results:
        try:
            value = result.get(timeout=60)
        except Exception as error:  # noqa: BLE001 - a failed task's result is its exception
            value = type(error).__name__
        print("result", value, flush=True)
    time.sleep(float(os.environ.get("TEST_LINGER_S", "0")))


if __name__ == "__main__":
    main(sys.argv[1])
