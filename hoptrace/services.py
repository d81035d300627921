"""``hoptrace services``: start and stop local Kafka and Redis (and, on request, the observability stack) through deploy/local; check their health.

Starting and stopping is the shell scripts' job (they also run without a virtual
environment, in CI and on a bare laptop): ``services.sh`` for Redis and Kafka,
``observability.sh`` for the service ``observability`` (the OpenTelemetry Collector, Jaeger
and Prometheus). Health is checked here with the real clients: a Kafka metadata request, a
Redis PING, and each observability service's own health or API endpoint.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal
from urllib.request import urlopen

from hoptrace.clients.celery.urls import shown_url
from hoptrace.clients.kafka_python.admin import AdminFailed, describe_cluster
from hoptrace.clients.redis.server import ServerUnavailable, server_version
from hoptrace.errors import CommandError
from hoptrace.output import console
from hoptrace.pipeline.settings import Settings

SCRIPTS = Path(str(files("hoptrace.deploy") / "local"))
"""The local-services scripts: package data, run from wherever hoptrace is installed."""
SERVICE_NAMES = ("redis", "kafka")
"""The brokers: what ``up``, ``down`` and ``status`` mean without names."""
OBSERVABILITY = "observability"
"""The name of the observability stack (Collector, Jaeger, Prometheus), started and stopped together by observability.sh."""
PROBE_TIMEOUT_S = 5.0


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    """What one health check found."""

    name: str
    address: str
    healthy: bool
    detail: str
    """The product and version when healthy, else what went wrong."""
    pid: int | None
    """The process id when hoptrace started the service, else None."""


def _script(name: str, action: str, services: tuple[str, ...], env: dict[str, str], echo: bool) -> str:
    """Run ``bash deploy/local/NAME ACTION SERVICES...``; return what it printed (echoing each line as it comes when ECHO)."""
    command = ["bash", str(SCRIPTS / name), action, *services]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if echo:
                print(line, end="", flush=True)
    if process.returncode != 0:
        errors = [line for line in lines if line.startswith("error:")] if echo else lines
        raise ServiceError("".join(errors).strip() or f"{name} {action} failed (exit status {process.returncode})")
    return "".join(lines)


def run(action: Literal["up", "down"], settings: Settings, services: tuple[str, ...] = SERVICE_NAMES, echo: bool = False) -> str:
    """Run ACTION for SERVICES (brokers through ``services.sh``, ``observability`` through ``observability.sh``); return what they printed.

    Up starts the brokers first, down stops the observability stack first. With ECHO, the
    scripts' lines are printed as they come (a first build of the stack takes minutes).
    """
    env = {
        **os.environ,
        "HOPTRACE_KAFKA_BOOTSTRAP": settings.kafka_servers[0],
        "HOPTRACE_REDIS_URL": settings.redis_url,
        "HOPTRACE_STATE_DIR": str(settings.state_dir),
    }
    brokers = tuple(name for name in services if name != OBSERVABILITY)
    steps = [("services.sh", action, brokers)] if brokers else []
    if OBSERVABILITY in services:
        step = ("observability.sh", "start" if action == "up" else "stop", ())
        steps = [*steps, step] if action == "up" else [step, *steps]
    return "".join(_script(name, verb, names, env, echo) for name, verb, names in steps).strip()


def _started_pid(pidfile: Path) -> int | None:
    """The pid in a pid file written by the scripts, when that process still runs."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def kafka_status(settings: Settings) -> ServiceStatus:
    """Ask the Kafka cluster for its metadata and the broker's version."""
    address = settings.kafka_bootstrap
    pid = _started_pid(settings.state_dir / "kafka" / "kafka.pid")
    try:
        cluster = describe_cluster(settings, PROBE_TIMEOUT_S)
    except AdminFailed as error:
        return ServiceStatus("kafka", address, False, str(error), pid)
    version = cluster.version
    if pid is not None:  # started by hoptrace: the exact release is known from its jars
        version = (settings.state_dir / "kafka" / "version").read_text().strip()
    detail = f"Apache Kafka {version} ({cluster.brokers} broker{'s' if cluster.brokers != 1 else ''}, cluster {cluster.cluster_id})"
    return ServiceStatus("kafka", address, True, detail, pid)


def redis_status(settings: Settings) -> ServiceStatus:
    """PING Redis and read its version; the address is shown without its password."""
    pid = _started_pid(settings.state_dir / "redis" / "redis.pid")
    address = shown_url(settings.redis_url)
    try:
        return ServiceStatus("redis", address, True, f"Redis {server_version(settings.redis_url, PROBE_TIMEOUT_S)}", pid)
    except ServerUnavailable as error:
        return ServiceStatus("redis", address, False, f"not answering: {error}", pid)


