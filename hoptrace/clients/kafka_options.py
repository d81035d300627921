"""How every Kafka client of hoptrace (kafka-python or confluent-kafka) is configured from the settings: security and reconnecting.

With OAUTHBEARER the access token comes from a function of the user's, named by an import path
(``HOPTRACE_KAFKA_SASL_OAUTH_TOKEN``; the settings check that it imports), asked at each authentication.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka.net.sasl.oauth import AbstractTokenProvider

from hoptrace.pipeline.settings import Settings, token_function

RECONNECT_BACKOFF_MAX_MS = 1000
"""Longest pause of hoptrace's Kafka clients between attempts to reach a broker that went away (kafka-python's default: 30 s)."""
OAUTH_TOKEN_LIFETIME_S = 60.0
"""How long librdkafka takes a token from the user's function to be good for (the function is not told an expiry)."""


class FunctionTokenProvider(AbstractTokenProvider):
    """kafka-python's token provider around a function returning the current access token (it is called at each authentication)."""

    def __init__(self, fetch: Callable[[], str]) -> None:
        """Ask FETCH for the token each time one is needed (caching and refreshing it are FETCH's business)."""
        super().__init__()
        self._fetch = fetch

    def token(self) -> str:
        """The current access token."""
        return self._fetch()


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """What every kafka-python client of hoptrace is given beyond its servers, from SETTINGS: security, and how long to try to connect."""
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "bootstrap_timeout_ms": int(settings.kafka_connect_timeout_s * 1000),
        # kafka-python doubles its pause between reconnects up to 30 s: a broker back after a 7 s outage went unnoticed for up to 15 s more.
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        provider = FunctionTokenProvider(token_function(str(settings.kafka_sasl_oauth_token)))
        options.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=provider)
    elif settings.kafka_sasl_password is not None:
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    if settings.kafka_ssl_cafile is not None:
        options["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    if settings.kafka_ssl_certfile is not None:
        options["ssl_certfile"] = str(settings.kafka_ssl_certfile)
    if settings.kafka_ssl_keyfile is not None:
        options["ssl_keyfile"] = str(settings.kafka_ssl_keyfile)
    return options


def confluent_client_options(settings: Settings) -> dict[str, Any]:
    """``kafka_client_options`` as librdkafka settings, for hoptrace's confluent-kafka clients (``HOPTRACE_KAFKA_CLIENT=confluent-kafka``).

    The OAUTHBEARER token is said to expire after ``OAUTH_TOKEN_LIFETIME_S``: librdkafka asks for a new one before that.
    """
    options: dict[str, Any] = {
        "security.protocol": settings.kafka_security_protocol,
        "socket.connection.setup.timeout.ms": int(settings.kafka_connect_timeout_s * 1000),
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        fetch = token_function(str(settings.kafka_sasl_oauth_token))
        options.update({"sasl.mechanisms": "OAUTHBEARER", "oauth_cb": lambda _: (fetch(), time.time() + OAUTH_TOKEN_LIFETIME_S)})
    elif settings.kafka_sasl_password is not None:
        options.update(
            {
                "sasl.mechanisms": settings.kafka_sasl_mechanism,
                "sasl.username": settings.kafka_sasl_username,
                "sasl.password": settings.kafka_sasl_password.get_secret_value(),
            }
        )
    for setting, path in (
        ("ssl.ca.location", settings.kafka_ssl_cafile),
        ("ssl.certificate.location", settings.kafka_ssl_certfile),
        ("ssl.key.location", settings.kafka_ssl_keyfile),
    ):
        if path is not None:
            options[setting] = str(path)
    return options
