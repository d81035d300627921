"""Queue depth and consumer lag of examples/orders, from a real `hoptrace monitor`, over OTLP."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from hoptrace.pipeline.settings import Settings
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import SilentEndpoint, run_hoptrace
from tests.memory_store import TelemetryStore
from tests.processes import Process, own_tracebacks, running
from tests.traces import wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"
JOBS = 300
DEPTH = "hoptrace.queue.depth"
LAG = "hoptrace.kafka.consumer.lag"


def _latest(store: TelemetryStore, name: str, **where: str) -> float | None:
    """The newest exported value of gauge NAME for the series matching WHERE (summed over partitions)."""
    points = [p for p in store.metrics(name) if all(p.attributes.get(k.replace("__", ".")) == v for k, v in where.items())]
    if not points:
        return None
    newest = max(point.time_ns for point in points)
    return sum(point.value or 0 for point in points if point.time_ns == newest)


@pytest.fixture
def monitor(hoptrace_env: dict[str, str], tmp_path) -> Callable[..., object]:
    def start(env: dict[str, str] | None = None) -> object:
        command = [sys.executable, "-m", "hoptrace", "monitor", ORDERS, "--interval", "0.3"]
        return running(command, tmp_path / "monitor.log", {**hoptrace_env, **(env or {})}, ready="", timeout=5)

    return start


def test_depth_and_lag_rise_while_a_stage_is_down_and_drain_when_it_runs(
    settings: Settings,
    namespace: str,
    hoptrace_env: dict[str, str],
    hoptrace_worker: Callable,
    monitor: Callable,
    telemetry_store: tuple[OtlpReceiver, TelemetryStore],
) -> None:
    _, store = telemetry_store
    charge = {"hoptrace__stage": "charge", "hoptrace__queue__state": "ready"}
    ship = {"hoptrace__stage": "ship", "messaging__consumer__group__name": f"{namespace}ship"}
    with monitor(), hoptrace_worker(ORDERS, "--stage", "validate", "--no-monitor", ready="consuming"):
        run_hoptrace(hoptrace_env, "publish", ORDERS, "validate", "--count", str(JOBS))
        assert store.wait_until(lambda s: _latest(s, DEPTH, **charge) == JOBS, timeout=60), _latest(store, DEPTH, **charge)
        with hoptrace_worker(ORDERS, "--stage", "charge", "--no-monitor"):
            assert store.wait_until(lambda s: _latest(s, DEPTH, **charge) == 0, timeout=90), _latest(store, DEPTH, **charge)
            assert store.wait_until(lambda s: _latest(s, DEPTH, hoptrace__stage="charge", hoptrace__queue__state="unacked") == 0, timeout=30)
            assert store.wait_until(lambda s: _latest(s, LAG, **ship) == JOBS, timeout=60), _latest(store, LAG, **ship)
        with hoptrace_worker(ORDERS, "--stage", "ship", "--no-monitor", ready="consuming"):
            assert store.wait_until(lambda s: _latest(s, LAG, **ship) == 0, timeout=90), _latest(store, LAG, **ship)
    depth_units = {point.unit for point in store.metrics(DEPTH)} | {point.unit for point in store.metrics(LAG)}
    assert depth_units == {"{message}"}
    assert wait_for_outbox(settings, namespace, 1, timeout=0) == []  # notify never ran


@pytest.mark.parametrize("dead", ["redis", "kafka"])
def test_one_broker_down_leaves_the_other_gauge_reporting_on_time(
    dead: str, silent_endpoint: SilentEndpoint, hoptrace_env: dict[str, str], monitor: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    run_hoptrace(hoptrace_env, "publish", ORDERS, "validate", "--count", "5")  # creates the topic, so lag has a series
    run_hoptrace(hoptrace_env, "publish", ORDERS, "charge", "--count", "5")  # and the queue has depth
    dead_port = silent_endpoint.port
    broken = {"HOPTRACE_REDIS_URL": f"redis://127.0.0.1:{dead_port}/0"} if dead == "redis" else {"HOPTRACE_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead_port}"}
    alive_name, dead_name = (LAG, DEPTH) if dead == "redis" else (DEPTH, LAG)
    with monitor(broken) as process:
        # Export every 0.5 s: ten exports of the live gauge arrive although the other broker never answers.
        assert store.wait_until(lambda s: len({p.time_ns for p in s.metrics(alive_name)}) >= 10, timeout=15)
        assert store.metrics(dead_name) == []
        assert isinstance(process, Process) and process.popen.poll() is None
    log = process.output()
    silent = ["job ledger", "redis"] if dead == "redis" else ["kafka"]  # the job ledger lives in Redis too
    assert sorted(line.split("] ")[1].split(" does not answer")[0] for line in log.splitlines() if "does not answer" in line) == silent, log
    assert own_tracebacks(log) == [], log