def _fetch(url: str) -> str:
    """The body of GET URL as text; OSError (URLError included) or ValueError when it cannot be had."""
    with urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
        return response.read().decode("utf-8", "replace")


def _address(variable: str, default: str) -> str:
    """A host:port of the observability stack: the environment's, as observability.sh reads it, or the script's default."""
    return os.environ.get(variable) or default


def _found_in(url: str, pattern: str) -> str | None:
    """The first group of PATTERN in the page at URL; None when the page or the pattern is not there."""
    try:
        found = re.search(pattern, _fetch(url), re.MULTILINE)
    except (OSError, ValueError):
        return None
    return found.group(1) if found else None


def _http_status(name: str, settings: Settings, address: str, probe: str, describe: Callable[[str], str]) -> ServiceStatus:
    """The status of the observability service NAME: healthy when GET PROBE answers; DESCRIBE turns the answer into the detail."""
    pid = _started_pid(settings.state_dir / "observability" / f"{name}.pid")
    try:
        return ServiceStatus(name, address, True, describe(_fetch(probe)), pid)
    except (OSError, ValueError, KeyError, TypeError) as error:
        return ServiceStatus(name, address, False, f"not answering at {probe} ({getattr(error, 'reason', error)})", pid)


def collector_status(settings: Settings) -> ServiceStatus:
    """The OpenTelemetry Collector's health_check extension; its version from its own metrics' ``target_info``."""
    telemetry = f"http://{_address('HOPTRACE_COLLECTOR_TELEMETRY', '127.0.0.1:8888')}/metrics"
    http = _address("HOPTRACE_COLLECTOR_HTTP", "127.0.0.1:4318")

    def describe(health: str) -> str:
        version = _found_in(telemetry, r'^target_info\{.*service_version="([^"]+)"') or "(version unknown)"
        return f"OpenTelemetry Collector {version}; OTLP gRPC here, HTTP at {http}"

    health = f"http://{_address('HOPTRACE_COLLECTOR_HEALTH', '127.0.0.1:13133')}/"
    return _http_status("collector", settings, _address("HOPTRACE_COLLECTOR_GRPC", "127.0.0.1:4317"), health, describe)


def jaeger_status(settings: Settings) -> ServiceStatus:
    """Jaeger's query API (``/api/services``); its version from the page it serves."""
    query = f"http://{_address('HOPTRACE_JAEGER_QUERY', '127.0.0.1:16686')}"
    otlp = _address("HOPTRACE_JAEGER_OTLP", "127.0.0.1:14317")

    def describe(services: str) -> str:
        if "data" not in json.loads(services):
            raise ValueError("this is not Jaeger's query API")
        version = _found_in(f"{query}/", r'"gitVersion":"([^"]+)"') or "(version unknown)"
        return f"Jaeger {version}; OTLP in at {otlp}"

    return _http_status("jaeger", settings, query, f"{query}/api/services", describe)


def prometheus_status(settings: Settings) -> ServiceStatus:
    """Prometheus' build information (``/api/v1/status/buildinfo``)."""
    address = f"http://{_address('HOPTRACE_PROMETHEUS', '127.0.0.1:9090')}"
    return _http_status(
        "prometheus", settings, address, f"{address}/api/v1/status/buildinfo", lambda info: f"Prometheus {json.loads(info)['data']['version']}"
    )


def status(settings: Settings, services: tuple[str, ...] = SERVICE_NAMES) -> list[ServiceStatus]:
    """Health of SERVICES: Redis, Kafka, then the collector, Jaeger and Prometheus for ``observability``."""
    checks = {"redis": (redis_status,), "kafka": (kafka_status,), OBSERVABILITY: (collector_status, jaeger_status, prometheus_status)}
    return [check(settings) for name in ("redis", "kafka", OBSERVABILITY) if name in services for check in checks[name]]


def print_run(action: Literal["up", "down"], services: tuple[str, ...] | None = None) -> None:
    """``hoptrace services up|down``: run ACTION for SERVICES (default: the brokers) and print what the scripts said, as they say it."""
    try:
        run(action, Settings(), services or SERVICE_NAMES, echo=True)
    except ServiceError as error:
        raise CommandError(error) from error


def print_status(services: tuple[str, ...] | None = None) -> int:
    """``hoptrace services status``: one table row per service (default: the brokers); 1 when one is not healthy."""
    from rich.table import Table
    from rich.text import Text

    table = Table("service", "address", "pid", "health", "detail")
    found = status(Settings(), services or SERVICE_NAMES)
    for item in found:
        health = Text("healthy", style="green") if item.healthy else Text("down", style="red")
        pid = str(item.pid) if item.pid is not None else "not started by hoptrace"
        table.add_row(item.name, item.address, pid, health, item.detail)
    console().print(table)
    return 0 if all(item.healthy for item in found) else 1
