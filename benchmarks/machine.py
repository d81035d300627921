"""The machine a run measured on: CPU, Python, OS, broker versions, package versions, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks import REPOSITORY_ROOT
from hoptrace import services
from hoptrace.pipeline.settings import Settings


def _package_versions(names: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return None
    return result.stdout.strip() or None


def machine_info(settings: Settings) -> dict[str, Any]:
    """CPU count, Python, OS, the brokers' versions and the relevant package versions."""
    brokers = {item.name: item.detail for item in services.status(settings)}
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "kafka": brokers.get("kafka"),
        "redis": brokers.get("redis"),
        "packages": _package_versions(
            ("hoptrace", "kafka-python", "celery", "kombu", "redis", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc", "grpcio")
        ),
        "git_commit": _git_commit(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
