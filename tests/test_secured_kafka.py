"""hoptrace on a Kafka that wants SASL: every client of it (publisher, stage workers, monitor) authenticates, and bad credentials say so.

The local broker has a second listener, SASL_PLAINTEXT with the PLAIN mechanism, on the port after
its controller's (``deploy/local/kafka.sh``: user ``hoptrace``); the orders pipeline runs through it
end to end under ``hoptrace worker``, with the monitor's consumer lag read through it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from hoptrace.pipeline.settings import Settings
from hoptrace.view.memory_store import TelemetryStore
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import run_hoptrace
from tests.traces import chain, latest_totals, orders_chain_names, published_jobs, wait_for, wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"
SASL_USER, SASL_PASSWORD = "hoptrace", "hoptrace-local-secret"

pytestmark = pytest.mark.usefixtures("namespace_cleanup")


def _sasl_env(hoptrace_env: dict[str, str], settings: Settings, password: str = SASL_PASSWORD) -> dict[str, str]:
    host, port = settings.kafka_servers[0].rsplit(":", 1)
    return {
        **hoptrace_env,
        "HOPTRACE_KAFKA_BOOTSTRAP": f"{host}:{int(port) + 2}",
        "HOPTRACE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HOPTRACE_KAFKA_SASL_MECHANISM": "PLAIN",
        "HOPTRACE_KAFKA_SASL_USERNAME": SASL_USER,
        "HOPTRACE_KAFKA_SASL_PASSWORD": password,
    }


def _hoptrace(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run one ``hoptrace`` command to the end, however it ends."""
    command = [sys.executable, "-m", "hoptrace", *args]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False)


def test_the_orders_pipeline_runs_end_to_end_through_a_sasl_listener(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    _, store = telemetry_store
    env = _sasl_env(hoptrace_env, settings)
    with hoptrace_worker(ORDERS, env=env):  # with its monitor: the consumer lag is read through the SASL listener as well
        published = published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--count", "5").stdout)
        assert len(wait_for_outbox(settings, namespace, 5)) == 5
        assert wait_for(lambda: len(store.spans()) >= 40, timeout=30)
        assert wait_for(lambda: store.metrics("hoptrace.kafka.consumer.lag") != [], timeout=30)
    traces = store.traces()
    assert set(traces) == {job.trace_id for job in published}
    assert all([(span.name, span.kind) for span in chain(spans)] == orders_chain_names(namespace) for spans in traces.values())
    lags = store.metrics("hoptrace.kafka.consumer.lag")
    assert latest_totals(lags, {"messaging.consumer.group.name": f"{namespace}ship"}) == 0


def test_a_wrong_password_is_a_clear_error_not_a_traceback(settings: Settings, hoptrace_env: dict[str, str]) -> None:
    env = {**_sasl_env(hoptrace_env, settings, password="not-the-password"), "HOPTRACE_KAFKA_CONNECT_TIMEOUT_S": "5"}
    done = _hoptrace(env, "publish", ORDERS, "validate", "--payload", json.dumps({"order_id": "x"}))
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said
    assert "could not connect to Kafka at" in said and "HOPTRACE_KAFKA_SASL_" in said, said


def test_sasl_settings_that_do_not_go_together_are_refused_with_what_to_set(settings: Settings, hoptrace_env: dict[str, str]) -> None:
    env = {**hoptrace_env, "HOPTRACE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}  # no mechanism, user or password
    done = _hoptrace(env, "publish", ORDERS, "validate")
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "Traceback" not in said
    assert "HOPTRACE_KAFKA_SASL_USERNAME" in said, said
