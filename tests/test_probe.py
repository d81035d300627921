"""``hoptrace probe``: what the Kubernetes and Compose probes see of real workers, from the health files they write."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from hoptrace.cli import app
from hoptrace.pipeline.health import HealthFile, read_health

ORDERS = "hoptrace.examples.orders:pipeline"


def probe(state_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["probe", *args], env={"HOPTRACE_STATE_DIR": str(state_dir), "COLUMNS": "200"})
    return result.exit_code, result.output.strip()


def test_a_health_file_says_ready_and_ages(tmp_path: Path) -> None:
    assert read_health(tmp_path, "validate") is None
    health = HealthFile(tmp_path, ["validate"])
    ready, _ = read_health(tmp_path, "validate")  # type: ignore[misc]
    assert not ready
    health.ready(True)
    ready, age = read_health(tmp_path, "validate")  # type: ignore[misc]
    assert ready and age < 5
    missing = "charge: no health file yet (not started, or HOPTRACE_STATE_DIR differs from the worker's)"
    assert probe(tmp_path, "ready", "--stage", "charge") == (1, missing)
    assert probe(tmp_path, "ready")[0] == 2


def test_real_workers_are_ready_and_live_and_a_stopped_one_is_not(hoptrace_worker: Callable, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with hoptrace_worker(ORDERS, "--no-monitor", env={"HOPTRACE_STATE_DIR": str(state)}):
        deadline = time.monotonic() + 60
        for stage in ("validate", "ship", "charge", "notify"):  # each Kafka stage is ready once it has its partitions
            while probe(state, "ready", "--stage", stage)[0] != 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            code, said = probe(state, "ready", "--stage", stage)
            assert (code, said.split(",")[0]) == (0, f"{stage}: ready"), said
            assert probe(state, "live", "--stage", stage)[0] == 0
    time.sleep(2.5)
    code, said = probe(state, "live", "--stage", "validate", "--max-age", "2")
    assert code == 1 and said.startswith("validate: last heartbeat") and "its loop is stuck or it is gone" in said
