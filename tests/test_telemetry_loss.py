"""Telemetry that could not be sent is counted (``hoptrace.telemetry.dropped``) and said once per outage, never silent.

Real exporters against real sockets: a port that refuses (the collector is down), one that
accepts and never answers (a hung collector: the queue fills), then a receiver coming up on
the same port (the outage ends). Every span lost is counted exactly once.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from hoptrace.pipeline.telemetry.providers import Telemetry, configure
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import SilentEndpoint, free_port
from tests.memory_store import TelemetryStore
from tests.traces import wait_for

LOGGER = "hoptrace.pipeline.telemetry.loss"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* from the machine; OTLP traces only, quick to give up and quick to batch."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")


@pytest.fixture
def service() -> str:
    """This test's service name. Outage lines name their service, and telemetry that earlier tests left
    behind (a bounded shutdown can leave an exporter retrying in the background) names its own."""
    return f"loss-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make(service: str) -> Iterator[Callable[[], tuple[Telemetry, InMemoryMetricReader]]]:
    """``configure`` (not global) as SERVICE with an in-memory reader to read the loss counter; shut down after."""
    made: list[Telemetry] = []

    def make() -> tuple[Telemetry, InMemoryMetricReader]:
        reader = InMemoryMetricReader()
        made.append(configure(service, set_global=False, metric_readers=[reader]))
        return made[-1], reader

    yield make
    for telemetry in made:
        telemetry.shutdown(timeout_s=2)


def dropped(reader: InMemoryMetricReader) -> dict[str, float]:
    """``hoptrace.telemetry.dropped`` by signal, as the reader collects it now."""
    data = reader.get_metrics_data()
    points = [
        point
        for resource in (data.resource_metrics if data else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "hoptrace.telemetry.dropped"
        for point in metric.data.data_points
    ]
    return {str(point.attributes["hoptrace.telemetry.signal"]): point.value for point in points}


def end_spans(telemetry: Telemetry, count: int) -> None:
    tracer = telemetry.tracer_provider.get_tracer("loss-test")
    for n in range(count):
        tracer.start_span(f"span {n}").end()


def outage_messages(caplog: pytest.LogCaptureFixture, service: str) -> list[str]:
    """What SERVICE's telemetry said about its outages."""
    return [message for record in caplog.records if record.name == LOGGER and f" of {service} " in (message := record.getMessage())]


def outage_lines(caplog: pytest.LogCaptureFixture, service: str) -> list[str]:
    return [message.split(":")[0] for message in outage_messages(caplog, service)]


def test_spans_a_refusing_collector_never_takes_are_counted_once_and_said_once(
    monkeypatch: pytest.MonkeyPatch, make: Callable, caplog: pytest.LogCaptureFixture, service: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    telemetry, reader = make()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        end_spans(telemetry, 30)
        assert wait_for(lambda: dropped(reader).get("traces") == 30, 20), dropped(reader)
        end_spans(telemetry, 5)
        assert wait_for(lambda: dropped(reader).get("traces") == 35, 20), dropped(reader)
    assert outage_lines(caplog, service) == [f"dropping traces of {service} (export_failed)"]  # one line for the whole outage


def test_a_full_queue_drops_the_oldest_spans_and_counts_each_lost_span_once(
    monkeypatch: pytest.MonkeyPatch, make: Callable, silent_endpoint: SilentEndpoint
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", silent_endpoint.url)  # a hung collector: each export waits out its timeout
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    telemetry, reader = make()

    end_spans(telemetry, 50)

    assert wait_for(lambda: dropped(reader).get("traces") == 50, 30), dropped(reader)


def test_the_end_of_an_outage_is_said_with_what_it_cost(
    monkeypatch: pytest.MonkeyPatch, make: Callable, caplog: pytest.LogCaptureFixture, service: str
) -> None:
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    telemetry, reader = make()
    store = TelemetryStore()
    ended = 12
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        end_spans(telemetry, ended)
        assert wait_for(lambda: dropped(reader).get("traces") == 12, 20)
        with OtlpReceiver(store, "127.0.0.1", port, free_port()):
            # gRPC reconnects with a backoff: spans ended while it waits are lost (and counted) too.
            while not store.wait_until(lambda s: len(s.spans()) > 0, timeout=1):
                end_spans(telemetry, 3)
                ended += 3
            telemetry.tracer_provider.force_flush()
    lost = dropped(reader)["traces"]
    assert lost + len(store.spans()) == ended  # every span ended is either received or counted as lost, once
    assert outage_messages(caplog, service)[-1] == f"traces export of {service} works again; {lost:.0f} traces were dropped during the outage"


def test_metric_points_a_refusing_collector_never_takes_are_counted(
    monkeypatch: pytest.MonkeyPatch, make: Callable, caplog: pytest.LogCaptureFixture, service: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        telemetry, reader = make()
        telemetry.meter_provider.get_meter("loss-test").create_counter("jobs").add(1)
        assert wait_for(lambda: dropped(reader).get("metrics", 0) >= 2, 20), dropped(reader)
    assert outage_lines(caplog, service) == [f"dropping metrics of {service} (export_failed)"]
