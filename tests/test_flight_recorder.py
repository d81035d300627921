"""The flight recorder end to end: at 1 % head sampling, every job that went wrong arrives whole at the OTLP receiver.

examples/orders under ``hoptrace worker`` on the real brokers, publishers that linger (``hoptrace
publish --linger``) so their publish spans can still be handed over, and a real OTLP receiver.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from hoptrace.pipeline.settings import Settings
from hoptrace.view.memory_store import TelemetryStore
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.receiver import OtlpReceiver
from tests.traces import PublishedJob, latest_totals, published_jobs, wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"
RATE = 0.01
SLOW_AFTER_S = 8.0
MAX_ATTEMPTS = 3  # the orders stages' retry policy


def _publisher(env: dict[str, str], count: int, payload: dict[str, object]) -> subprocess.Popen[str]:
    """``hoptrace publish`` COUNT jobs of PAYLOAD, staying until interrupted."""
    command = [
        sys.executable,
        "-m",
        "hoptrace",
        "publish",
        ORDERS,
        "validate",
        "--count",
        str(count),
        "--payload",
        json.dumps(payload),
        "--linger",
        "300",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _jobs(publisher: subprocess.Popen[str]) -> list[PublishedJob]:
    """Interrupt a lingering publisher (it shuts down cleanly) and read the jobs it printed."""
    publisher.send_signal(signal.SIGINT)
    out, err = publisher.communicate(timeout=60)
    assert publisher.returncode == 0, err
    return published_jobs(out)


def _whole(spans: list[ReceivedSpan]) -> bool:
    """One root, and every other span's parent among SPANS."""
    ids = {span.span_id for span in spans}
    roots = [span for span in spans if span.parent_span_id is None]
    return len(roots) == 1 and all(span.parent_span_id in ids for span in spans if span.parent_span_id is not None)


def _process_spans(spans: list[ReceivedSpan]) -> Counter[str]:
    return Counter(str(span.attributes["hoptrace.stage"]) for span in spans if span.kind == "CONSUMER")


def test_failed_retried_and_slow_jobs_arrive_whole_and_the_rest_at_the_head_sampled_rate(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    env = {
        **hoptrace_env,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(RATE),
        "HOPTRACE_SLOW_AFTER_S": str(SLOW_AFTER_S),
    }
    with hoptrace_worker(ORDERS, env=env):
        publishers = {
            "ok": _publisher(env, 240, {"order_id": "ok-{n}"}),
            "dead": _publisher(env, 5, {"order_id": "dead-{n}", "fail_at": "notify"}),
            "retried": _publisher(env, 5, {"order_id": "flaky-{n}", "flaky_at": "ship"}),
        }
        wait_for_outbox(settings, namespace, 245, timeout=120)
        publishers["slow"] = _publisher(env, 1, {"order_id": "slow-1", "slow_at": "notify", "slow_s": SLOW_AFTER_S + 1})
        wait_for_outbox(settings, namespace, 246, timeout=60)
        jobs = {kind: _jobs(publisher) for kind, publisher in publishers.items()}
    # The workers and publishers flushed on stop: everything they will ever export is in.

    assert {kind: len(each) for kind, each in jobs.items()} == {"ok": 240, "dead": 5, "retried": 5, "slow": 1}
    bound = TraceIdRatioBased.get_bound_for_rate(RATE)
    sampled = {job.trace_id for each in jobs.values() for job in each if int(job.trace_id, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < bound}
    kept = {job.trace_id: kind for kind in ("dead", "retried", "slow") for job in jobs[kind]}
    traces = store.traces()
    assert set(traces) == set(kept) | sampled  # the jobs that went wrong, and the head-sampled others: nothing else

    for trace_id, kind in kept.items():
        spans = traces[trace_id]
        assert _whole(spans), [(span.name, span.span_id, span.parent_span_id) for span in spans]
        root = next(span for span in spans if span.parent_span_id is None)
        assert root.name == f"send {namespace}orders.placed"
        expected = {"validate": 1, "charge": 1, "ship": 1, "notify": 1}
        if kind == "dead":
            expected["notify"] = MAX_ATTEMPTS
        if kind == "retried":
            expected["ship"] = 2
        assert _process_spans(spans) == expected, kind
        sends = len(spans) - sum(expected.values())
        assert sends == 4 + (1 if kind == "dead" else 0), [span.name for span in spans]  # a dead letter is one more send
        if trace_id not in sampled:
            reasons = {span.attributes.get("hoptrace.keep.reason") for span in spans} - {None}
            assert reasons == {"slow" if kind == "slow" else "retried"}, kind
            assert not any(span.attributes.get("hoptrace.keep.partial") for span in spans)
    for trace_id in sampled - set(kept):
        assert not any("hoptrace.keep.reason" in span.attributes for span in traces[trace_id])

    kept_by_reason = Counter("slow" if kind == "slow" else "retried" for trace_id, kind in kept.items() if trace_id not in sampled)
    points = store.metrics("hoptrace.recorder.kept")
    assert {point.unit for point in points} == {"{job}"}
    assert {reason: latest_totals(points, {"hoptrace.keep.reason": reason}) for reason in ("retried", "slow")} == {
        reason: kept_by_reason[reason] for reason in ("retried", "slow")
    }
    assert latest_totals(store.metrics("hoptrace.recorder.partial"), {}) == 0
