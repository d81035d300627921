"""Where hoptrace finds its brokers and keeps its local state, read from the environment.

Telemetry settings are not here: they are the standard ``OTEL_*`` variables, read by the
OpenTelemetry SDK itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Addresses and folders, from ``HOPTRACE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="HOPTRACE_", frozen=True)

    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port.")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL used as the Celery broker.")
    namespace: str = Field(default="", description="Prefix for every topic, consumer group and queue: runs sharing one broker stay apart.")
    state_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".hoptrace",
        description="Folder for service data, logs, pid files, the trace store and benchmark reports; never inside the installed package.",
    )

    stuck_after_s: float = Field(
        default=300.0, gt=0, description="Seconds after its start a job that reached no final outcome counts as stuck (hoptrace.jobs.stuck)."
    )

    recorder: bool = Field(
        default=True, description="The flight recorder: keep the spans of unsampled jobs in memory and export a job whole when it goes wrong."
    )
    recorder_max_bytes: int = Field(default=56 * 2**20, gt=0, description="Bound of the flight recorder's buffer, in bytes (oldest spans go first).")
    slow_after_s: float | None = Field(
        default=None,
        gt=0,
        description="A job reaching a stage later than this after it began is kept whole (stages and pipelines may set their own).",
    )

    @property
    def kafka_servers(self) -> list[str]:
        """The bootstrap servers as the list kafka-python expects."""
        return [server.strip() for server in self.kafka_bootstrap.split(",") if server.strip()]
