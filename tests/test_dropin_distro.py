"""hoptrace and opentelemetry-distro installed together, as a user would have them: one SDK, hoptrace's metrics still there.

The installed wheel (a fresh venv outside the checkout) gets opentelemetry-distro as well; the
plain Celery app (a copy of tests/apps, so nothing of the checkout is importable) runs its
canvas under ``opentelemetry-instrument`` with either distro's configurator chosen (the
loader runs exactly one; which one is left to entry-point order unless
``OTEL_PYTHON_CONFIGURATOR`` says). Either way: the SDK is set up once (no "Overriding"
warning), the stock Celery instrumentation steps aside, the canvas is three traces of 1, 3 and
6 process spans, and hoptrace's histograms reach the exporter the distro's configurator built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoptrace.pipeline.settings import Settings
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import REPOSITORY, fresh_venv
from tests.memory_store import TelemetryStore
from tests.processes import running
from tests.test_dropin_celery import hoptrace_spans, processes
from tests.traces import latest_totals, wait_for

DISTRO = "opentelemetry-distro==0.66b1"


@pytest.fixture(scope="module")
def distro_venv(tmp_path_factory: pytest.TempPathFactory, hoptrace_wheel: Path) -> Path:
    """A venv of its own with the wheel and opentelemetry-distro (the shared ``wheel_venv`` stays hoptrace alone)."""
    return fresh_venv(tmp_path_factory.mktemp("distro"), str(hoptrace_wheel), DISTRO)


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    """The plain Celery app and its client, copied out of the checkout."""
    apps = tmp_path / "app" / "tests" / "apps"
    apps.mkdir(parents=True)
    for name in ("__init__.py", "apps/__init__.py", "apps/plain_celery.py", "apps/plain_celery_client.py"):
        shutil.copy(REPOSITORY / "tests" / name, tmp_path / "app" / "tests" / name)
    return tmp_path / "app"


@pytest.fixture
def env(
    settings: Settings, redis_prefix: str, unique: str, app_folder: Path, telemetry_store: tuple[OtlpReceiver, TelemetryStore]
) -> Iterator[dict[str, str]]:
    """A user's environment for the copied app: no OTEL_* or hoptrace settings of the test run, OTLP to the test receiver."""
    receiver, _ = telemetry_store
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "HOPTRACE_", "PYTHON", "VIRTUAL_ENV"))}
    yield clean | {
        "HOPTRACE_REDIS_URL": settings.redis_url,
        "TEST_REDIS_PREFIX": redis_prefix,
        "TEST_QUEUE": f"distro-{unique}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "PYTHONPATH": str(app_folder),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.mark.parametrize("configurator", ["hoptrace", "configurator"], ids=["hoptrace-configures", "distro-configures"])
def test_with_opentelemetry_distro_installed_too_one_sdk_and_hoptrace_metrics(
    configurator: str, distro_venv: Path, env: dict[str, str], app_folder: Path, telemetry_store: tuple[OtlpReceiver, TelemetryStore], tmp_path: Path
) -> None:
    _, store = telemetry_store
    chosen = {**env, "OTEL_PYTHON_CONFIGURATOR": configurator}
    instrument, celery = str(distro_venv / "bin" / "opentelemetry-instrument"), str(distro_venv / "bin" / "celery")
    worker = [instrument, celery, "-A", "tests.apps.plain_celery", "worker", "--pool", "prefork", "--concurrency", "2", "-Q", env["TEST_QUEUE"]]
    worker += ["--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    with running(worker, tmp_path / "worker.log", {**chosen, "OTEL_SERVICE_NAME": "plain-worker"}, ready=" ready.", cwd=app_folder) as process:
        client = subprocess.run(
            [instrument, str(distro_venv / "bin" / "python"), "-m", "tests.apps.plain_celery_client", "canvas"],
            cwd=app_folder,
            env={**chosen, "OTEL_SERVICE_NAME": "plain-client"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        done = wait_for(lambda: sum(len(processes(spans)) for spans in hoptrace_spans(store).values()) >= 10, 30)
        assert done, process.output() + client.stderr

    logs = process.output() + client.stderr
    assert "Overriding of current" not in logs and "Traceback" not in logs, logs
    assert sorted(len(processes(spans)) for spans in hoptrace_spans(store).values()) == [1, 3, 6]
    assert not any(span.scope_name == "opentelemetry.instrumentation.celery" for span in store.spans())
    assert latest_totals(store.metrics("messaging.process.duration"), {}, "count") == 10
    assert {point.unit for point in store.metrics("messaging.process.duration")} == {"s"}
