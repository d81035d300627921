"""Session fixtures: real Kafka and Redis, started through deploy/local when they are down.

Each test gets its own Kafka topic names and Redis key prefix, removed afterwards. Services
the suite started are stopped at the end; services that were already up are left alone.
Also: hoptrace processes of a test, and loopback ports where nothing, or nothing useful, answers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from hoptrace import services
from hoptrace.pipeline import recorder
from hoptrace.pipeline.settings import Settings
from hoptrace.testing import CapturedTelemetry, capture_telemetry
from hoptrace.view.receiver import OtlpReceiver
from tests.memory_store import TelemetryStore
from tests.processes import Process, running

if TYPE_CHECKING:
    from tests.test_jaeger import FakeJaeger


@pytest.fixture(autouse=True)
def no_recorder_left() -> Iterator[None]:
    """Shut down a flight recorder a test's in-process drop-in code started: the next test starts from none."""
    yield
    left = recorder.current()
    if left is not None:
        left.shutdown()


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings pointing at healthy local services."""
    settings = Settings()
    were_up = {item.name for item in services.status(settings) if item.healthy}
    services.run("up", settings)
    unhealthy = [item for item in services.status(settings) if not item.healthy]
    assert not unhealthy, f"services did not come up: {unhealthy}"
    yield settings
    started = tuple(name for name in services.SERVICE_NAMES if name not in were_up)
    if started:
        services.run("down", settings, started)


@pytest.fixture(scope="session")
def kafka_admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    """An admin client of the local broker."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="hoptrace-tests")
    yield admin
    admin.close()


@pytest.fixture
def unique() -> str:
    """A short name unique to this test, for topics, groups, queues and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def new_topic(kafka_admin: KafkaAdminClient, unique: str) -> Iterator[Callable[..., str]]:
    """Create Kafka topics for this test (``new_topic("name", partitions=3)``); delete them after."""
    created: list[str] = []

    def create(name: str = "topic", partitions: int = 1) -> str:
        topic = f"test.{unique}.{name}"
        kafka_admin.create_topics([NewTopic(topic, partitions, 1)], wait_for_metadata=True)
        created.append(topic)
        return topic

    yield create
    if created:
        kafka_admin.delete_topics(created)


@pytest.fixture
def redis_prefix(settings: Settings, unique: str) -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted after the test."""
    prefix = f"test:{unique}:"
    yield prefix
    delete_keys(settings.redis_url, f"{prefix}*")


def delete_keys(redis_url: str, pattern: str) -> None:
    """Delete the keys matching PATTERN in the Redis at REDIS_URL."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def telemetry_store() -> Iterator[tuple[OtlpReceiver, TelemetryStore]]:
    """A real OTLP receiver (gRPC and HTTP, ephemeral ports) and the store it fills."""
    store = TelemetryStore()
    with OtlpReceiver(store) as receiver:
        yield receiver, store


@pytest.fixture
def namespace(unique: str) -> str:
    """A prefix for this test's topics, groups and queues (HOPTRACE_NAMESPACE)."""
    return f"t{unique}."


@pytest.fixture
def namespace_cleanup(settings: Settings, namespace: str, kafka_admin: KafkaAdminClient) -> Iterator[None]:
    """Delete, after the test, the Redis keys (queues, bindings, outbox) and Kafka topics named with its namespace."""
    yield
    delete_namespace(settings, kafka_admin, namespace)


def delete_namespace(settings: Settings, kafka_admin: KafkaAdminClient, namespace: str) -> None:
    """Delete the Redis keys (queues, bindings, outbox) and Kafka topics named with NAMESPACE."""
    delete_keys(settings.redis_url, f"*{namespace}*")
    topics = [topic for topic in kafka_admin.list_topics() if topic.startswith(namespace)]
    if topics:
        kafka_admin.delete_topics(topics, raise_errors=False)


KAFKA_CLIENTS = ["kafka-python", "confluent-kafka"]
"""The client libraries hoptrace's own Kafka stages and publisher run on.

A test runs on each with ``@pytest.mark.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)``.
"""


@pytest.fixture
def kafka_client(request: pytest.FixtureRequest) -> str:
    """The Kafka client of this test's hoptrace processes (HOPTRACE_KAFKA_CLIENT): kafka-python unless the test is parametrized."""
    return str(getattr(request, "param", "kafka-python"))


