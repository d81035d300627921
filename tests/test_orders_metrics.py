"""Per-stage metrics and correlated logs of examples/orders, received over OTLP (gRPC and HTTP) by a real receiver."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hoptrace.pipeline.settings import Settings
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import run_hoptrace
from tests.memory_store import TelemetryStore
from tests.traces import latest_totals, outbox, published_jobs, wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"
STAGES = ("validate", "charge", "ship", "notify")
JOBS = 200

UNITS = {
    "messaging.client.sent.messages": "{message}",
    "messaging.client.consumed.messages": "{message}",
    "messaging.client.operation.duration": "s",
    "messaging.process.duration": "s",
    "hoptrace.queue.wait": "s",
    "hoptrace.job.latency": "s",
    "hoptrace.pathway.latency": "s",
    "hoptrace.stage.in_flight": "{message}",
}
PATHWAYS = {"validate": "validate", "charge": "validate>charge", "ship": "validate>charge>ship", "notify": "validate>charge>ship>notify"}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_every_stage_counts_and_times_every_message(
    protocol: str,
    settings: Settings,
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    receiver, store = telemetry_store
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    env = {**hoptrace_env, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    with hoptrace_worker(ORDERS, env=env):
        run_hoptrace(env, "publish", ORDERS, "validate", "--count", str(JOBS))
        assert len(wait_for_outbox(settings, namespace, JOBS)) == JOBS
    # Stopped: every process flushed its last cumulative points.

    assert {point.name: point.unit for point in store.metrics() if point.name in UNITS} == UNITS
    histograms = {name for name, unit in UNITS.items() if unit == "s"}
    assert {point.kind for point in store.metrics() if point.name in histograms} == {"histogram"}
    for stage in STAGES:
        where = {"hoptrace.stage": stage}
        consumed = latest_totals(store.metrics("messaging.client.consumed.messages"), where)
        sent = latest_totals(store.metrics("messaging.client.sent.messages"), {**where, "hoptrace.outcome": "ok"})
        counts = [
            latest_totals(store.metrics(name), where, "count")
            for name in ("messaging.process.duration", "hoptrace.queue.wait", "hoptrace.job.latency")
        ]
        assert (stage, consumed, sent, counts) == (stage, JOBS, JOBS, [JOBS, JOBS, JOBS])
        assert latest_totals(store.metrics("hoptrace.stage.in_flight"), where) == 0
        assert latest_totals(store.metrics("hoptrace.queue.wait"), where, "sum") >= 0
    latency = {stage: latest_totals(store.metrics("hoptrace.job.latency"), {"hoptrace.stage": stage}, "sum") for stage in STAGES}
    assert 0 < latency["validate"] <= latency["charge"] <= latency["ship"] <= latency["notify"]
    # Per pathway: one series per stage, the route the jobs took to it, each job once; the same latencies as the job's.
    pathways = store.metrics("hoptrace.pathway.latency")
    assert {tuple(sorted(point.attributes)) for point in pathways} == {("hoptrace.pathway", "hoptrace.pipeline", "hoptrace.stage")}
    assert {(point.attributes["hoptrace.stage"], point.attributes["hoptrace.pathway"]) for point in pathways} == set(PATHWAYS.items())
    for stage, pathway in PATHWAYS.items():
        where = {"hoptrace.pipeline": "orders", "hoptrace.stage": stage, "hoptrace.pathway": pathway}
        assert (stage, latest_totals(pathways, where, "count")) == (stage, JOBS)
        assert latest_totals(pathways, where, "sum") == pytest.approx(latency[stage], rel=1e-9)
    # Low cardinality: no job ids or payload fields in metric attributes.
    assert not any("hoptrace.job.id" in point.attributes or "order_id" in point.attributes for point in store.metrics())
    consumer_groups = {point.attributes.get("messaging.consumer.group.name") for point in store.metrics("messaging.client.consumed.messages")}
    assert consumer_groups == {f"{namespace}validate", f"{namespace}ship", None}


def test_a_log_line_in_the_charge_handler_belongs_to_its_span(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    env = {**hoptrace_env, "OTEL_LOGS_EXPORTER": "otlp"}
    with hoptrace_worker(ORDERS, "--stage", "charge", env=env):
        (job,) = published_jobs(run_hoptrace(env, "publish", ORDERS, "charge", "--payload", '{"order_id": "log-1"}').stdout)
        assert store.wait_until(lambda s: any(log.body == "charged order log-1" for log in s.logs()), timeout=30)
        assert store.wait_until(lambda s: any(span.name == f"process {namespace}payments" for span in s.spans()), timeout=30)

    (log,) = [log for log in store.logs() if log.body == "charged order log-1"]
    (span,) = [span for span in store.spans() if span.name == f"process {namespace}payments"]
    assert (log.trace_id, log.span_id) == (job.trace_id, span.span_id)
    assert log.severity_text == "INFO"
    assert log.resource["service.name"] == "orders-worker"
    assert outbox(settings, namespace) == []  # only charge ran: ship is waiting on its topic
