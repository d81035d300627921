"""How hoptrace's kafka-python clients are configured from the settings: security (SASL, OAUTHBEARER, TLS) and reconnecting.

With OAUTHBEARER the access token comes from a function of the user's, named by an import path
(``HOPTRACE_KAFKA_SASL_OAUTH_TOKEN``; the settings check that it imports), asked at each authentication.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka.net.sasl.oauth import AbstractTokenProvider

from hoptrace.pipeline.outages import RECONNECT_BACKOFF_MAX_MS
from hoptrace.pipeline.settings import Settings, token_function


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