@pytest.fixture
def hoptrace_env(settings: Settings, namespace: str, telemetry_store: tuple[OtlpReceiver, TelemetryStore], kafka_client: str) -> dict[str, str]:
    """Environment for hoptrace processes of this test: its namespace and Kafka client, exporting fast to the test receiver."""
    receiver, _ = telemetry_store
    return {
        "HOPTRACE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HOPTRACE_KAFKA_CLIENT": kafka_client,
        "HOPTRACE_REDIS_URL": settings.redis_url,
        "HOPTRACE_NAMESPACE": namespace,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def hoptrace_worker(hoptrace_env: dict[str, str], tmp_path: Path) -> Callable[..., AbstractContextManager[Process]]:
    """Run ``hoptrace worker`` in a real process: ``with hoptrace_worker("hoptrace.examples.orders:pipeline", "--stage", "charge"):``."""
    counter = iter(range(1000))

    def start(spec: str, *args: str, env: dict[str, str] | None = None, ready: str = "ready.") -> AbstractContextManager[Process]:
        log = tmp_path / f"worker-{next(counter)}.log"
        command = [sys.executable, "-m", "hoptrace", "worker", spec, *args]
        return running(command, log, {**hoptrace_env, **(env or {})}, ready=ready)

    return start


def run_hoptrace(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one ``hoptrace`` command to the end; fail the test with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "hoptrace", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"hoptrace {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def free_ports(count: int) -> list[int]:
    """COUNT different loopback ports nothing listens on, all bound at once while chosen (one at a time, the same port can come back)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    return free_ports(1)[0]


class SilentEndpoint:
    """A loopback TCP endpoint that accepts connections and never answers (a hung collector, a port squatter)."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self._held: list[socket.socket] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-endpoint", daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._server.getsockname()[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> int:
        """How many connections it took (and holds)."""
        return len(self._held)

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                self._held.append(self._server.accept()[0])
            except TimeoutError:
                continue

    def __enter__(self) -> SilentEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(5)
        self._server.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def silent_endpoint() -> Iterator[SilentEndpoint]:
    """A loopback endpoint that accepts connections and never answers, for the test's length."""
    with SilentEndpoint() as endpoint:
        yield endpoint


INSTALL_TIMEOUT_S = 600
REPOSITORY = Path(__file__).resolve().parent.parent


def run_to_end(argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ARGV in CWD with exactly ENV until it ends; its output captured as text."""
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.fixture(scope="session")
def hoptrace_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of hoptrace built from the checkout, once per session."""
    dist = tmp_path_factory.mktemp("dist")
    built = run_to_end(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPOSITORY)], dist, dict(os.environ), INSTALL_TIMEOUT_S
    )
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("hoptrace-*.whl")
    return wheel


def fresh_venv(root: Path, *requirements: str) -> Path:
    """A new virtual environment in ROOT/venv with REQUIREMENTS (paths or pip specifiers) installed."""
    made = run_to_end([sys.executable, "-m", "venv", str(root / "venv")], root, dict(os.environ))
    assert made.returncode == 0, made.stderr
    installed = run_to_end(
        [str(root / "venv" / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *requirements], root, dict(os.environ), INSTALL_TIMEOUT_S
    )
    assert installed.returncode == 0, installed.stderr
    return root / "venv"


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory, hoptrace_wheel: Path) -> Path:
    """A fresh virtual environment, outside the checkout, with hoptrace installed from a wheel built from it (and nothing else)."""
    return fresh_venv(tmp_path_factory.mktemp("wheel"), str(hoptrace_wheel))


@pytest.fixture
def captured() -> Iterator[CapturedTelemetry]:
    """Tracer and meter providers of this test only (never the global ones), recording into memory."""
    with capture_telemetry(set_global=False) as telemetry:
        yield telemetry


@pytest.fixture
def jaeger() -> Iterator[FakeJaeger]:
    """A local HTTP server standing in for Jaeger's query API (``test_jaeger.FakeJaeger``), serving until the test ends."""
    from tests.test_jaeger import FakeJaeger  # noqa: PLC0415 - the fake lives with the tests of the Jaeger client

    fake = FakeJaeger()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
