"""The critical path of real orders jobs on the real brokers: a slowed stage and a flaky one dominate their jobs.

Each job's spans come over OTLP from ``hoptrace worker`` processes; the test asserts which segment
dominates each job, and that the segments tile its end-to-end time. The Celery canvas cases (a
countdown, a retry's countdown, a chord's slow member) are in ``test_dropin_celery``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from hoptrace.pipeline.settings import Settings
from hoptrace.view.critical_path import Segment, critical_path, dominant
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import run_hoptrace
from tests.memory_store import TelemetryStore
from tests.traces import published_jobs, tiles, wait_for_outbox

PATIENT = "tests.faults.pipelines:patient"
"""The orders pipeline with a 1 s pause before each retry."""
HOPS = ("validate", "charge", "ship", "notify")
ORDERS_PATH = [(stage, cause) for stage in HOPS for cause in ("publish", "queue_wait", "handler")]
"""The critical path of an orders job without retries: each hop's publish, wait and handler, in order. A Kafka hop's
wait may be absent: the publish span lasts until the broker's acknowledgement, which can come after the consumer
has the record (then the walk leaves the publish at the consumer's start)."""

pytestmark = pytest.mark.usefixtures("namespace_cleanup")


def _orders_jobs(
    hoptrace_env: dict[str, str], hoptrace_worker: Callable, store: TelemetryStore, settings: Settings, namespace: str, *payloads: dict[str, object]
) -> list[list[ReceivedSpan]]:
    """Run one job per payload through the workers of the orders pipeline (1 s before a retry); the spans of each, in payload order."""
    with hoptrace_worker(PATIENT):
        jobs = [
            published_jobs(run_hoptrace(hoptrace_env, "publish", PATIENT, "validate", "--payload", json.dumps(payload)).stdout)[0]
            for payload in payloads
        ]
        assert len(wait_for_outbox(settings, namespace, len(payloads))) == len(payloads)
        assert store.wait_until(lambda s: all(len(s.traces().get(job.trace_id, ())) >= 8 for job in jobs), timeout=30)
    return [store.traces()[job.trace_id] for job in jobs]


def test_a_slowed_stage_and_a_flaky_one_dominate_their_jobs(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    slowed, flaky = _orders_jobs(
        hoptrace_env,
        hoptrace_worker,
        store,
        settings,
        namespace,
        {"order_id": "slow", "slow_at": "charge", "slow_s": 1.0},
        {"order_id": "flaky", "flaky_at": "ship"},
    )

    path = critical_path(slowed)
    tiles(slowed, path)
    walked = [(segment.stage, segment.cause) for segment in path]
    assert [each for each in ORDERS_PATH if each in walked or each[1] != "queue_wait"] == walked
    longest = dominant(path)
    assert longest is not None and (longest.stage, longest.cause) == ("charge", "handler") and longest.duration_s >= 1.0

    path = critical_path(flaky)
    tiles(flaky, path)
    attempts = [span for span in flaky if span.kind == "CONSUMER" and span.attributes["hoptrace.stage"] == "ship"]
    first, second = sorted(attempts, key=lambda span: span.start_ns)
    backoff = Segment("ship", "retry_backoff", first.end_ns, second.start_ns)
    assert dominant(path) == backoff and backoff.duration_s >= 1.0  # the retry policy's pause between the two attempts at ship
    ship = [(segment.stage, segment.cause) for segment in path if segment.stage == "ship" and segment.cause != "queue_wait"]
    assert ship == [("ship", "publish"), ("ship", "handler"), ("ship", "retry_backoff"), ("ship", "handler")]
