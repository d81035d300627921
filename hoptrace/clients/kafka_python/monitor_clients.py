"""The gauges' kafka-python clients: bootstrapped within a timeout, leaving nothing behind when that fails.

``KafkaAdminClient`` and ``KafkaConsumer`` start their network IO thread before they
bootstrap and do not stop it when bootstrapping fails; a monitor retrying a dead broker every
interval would pile those threads up. So the network client each one makes is kept, and
closed when construction fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.net.compat import KafkaNetClient

Client = TypeVar("Client")

CLIENT_ID = "hoptrace-depth"
RECORD_FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch for more data: the gauges fetch records that exist already."""
PARTITION_FETCH_BYTES = 64 * 1024
"""At most this much of a partition per fetch (a larger first batch still comes, KIP-74): the gauges need one record."""


def _connect(client_class: Callable[..., Client], servers: Sequence[str], timeout_s: float, options: Mapping[str, Any], **configs: Any) -> Client:
    """A new CLIENT_CLASS of the cluster at SERVERS with OPTIONS (security), bootstrapped within TIMEOUT_S, each request waiting as long."""
    made: list[KafkaNetClient] = []

    def network_client(**network_configs: Any) -> KafkaNetClient:
        made.append(KafkaNetClient(**network_configs))
        return made[-1]

    timeout_ms = int(timeout_s * 1000)
    try:
        return client_class(
            bootstrap_servers=list(servers),
            client_id=CLIENT_ID,
            kafka_client=network_client,
            **{**options, **configs, "request_timeout_ms": timeout_ms, "bootstrap_timeout_ms": timeout_ms},
        )
    except Exception:
        for client in made:
            client.close()
        raise


def admin_client(servers: Sequence[str], timeout_s: float, options: Mapping[str, Any]) -> KafkaAdminClient:
    """An admin client for offsets and group commits, with OPTIONS (security)."""
    return _connect(KafkaAdminClient, servers, timeout_s, options)


def record_reader(servers: Sequence[str], timeout_s: float, options: Mapping[str, Any]) -> KafkaConsumer:
    """A consumer of no group that never commits, fetching little, for reading single records at offsets it seeks to.

    When an offset is gone (retention) by the time it is fetched, it reads from the earliest record.
    """
    return _connect(
        KafkaConsumer,
        servers,
        timeout_s,
        options,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=RECORD_FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        metrics_enabled=False,
    )
