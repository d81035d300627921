"""The flight recorder end to end: at 1 % head sampling, every job that went wrong arrives whole at the OTLP receiver.

examples/orders under ``hoptrace worker`` on the real brokers, publishers that linger (``hoptrace
publish --linger``) so their publish spans can still be handed over, and a real OTLP receiver;
then a stage killed with jobs in hand: their traces come out, marked and counted partial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from hoptrace.pipeline.settings import Settings
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.receiver import OtlpReceiver
from tests.memory_store import TelemetryStore
from tests.processes import own_tracebacks
from tests.traces import PublishedJob, chain, latest_totals, published_jobs, slow_outbox, wait_for, wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"
SLOW = "tests.faults.pipelines:slow"
RATE = 0.01
SLOW_AFTER_S = 8.0
MAX_ATTEMPTS = 3  # the orders stages' retry policy


IGNORING_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
"""Runs the rest of its command line with SIGINT ignored, as a shell starts a background job (exec keeps an ignored disposition)."""


def _publisher(
    env: dict[str, str], count: int, payload: dict[str, object], spec: str = ORDERS, stage: str = "validate", ignore_sigint: bool = False
) -> subprocess.Popen[str]:
    """``hoptrace publish`` COUNT jobs of PAYLOAD to STAGE of SPEC, staying until interrupted (IGNORE_SIGINT: started as a background job).

    No ``preexec_fn``: it makes subprocess fork this process, whose gRPC threads can crash the child before it execs.
    """
    options = ["--count", str(count), "--payload", json.dumps(payload), "--linger", "300"]
    command = [sys.executable, *(["-c", IGNORING_SIGINT] if ignore_sigint else []), "-m", "hoptrace", "publish", spec, stage, *options]
    env = {**env, "PYTHONFAULTHANDLER": "1"}  # a SIGABRT makes it print every thread's stack (see _jobs)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _jobs(publisher: subprocess.Popen[str], stop: signal.Signals = signal.SIGINT) -> list[PublishedJob]:
    """Stop a lingering publisher with STOP (it shuts down cleanly) and read the jobs it printed; when it does not stop, say where it hangs."""
    publisher.send_signal(stop)
    try:
        out, err = publisher.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        publisher.send_signal(signal.SIGABRT)
        _, err = publisher.communicate(timeout=30)
        raise AssertionError(f"the publisher did not stop within 60 s of SIGINT; its threads:\n{err}") from None
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


def _records(env: dict[str, str], topic: str) -> int:
    """How many records TOPIC's only partition holds."""
    consumer = KafkaConsumer(bootstrap_servers=env["HOPTRACE_KAFKA_BOOTSTRAP"])
    try:
        partition = TopicPartition(topic, 0)
        return int(consumer.end_offsets([partition])[partition])
    finally:
        consumer.close()


def test_a_stage_killed_with_jobs_in_hand_leaves_their_traces_kept_and_counted_partial_not_silently_incomplete(
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    kafka_admin: KafkaAdminClient,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    kafka_admin.create_topics([NewTopic(f"{namespace}slow.in", 1, 1)])
    env = {**hoptrace_env, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(RATE)}
    publisher = _publisher(env, 10, {"order_id": "k{n}", "sleep_s": 0.3}, SLOW, "take")
    assert wait_for(lambda: _records(env, f"{namespace}slow.in") == 10, timeout=60)  # before the worker: its first poll takes all ten
    with hoptrace_worker(SLOW, "--no-monitor", "--stage", "take", ready="assigned partitions", env=env) as doomed:
        assert wait_for(lambda: len(slow_outbox(env, namespace)) >= 2, timeout=30), doomed.output()
        os.kill(doomed.popen.pid, signal.SIGKILL)  # all ten in hand, uncommitted, the spans of those done in its buffer
    with hoptrace_worker(SLOW, "--no-monitor", "--stage", "take", ready="assigned partitions", env=env) as heir:
        every_order = {f"k{n}" for n in range(1, 11)}
        assert wait_for(lambda: {note["order_id"] for note in slow_outbox(env, namespace)} == every_order, timeout=30), heir.output()
        assert wait_for(lambda: len(store.traces()) == 10, timeout=30)  # each redelivered job: the publisher's span and the heir's
        jobs = _jobs(publisher)
    assert own_tracebacks(heir.output()) == []

    bound = TraceIdRatioBased.get_bound_for_rate(RATE)
    unsampled = {job.trace_id for job in jobs if int(job.trace_id, 16) & TraceIdRatioBased.TRACE_ID_LIMIT >= bound}
    traces = store.traces()
    assert set(traces) == {job.trace_id for job in jobs}  # every one came again, so every one is kept (or head-sampled)
    for trace_id in unsampled:
        spans = traces[trace_id]
        # The publisher's send and the heir's redelivered attempt; the dead worker's attempt died with it, and the trace says so.
        assert [(span.kind, span.attributes.get("hoptrace.redelivered")) for span in chain(spans)] == [("PRODUCER", None), ("CONSUMER", True)]
        assert {(span.attributes["hoptrace.keep.reason"], span.attributes["hoptrace.keep.partial"]) for span in spans} == {("redelivered", True)}
    assert latest_totals(store.metrics("hoptrace.recorder.partial"), {"hoptrace.keep.reason": "redelivered"}) == len(unsampled)


@pytest.mark.parametrize(("stop", "ignore_sigint"), [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["sigterm", "sigint-ignored"])
def test_a_lingering_publisher_stops_cleanly_on_sigterm_and_on_sigint_a_shell_had_it_ignore(
    hoptrace_env: dict[str, str], stop: signal.Signals, ignore_sigint: bool
) -> None:
    """A process manager stops with SIGTERM; a shell starts background jobs with SIGINT ignored (so did a CI run of this suite, whose
    publishers then lingered the whole 300 s). Either way the publisher stops at once and shuts down cleanly (exit 0)."""
    publisher = _publisher(hoptrace_env, 1, {"order_id": "linger"}, ignore_sigint=ignore_sigint)
    assert publisher.stderr is not None
    for line in publisher.stderr:  # once it lingers
        if line.startswith("lingering"):
            break
    assert len(_jobs(publisher, stop)) == 1
