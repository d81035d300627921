"""Reading what hoptrace processes printed and exported: published jobs, span chains, the outbox, metric totals; and waiting for it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise

import redis

from hoptrace.pipeline.settings import Settings
from hoptrace.view.critical_path import Segment
from hoptrace.view.otlp_decode import MetricPoint, ReceivedSpan

ORDERS_HOPS = (("kafka", "orders.placed"), ("celery", "payments"), ("kafka", "orders.charged"), ("celery", "notifications"))


@dataclass(frozen=True)
class PublishedJob:
    """One line ``trace <id>  job <id>`` printed by ``hoptrace publish``."""

    trace_id: str
    job_id: str


def published_jobs(stdout: str) -> list[PublishedJob]:
    """The jobs ``hoptrace publish`` reported."""
    return [PublishedJob(*match) for match in re.findall(r"^trace ([0-9a-f]{32})  job ([0-9a-f]{32})$", stdout, re.MULTILINE)]


def chain(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """SPANS ordered root first, each the parent of the next; fails unless they form exactly one chain."""
    roots = [span for span in spans if span.parent_span_id is None]
    assert len(roots) == 1, f"expected one root, got {[s.name for s in roots]}"
    by_parent = {span.parent_span_id: span for span in spans if span.parent_span_id is not None}
    assert len(by_parent) == len(spans) - 1, f"a span has two children: {[(s.name, s.parent_span_id) for s in spans]}"
    ordered = roots
    while ordered[-1].span_id in by_parent:
        ordered.append(by_parent[ordered[-1].span_id])
    assert len(ordered) == len(spans), f"spans are not one chain: {[(s.name, s.span_id, s.parent_span_id) for s in spans]}"
    return ordered


def tiles(spans: list[ReceivedSpan], path: list[Segment]) -> None:
    """Fail unless the critical PATH covers [first start, last end] of SPANS exactly: contiguous, positive, merged."""
    assert path[0].start_ns == min(span.start_ns for span in spans)
    assert path[-1].end_ns == max(span.end_ns for span in spans)
    assert all(segment.duration_ns > 0 for segment in path)
    assert all(before.end_ns == after.start_ns for before, after in pairwise(path))
    assert all((before.stage, before.cause) != (after.stage, after.cause) for before, after in pairwise(path))
    assert sum(segment.duration_ns for segment in path) == path[-1].end_ns - path[0].start_ns


def orders_chain_names(namespace: str) -> list[tuple[str, str]]:
    """(name, kind) of the 8 spans of one orders job: a publish and a process span per hop."""
    names: list[tuple[str, str]] = []
    for _, destination in ORDERS_HOPS:
        names += [(f"send {namespace}{destination}", "PRODUCER"), (f"process {namespace}{destination}", "CONSUMER")]
    return names


def outbox(settings: Settings, namespace: str) -> list[dict[str, str | None]]:
    """What the orders pipeline's ``notify`` stage delivered."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return [json.loads(item) for item in client.lrange(f"{namespace}orders:outbox", 0, -1)]
    finally:
        client.close()


def slow_outbox(env: Mapping[str, str], namespace: str) -> list[dict[str, object]]:
    """What the stages of ``tests.faults.pipelines:slow`` appended, on the Redis of ENV (``HOPTRACE_REDIS_URL``)."""
    client = redis.Redis.from_url(env["HOPTRACE_REDIS_URL"])
    try:
        return [json.loads(item) for item in client.lrange(f"{namespace}slow:outbox", 0, -1)]
    finally:
        client.close()


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll CONDITION until it holds or TIMEOUT seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_for_outbox(settings: Settings, namespace: str, count: int, timeout: float = 90) -> list[dict[str, str | None]]:
    """The outbox once it holds COUNT notes (or whatever it holds after TIMEOUT seconds)."""
    delivered: list[dict[str, str | None]] = []

    def enough() -> bool:
        delivered[:] = outbox(settings, namespace)
        return len(delivered) >= count

    wait_for(enough, timeout)
    return delivered


def latest_totals(points: list[MetricPoint], where: Mapping[str, object], field: str = "value") -> float:
    """Sum over every exporting process and attribute set of the latest cumulative FIELD of the POINTS matching WHERE.

    Each process (told apart by ``service.instance.id`` or pid) exports its own cumulative series.
    """
    latest: dict[tuple[object, ...], MetricPoint] = {}
    for point in points:
        if any(point.attributes.get(key) != value for key, value in where.items()):
            continue
        process = point.resource.get("service.instance.id") or point.resource.get("process.pid")
        series = (process, tuple(sorted(point.attributes.items())))
        if series not in latest or point.time_ns >= latest[series].time_ns:
            latest[series] = point
    return sum(getattr(point, field) or 0 for point in latest.values())
