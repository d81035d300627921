"""How hoptrace's confluent-kafka clients are configured from the settings: kafka-python's security and reconnecting, in librdkafka's names.

The OAUTHBEARER token is said to expire after ``OAUTH_TOKEN_LIFETIME_S``: librdkafka asks the user's function for a new one before that.
"""

from __future__ import annotations

import time
from typing import Any

from hoptrace.pipeline.outages import RECONNECT_BACKOFF_MAX_MS
from hoptrace.pipeline.settings import Settings, token_function

OAUTH_TOKEN_LIFETIME_S = 60.0
"""How long librdkafka takes a token from the user's function to be good for (the function is not told an expiry)."""


def confluent_client_options(settings: Settings) -> dict[str, Any]:
    """What every confluent-kafka client of hoptrace is given beyond its servers, from SETTINGS (``HOPTRACE_KAFKA_CLIENT=confluent-kafka``)."""
    options: dict[str, Any] = {
        "security.protocol": settings.kafka_security_protocol,
        "socket.connection.setup.timeout.ms": max(1000, int(settings.kafka_connect_timeout_s * 1000)),  # librdkafka's least
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
