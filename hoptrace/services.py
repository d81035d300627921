"""``hoptrace services``: start and stop local Kafka and Redis through deploy/local, and check their health.

Starting and stopping is the shell scripts' job (they also run without a virtual
environment, in CI and on a bare laptop); health is checked here with the real clients:
a Kafka metadata request and a Redis PING.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from hoptrace.errors import CommandError
from hoptrace.output import console
from hoptrace.pipeline.settings import Settings

SCRIPTS = Path(str(files("hoptrace.deploy") / "local"))
"""The local-services scripts: package data, run from wherever hoptrace is installed."""
SERVICE_NAMES = ("redis", "kafka")
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


def run(action: Literal["up", "down"], settings: Settings, services: tuple[str, ...] = SERVICE_NAMES) -> str:
    """Run ``deploy/local/services.sh ACTION`` for the given services; return what it printed."""
    env = {
        **os.environ,
        "HOPTRACE_KAFKA_BOOTSTRAP": settings.kafka_servers[0],
        "HOPTRACE_REDIS_URL": settings.redis_url,
        "HOPTRACE_STATE_DIR": str(settings.state_dir),
    }
    result = subprocess.run(
        ["bash", str(SCRIPTS / "services.sh"), action, *services],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError((result.stdout + result.stderr).strip() or f"services.sh {action} failed")
    return result.stdout.strip()


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
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_servers,
            request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
            bootstrap_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
            client_id="hoptrace-status",
        )
    except KafkaError as error:
        return ServiceStatus("kafka", address, False, f"no broker answers: {error}", pid)
    try:
        cluster = admin.describe_cluster()
        broker_id = cluster["brokers"][0]["broker_id"]
        version = admin.get_broker_version_data(broker_id).broker_version_str
        brokers = len(cluster["brokers"])
        if pid is not None:  # started by hoptrace: the exact release is known from its jars
            version = (settings.state_dir / "kafka" / "version").read_text().strip()
        detail = f"Apache Kafka {version} ({brokers} broker{'s' if brokers != 1 else ''}, cluster {cluster['cluster_id']})"
        return ServiceStatus("kafka", address, True, detail, pid)
    except (KafkaError, IndexError, KeyError) as error:
        return ServiceStatus("kafka", address, False, f"metadata request failed: {error!r}", pid)
    finally:
        admin.close()


def redis_status(settings: Settings) -> ServiceStatus:
    """PING Redis and read its version."""
    pid = _started_pid(settings.state_dir / "redis" / "redis.pid")
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S)
    try:
        client.ping()
        version = client.info("server")["redis_version"]
        return ServiceStatus("redis", settings.redis_url, True, f"Redis {version}", pid)
    except redis.RedisError as error:
        return ServiceStatus("redis", settings.redis_url, False, f"not answering: {error}", pid)
    finally:
        client.close()


def status(settings: Settings) -> list[ServiceStatus]:
    """Health of every local service, Redis first."""
    return [redis_status(settings), kafka_status(settings)]


def print_run(action: Literal["up", "down"], services: tuple[str, ...] | None = None) -> None:
    """``hoptrace services up|down``: run ACTION for SERVICES (default: all) and print what the scripts said."""
    try:
        console().print(run(action, Settings(), services or SERVICE_NAMES), highlight=False)
    except ServiceError as error:
        raise CommandError(error) from error


def print_status() -> int:
    """``hoptrace services status``: one table row per service; 1 when one is not healthy."""
    from rich.table import Table

    table = Table("service", "address", "pid", "health", "detail")
    found = status(Settings())
    for item in found:
        health = "[green]healthy[/green]" if item.healthy else "[red]down[/red]"
        pid = str(item.pid) if item.pid is not None else "not started by hoptrace"
        table.add_row(item.name, item.address, pid, health, item.detail)
    console().print(table)
    return 0 if all(item.healthy for item in found) else 1
