"""Where hoptrace finds its brokers and keeps its local state, read from the environment (and secrets from files).

Telemetry settings are not here: they are the standard ``OTEL_*`` variables, read by the
OpenTelemetry SDK itself.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SecretsSettingsSource, SettingsConfigDict

from hoptrace.pipeline.pathways import DEFAULT_DEPTH
from hoptrace.pipeline.time_limits import TimeLimits

SECRETS_DIR_VARIABLE = "HOPTRACE_SECRETS_DIR"
"""A folder of files named after settings (``HOPTRACE_KAFKA_SASL_PASSWORD``...), each holding its value: a mounted Kubernetes Secret."""


class SecretsFolderMissing(ValueError):
    """``HOPTRACE_SECRETS_DIR`` names no folder; the message says which."""


def token_function(path: str) -> Callable[[], str]:
    """The function PATH (``module:function``, ``HOPTRACE_KAFKA_SASL_OAUTH_TOKEN``) names; ValueError saying what is wrong when there is none."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"{path!r} is not module:function")
    try:
        found = pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"{path!r} names no function: {error}") from error
    if not callable(found):
        raise ValueError(f"{path!r} is not callable")
    return found  # type: ignore[no-any-return]


KAFKA_CLIENT_LIBRARIES = {"kafka-python": ("kafka", "hoptrace"), "confluent-kafka": ("confluent_kafka", "hoptrace[confluent]")}
"""Each ``HOPTRACE_KAFKA_CLIENT`` value's import name and what installs it (its code: ``hoptrace.kafka_clients.FOLDERS``)."""


