"""The fault suite's own Redis and Kafka: started, stopped and killed through deploy/local's scripts, never the shared ones.

They listen on their own ports (Redis 6390, Kafka 9192 with its controller on 9193; override
with ``HOPTRACE_FAULTS_REDIS_PORT``, ``HOPTRACE_FAULTS_KAFKA_PORT``) and keep their state under
``$HOPTRACE_STATE_DIR/faults``. A kill goes to the pid in the suite's own pid file only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hoptrace.pipeline.settings import Settings
from hoptrace.services import SCRIPTS
from tests.secured import secured_env

Service = Literal["redis", "kafka"]
SCRIPT_TIMEOUT_S = 180.0
REAP_TIMEOUT_S = 30.0


class BrokerError(RuntimeError):
    """A suite broker could not be started, stopped or killed; the message says why and what to do."""


@dataclass(frozen=True)
class Brokers:
    """Redis and Kafka of the fault suite."""

    state_dir: Path
    redis_port: int = int(os.environ.get("HOPTRACE_FAULTS_REDIS_PORT", "6390"))
    kafka_port: int = int(os.environ.get("HOPTRACE_FAULTS_KAFKA_PORT", "9192"))

    @property
    def redis_url(self) -> str:
        """Where the suite's Redis answers."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def kafka_bootstrap(self) -> str:
        """Where the suite's Kafka answers."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def env(self) -> dict[str, str]:
        """The variables that point hoptrace, and deploy/local's scripts, at these brokers and this state folder."""
        return {
            "HOPTRACE_STATE_DIR": str(self.state_dir),
            "HOPTRACE_REDIS_URL": self.redis_url,
            "HOPTRACE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "HOPTRACE_KAFKA_CONTROLLER_PORT": str(self.kafka_port + 1),
        }

    @property
    def secured_env(self) -> dict[str, str]:
        """The variables that point hoptrace at these brokers' secured twins: Kafka over SASL_SSL (SCRAM), Redis over TLS as an ACL user."""
        settings = Settings(kafka_bootstrap=self.kafka_bootstrap, redis_url=self.redis_url, state_dir=self.state_dir)
        return {**self.env, **secured_env(settings)}

    def _script(self, service: Service, action: str) -> str:
        env = {**os.environ, **self.env}
        result = subprocess.run(
            ["bash", str(SCRIPTS / f"{service}.sh"), action], env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise BrokerError(f"{service}.sh {action} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def start(self, service: Service) -> None:
        """Start SERVICE and wait until it answers; refuse one the suite did not start itself."""
        if service == "kafka":
            self._share_kafka_jars()
        self._script(service, "start")
        if self.pid(service) is None:
            raise BrokerError(
                f"a {service} the fault suite did not start answers on its port; stop it, "
                "or choose other ports with HOPTRACE_FAULTS_REDIS_PORT / HOPTRACE_FAULTS_KAFKA_PORT"
            )

    def stop(self, service: Service) -> None:
        """Stop SERVICE the orderly way (SIGTERM, then the script's wait)."""
        self._script(service, "stop")

    def kill(self, service: Service) -> None:
        """SIGKILL SERVICE's process and wait until it is gone."""
        pid = self.pid(service)
        if pid is None:
            raise BrokerError(f"the suite's {service} is not running; nothing to kill")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + REAP_TIMEOUT_S
        while _exists(pid) and time.monotonic() < deadline:  # until reaped: the scripts take a zombie for a running service
            time.sleep(0.05)
        if _exists(pid):
            self._pidfile(service).unlink()

    def pid(self, service: Service) -> int | None:
        """The pid of SERVICE when the suite started it and it runs; else None."""
        try:
            pid = int(self._pidfile(service).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _pidfile(self, service: Service) -> Path:
        return self.state_dir / service / f"{service}.pid"

    def _share_kafka_jars(self) -> None:
        """Link the jars of the project's own Kafka, when there are some, instead of fetching 45 MB again."""
        main = Settings().state_dir / "kafka"
        for libs in main.glob("libs-*"):
            mine = self.state_dir / "kafka" / libs.name
            if not mine.exists():
                mine.parent.mkdir(parents=True, exist_ok=True)
                mine.symlink_to(libs.resolve(), target_is_directory=True)


def _exists(pid: int) -> bool:
    """Whether PID is a process, a zombie included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    """Whether PID is a running process (not a zombie)."""
    try:
        return _exists(pid) and not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1].startswith("Z")
    except FileNotFoundError:
        return False
