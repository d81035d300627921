"""Tell whether HOST:PORT is an Apache Kafka broker, using the standard library only.

Sends one ApiVersions (v0) request and checks that the answer echoes its correlation id.
kafka.sh runs it before any virtual environment exists, so it must not import kafka-python.
Exit status: 0 Kafka answered, 1 something else answered, 2 nothing listens there.
"""

from __future__ import annotations

import socket
import struct
import sys

API_VERSIONS = 18
CORRELATION_ID = 0x6F70


def probe(host: str, port: int, timeout: float = 3.0) -> int:
    """Return 0 when a Kafka broker answers at host:port, 1 when something else does, 2 when nothing does."""
    client_id = b"hoptrace-probe"
    body = struct.pack(">hhih", API_VERSIONS, 0, CORRELATION_ID, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = sock.recv(8)
    except ConnectionRefusedError:
        return 2
    except OSError:
        return 1
    if len(head) < 8:
        return 1
    _, correlation_id = struct.unpack(">ii", head)
    return 0 if correlation_id == CORRELATION_ID else 1


if __name__ == "__main__":
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    host, _, port = address.rpartition(":")
    sys.exit(probe(host or "127.0.0.1", int(port)))