class Settings(BaseSettings):
    """Addresses and folders, from ``HOPTRACE_*`` environment variables, then from files in ``$HOPTRACE_SECRETS_DIR``.

    A variable set in the environment wins over a file of the same name.
    """

    model_config = SettingsConfigDict(env_prefix="HOPTRACE_", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the secrets folder named by ``HOPTRACE_SECRETS_DIR`` when it is set (read at each ``Settings()``)."""
        folder = os.environ.get(SECRETS_DIR_VARIABLE, "").strip()
        if not folder:
            return init_settings, env_settings
        if not Path(folder).is_dir():
            raise SecretsFolderMissing(f"{SECRETS_DIR_VARIABLE}={folder} is not a folder; mount the secrets there, or unset it")
        return init_settings, env_settings, SecretsSettingsSource(settings_cls, secrets_dir=folder)

    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port.")
    kafka_client: Literal["kafka-python", "confluent-kafka"] = Field(
        default="kafka-python",
        description="The client library hoptrace's own Kafka stage workers and publisher run on; confluent-kafka needs hoptrace[confluent].",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client of hoptrace connects: plain, TLS, SASL, or SASL over TLS."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        default=None, description="The SASL mechanism, with a SASL security protocol."
    )
    kafka_sasl_username: str | None = Field(default=None, description="The SASL user, with a SASL security protocol.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="The SASL password, with a SASL security protocol (never printed).")
    kafka_sasl_oauth_token: str | None = Field(
        default=None,
        description="With OAUTHBEARER: module:function of a function returning the current access token, called at each authentication.",
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CAs that signed the brokers' certificates (TLS); default: the system's."
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM file of this client's certificate, for a broker that wants one (mutual TLS); with kafka_ssl_keyfile."
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM file of the private key of kafka_ssl_certfile.")
    kafka_connect_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a client of hoptrace tries to reach and authenticate with Kafka before it gives up."
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL used as the Celery broker.")
    namespace: str = Field(default="", description="Prefix for every topic, consumer group and queue: runs sharing one broker stay apart.")
    state_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".hoptrace",
        description="Folder for service data, logs, pid files, the trace store and benchmark reports; never inside the installed package.",
    )
    receiver_token: SecretStr | None = Field(
        default=None, description="Bearer token the embedded OTLP receiver of hoptrace watch requires of every export (never printed)."
    )
    receiver_tls_certfile: Path | None = Field(
        default=None, description="PEM certificate (chain) the embedded OTLP receiver of hoptrace watch serves TLS with; with receiver_tls_keyfile."
    )
    receiver_tls_keyfile: Path | None = Field(default=None, description="PEM file of the private key of receiver_tls_certfile.")
    jaeger_url: str | None = Field(
        default=None,
        description="Jaeger query service hoptrace monitor reads finished jobs from, to export hoptrace.stage.critical.time (off when unset).",
    )
    store_max_bytes: int = Field(
        default=256 * 2**20, ge=2**20, description="Bound of the embedded trace store's file in bytes (the oldest traces and points go first)."
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

    gc_freeze: bool = Field(
        default=True,
        description="Once a process is set up, freeze the objects alive then out of the garbage collector's full collections (pipeline.heap).",
    )
    span_spool: bool = Field(
        default=True,
        description="Keep each ended span on disk (state_dir/spool) until exported, so a worker killed -9 loses none; the next one exports them.",
    )
    soft_time_limit_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a handler may run per attempt before SoftTimeLimitExceeded is raised in it (stages that set no limits of their own).",
    )
    time_limit_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a handler may run per attempt before the attempt fails with TimeLimitExceeded (stages that set no limits of their own).",
    )

    pathway_depth: int = Field(
        default=DEFAULT_DEPTH,
        ge=1,
        description="Stages a pathway keeps (hoptrace.pathway.latency): its last ones, after a leading '…' when it went through more.",
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        """A SASL protocol needs a mechanism, and a user and password (OAUTHBEARER: a token function that imports); the others take none."""
        sasl = self.kafka_security_protocol.startswith("SASL_")
        given = {
            "HOPTRACE_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "HOPTRACE_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "HOPTRACE_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "HOPTRACE_KAFKA_SASL_OAUTH_TOKEN": self.kafka_sasl_oauth_token,
        }
        if not sasl and any(value is not None for value in given.values()):
            raise ValueError(f"HOPTRACE_KAFKA_SASL_* settings are given but HOPTRACE_KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}")
        if not sasl:
            return self
        oauth = self.kafka_sasl_mechanism == "OAUTHBEARER"
        credentials = ["HOPTRACE_KAFKA_SASL_OAUTH_TOKEN"] if oauth else ["HOPTRACE_KAFKA_SASL_USERNAME", "HOPTRACE_KAFKA_SASL_PASSWORD"]
        needed = ["HOPTRACE_KAFKA_SASL_MECHANISM", *credentials]
        missing = [name for name in needed if given[name] is None]
        if missing:
            raise ValueError(f"HOPTRACE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs {', '.join(missing)} set too")
        if oauth:
            token_function(str(self.kafka_sasl_oauth_token))
        return self

    @model_validator(mode="after")
    def _kafka_client_installed(self) -> Settings:
        """The chosen Kafka client library must be installed (confluent-kafka is an optional extra)."""
        library, extra = KAFKA_CLIENT_LIBRARIES[self.kafka_client]
        if importlib.util.find_spec(library) is None:
            raise ValueError(f"HOPTRACE_KAFKA_CLIENT={self.kafka_client} but {self.kafka_client} is not installed: pip install '{extra}'")
        return self

    @model_validator(mode="after")
    def _receiver_tls_complete(self) -> Settings:
        """The receiver's TLS takes a certificate and its key, or neither."""
        if (self.receiver_tls_certfile is None) != (self.receiver_tls_keyfile is None):
            raise ValueError("the receiver's TLS needs both HOPTRACE_RECEIVER_TLS_CERTFILE and HOPTRACE_RECEIVER_TLS_KEYFILE, or neither")
        return self

    @model_validator(mode="after")
    def _time_limits_ordered(self) -> Settings:
        """The soft time limit is below the hard one."""
        self.time_limits  # noqa: B018 - raises ValueError (reported by pydantic) when they are out of order
        return self

    @property
    def time_limits(self) -> TimeLimits:
        """The handler time limits of stages that set none of their own."""
        return TimeLimits(self.soft_time_limit_s, self.time_limit_s)

    @property
    def spool_root(self) -> Path | None:
        """Where this run's processes spool their ended spans (``span_spool``); None when off."""
        return self.state_dir / "spool" / (self.namespace or "-") if self.span_spool else None

    @property
    def receiver_tls(self) -> tuple[Path, Path] | None:
        """(certificate file, key file) the embedded OTLP receiver serves TLS with; None: plain."""
        if self.receiver_tls_certfile is None or self.receiver_tls_keyfile is None:
            return None
        return self.receiver_tls_certfile, self.receiver_tls_keyfile

    @property
    def kafka_servers(self) -> list[str]:
        """The bootstrap servers as the list kafka-python expects."""
        return [server.strip() for server in self.kafka_bootstrap.split(",") if server.strip()]
