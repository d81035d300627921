"""One trace per job across Kafka and Celery hops: examples/orders with real workers and a real OTLP receiver."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from hoptrace.pipeline.settings import Settings
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import KAFKA_CLIENTS, run_hoptrace
from tests.memory_store import TelemetryStore
from tests.traces import chain, orders_chain_names, published_jobs, wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"


@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)
def test_hundred_jobs_make_hundred_four_hop_traces(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    # The Kafka stages and the publisher on each client (HOPTRACE_KAFKA_CLIENT): the same traces, hop for hop.
    _, store = telemetry_store
    with hoptrace_worker(ORDERS):
        published = published_jobs(run_hoptrace(hoptrace_env, "publish", ORDERS, "validate", "--count", "100", "--baggage", "tenant=acme").stdout)
        delivered = wait_for_outbox(settings, namespace, 100)
        assert store.wait_until(lambda s: len(s.spans()) >= 800, timeout=30)

    assert len(published) == 100
    assert len({job.trace_id for job in published}) == 100
    # Baggage set at publish is readable in the last stage, for every job, with its job id.
    assert sorted((note["job_id"], note["tenant"]) for note in delivered) == sorted((job.job_id, "acme") for job in published)

    traces = store.traces()
    assert set(traces) == {job.trace_id for job in published}
    job_of_trace = {job.trace_id: job.job_id for job in published}
    for trace_id, spans in traces.items():
        ordered = chain(spans)
        assert [(span.name, span.kind) for span in ordered] == orders_chain_names(namespace)
        assert {span.attributes["hoptrace.job.id"] for span in ordered} == {job_of_trace[trace_id]}
        assert [span.attributes["hoptrace.stage"] for span in ordered] == [
            "validate",
            "validate",
            "charge",
            "charge",
            "ship",
            "ship",
            "notify",
            "notify",
        ]
        assert all(span.status_code == "UNSET" for span in ordered)
        process_validate = ordered[1]
        assert process_validate.attributes["messaging.consumer.group.name"] == f"{namespace}validate"
        assert process_validate.attributes["messaging.operation.type"] == "process"
        assert isinstance(process_validate.attributes["messaging.kafka.offset"], int)
        assert ordered[2].attributes["messaging.message.id"] == ordered[3].attributes["messaging.message.id"]
    assert len(store.spans()) == 800


def test_sampling_decision_of_the_first_publish_holds_for_every_hop(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    env = {**hoptrace_env, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    with hoptrace_worker(ORDERS, env=env):
        published = published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--count", "100").stdout)
        assert len(wait_for_outbox(settings, namespace, 100)) == 100
    # The workers flushed on stop: everything they will ever export is in.

    bound = TraceIdRatioBased.get_bound_for_rate(0.5)
    sampled = {job.trace_id for job in published if int(job.trace_id, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < bound}
    assert 20 < len(sampled) < 80  # the ratio sampler did decide, both ways
    traces = store.traces()
    assert set(traces) == sampled
    assert all(len(spans) == 8 for spans in traces.values())
