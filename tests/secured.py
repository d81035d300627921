"""The local brokers' secured twins (``deploy/local``), as a client reaches them: settings for Kafka over SASL_SSL and Redis over TLS."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from hoptrace.clients.kafka_python.options import kafka_client_options
from hoptrace.pipeline.settings import Settings

SASL_USER, SASL_PASSWORD = "hoptrace", "hoptrace-local-secret"
"""The local test brokers' user (Kafka's SASL listeners, the TLS Redis's ACL)."""


def secured_env(settings: Settings, ca_file: Path | None = None, client: tuple[Path, Path] | None = None) -> dict[str, str]:
    """``HOPTRACE_*`` for the brokers of SETTINGS reached as managed ones are: Kafka over SASL_SSL with SCRAM-SHA-512, Redis over TLS as an ACL user
    with the local CA's client certificate.

    CA_FILE is what the clients trust (default: the local CA that signed both brokers' certificates); CLIENT the
    (certificate, key) files Redis clients give (default: the local CA's client certificate).
    """
    ca = str(ca_file or settings.state_dir / "tls" / "ca.pem")
    host, port = settings.kafka_servers[0].rsplit(":", 1)
    redis = urlsplit(settings.redis_url)
    certificate, key = client or (settings.state_dir / "tls" / "client.pem", settings.state_dir / "tls" / "client.key")
    query = urlencode({"ssl_cert_reqs": "required", "ssl_ca_certs": ca, "ssl_certfile": str(certificate), "ssl_keyfile": str(key)})
    return {
        "HOPTRACE_KAFKA_BOOTSTRAP": f"{host}:{int(port) + 3}",
        "HOPTRACE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "HOPTRACE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "HOPTRACE_KAFKA_SASL_USERNAME": SASL_USER,
        "HOPTRACE_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "HOPTRACE_KAFKA_SSL_CAFILE": ca,
        "HOPTRACE_REDIS_URL": f"rediss://{SASL_USER}:{SASL_PASSWORD}@{redis.hostname}:{(redis.port or 6379) + 1}/0?{query}",
    }


def mutual_tls_env(settings: Settings) -> dict[str, str]:
    """``HOPTRACE_*`` for the local Kafka's listener that wants a client certificate (SSL, mutual TLS), with the local CA's client certificate."""
    host, port = settings.kafka_servers[0].rsplit(":", 1)
    tls = settings.state_dir / "tls"
    return {
        "HOPTRACE_KAFKA_BOOTSTRAP": f"{host}:{int(port) + 4}",
        "HOPTRACE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "HOPTRACE_KAFKA_SSL_CAFILE": str(tls / "ca.pem"),
        "HOPTRACE_KAFKA_SSL_CERTFILE": str(tls / "client.pem"),
        "HOPTRACE_KAFKA_SSL_KEYFILE": str(tls / "client.key"),
    }


def unsigned_token(lifetime_s: float = 3600) -> str:
    """An OAUTHBEARER access token for the local SASL_SSL listener, which validates tokens signed with ``"alg":"none"`` (Kafka's unsecured validator).

    Named by ``HOPTRACE_KAFKA_SASL_OAUTH_TOKEN=tests.secured:unsigned_token``; a negative LIFETIME_S makes an expired one.
    """
    now = time.time()

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'sub': SASL_USER, 'iat': now - 60, 'exp': now + lifetime_s})}."


def expired_token() -> str:
    """An OAUTHBEARER token that expired an hour ago."""
    return unsigned_token(-3600)


def secured_kafka_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The SASL_SSL listener's bootstrap address and the kafka-python options an app of its own would pass to reach it."""
    env = secured_env(settings)
    secured = Settings(**{name.removeprefix("HOPTRACE_").lower(): value for name, value in env.items()})
    options = {name: value for name, value in kafka_client_options(secured).items() if name != "bootstrap_timeout_ms"}
    return env["HOPTRACE_KAFKA_BOOTSTRAP"], options
