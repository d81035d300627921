"""The installed package works from anywhere: a wheel, a fresh virtual environment outside the checkout, an empty folder.

This is how a new user meets hoptrace (``pip install hoptrace``): nothing of the checkout is on the
path, the local-services scripts run from the installed package, state goes to ``.hoptrace/`` in
the current folder, and hoptrace occupies one top-level import name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoptrace.pipeline.settings import Settings

REPOSITORY = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S = 600


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment, outside the checkout, with hoptrace installed from a wheel built from it."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPOSITORY)], root, dict(os.environ), INSTALL_TIMEOUT_S
    )
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("hoptrace-*.whl")
    made = _run([sys.executable, "-m", "venv", str(root / "venv")], root, dict(os.environ))
    assert made.returncode == 0, made.stderr
    installed = _run(
        [str(root / "venv" / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], root, dict(os.environ), INSTALL_TIMEOUT_S
    )
    assert installed.returncode == 0, installed.stderr
    return root / "venv"


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    """An empty folder to run from, far from the checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.fixture
def user_env(settings: Settings, venv: Path) -> Iterator[dict[str, str]]:
    """A user's environment: the venv first on PATH, the brokers, and no trace of the checkout or of the test run."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HOPTRACE_", "OTEL_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        HOPTRACE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        HOPTRACE_REDIS_URL=settings.redis_url,
    )
    yield env


def _package_files(venv: Path) -> set[str]:
    """Every file of the installed hoptrace package, byte-code caches left out (the interpreter's, not hoptrace's)."""
    [package] = venv.glob("lib/python*/site-packages/hoptrace")
    return {str(path.relative_to(package)) for path in package.rglob("*") if path.is_file() and "__pycache__" not in path.parts}


def test_the_wheel_holds_one_top_level_name_and_the_service_scripts(venv: Path, empty_folder: Path, user_env: dict[str, str]) -> None:
    python = str(venv / "bin" / "python")
    for name in ("pipeline", "workers", "producers", "examples", "deploy"):
        refused = _run([python, "-c", f"import {name}"], empty_folder, user_env)
        assert refused.returncode == 1
        assert f"ModuleNotFoundError: No module named '{name}'" in refused.stderr
    [site] = venv.glob("lib/python*/site-packages")
    top_level = sorted(path.name for path in site.iterdir() if path.name.startswith("hoptrace"))
    assert top_level[0] == "hoptrace" and all(name.startswith("hoptrace-") for name in top_level[1:])
    files = _package_files(venv)
    assert {"deploy/local/services.sh", "deploy/local/kafka.sh", "deploy/local/redis.sh", "deploy/local/pom.xml", "examples/orders.py"} <= files


def test_from_an_empty_folder_services_status_and_the_demo_run_and_write_only_there(venv: Path, empty_folder: Path, user_env: dict[str, str]) -> None:
    before = _package_files(venv)

    status = _run(["hoptrace", "services", "status"], empty_folder, user_env, 60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("healthy") == 2

    demo = _run(["hoptrace", "demo", "--jobs", "20"], empty_folder, user_env, 300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "20 of 20 jobs went validate → charge → ship → notify" in demo.stdout

    assert sorted(path.name for path in empty_folder.iterdir()) == [".hoptrace"]
    assert {"traces.sqlite", "demo-workers.log"} <= {path.name for path in (empty_folder / ".hoptrace").iterdir()}
    assert _package_files(venv) == before
