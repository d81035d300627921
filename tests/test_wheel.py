"""The installed package works from anywhere: a wheel, a fresh virtual environment outside the checkout, an empty folder.

This is how a new user meets hoptrace (``pip install hoptrace``): nothing of the checkout is on the
path, the local-services scripts run from the installed package, state goes to ``.hoptrace/`` in
the current folder, and hoptrace occupies one top-level import name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoptrace.pipeline.settings import Settings
from tests.conftest import run_to_end


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    """An empty folder to run from, far from the checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.fixture
def user_env(settings: Settings, wheel_venv: Path) -> Iterator[dict[str, str]]:
    """A user's environment: the venv first on PATH, the brokers, and no trace of the checkout or of the test run."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HOPTRACE_", "OTEL_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{wheel_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        HOPTRACE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        HOPTRACE_REDIS_URL=settings.redis_url,
    )
    yield env


def _package_files(venv: Path) -> set[str]:
    """Every file of the installed hoptrace package, byte-code caches left out (the interpreter's, not hoptrace's)."""
    [package] = venv.glob("lib/python*/site-packages/hoptrace")
    return {str(path.relative_to(package)) for path in package.rglob("*") if path.is_file() and "__pycache__" not in path.parts}


def test_the_wheel_holds_one_top_level_name_and_the_service_scripts(wheel_venv: Path, empty_folder: Path, user_env: dict[str, str]) -> None:
    python = str(wheel_venv / "bin" / "python")
    for name in ("pipeline", "workers", "producers", "examples", "deploy"):
        refused = run_to_end([python, "-c", f"import {name}"], empty_folder, user_env)
        assert refused.returncode == 1
        assert f"ModuleNotFoundError: No module named '{name}'" in refused.stderr
    [site] = wheel_venv.glob("lib/python*/site-packages")
    top_level = sorted(path.name for path in site.iterdir() if path.name.startswith("hoptrace"))
    assert top_level[0] == "hoptrace" and all(name.startswith("hoptrace-") for name in top_level[1:])
    files = _package_files(wheel_venv)
    assert {"deploy/local/services.sh", "deploy/local/kafka.sh", "deploy/local/redis.sh", "deploy/local/pom.xml", "examples/orders.py"} <= files


def test_from_an_empty_folder_services_status_and_the_demo_run_and_write_only_there(
    wheel_venv: Path, empty_folder: Path, user_env: dict[str, str]
) -> None:
    before = _package_files(wheel_venv)

    status = run_to_end(["hoptrace", "services", "status"], empty_folder, user_env, 60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("healthy") == 2

    demo = run_to_end(["hoptrace", "demo", "--jobs", "20"], empty_folder, user_env, 300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "20 of 20 jobs went validate → charge → ship → notify" in demo.stdout

    assert sorted(path.name for path in empty_folder.iterdir()) == [".hoptrace"]
    assert {"traces.sqlite", "demo-workers.log"} <= {path.name for path in (empty_folder / ".hoptrace").iterdir()}
    assert _package_files(wheel_venv) == before
