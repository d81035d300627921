"""Fills the relay's input topic: COUNT payloads of about 1 KB from a plain ``KafkaProducer`` (not measured).

    python -m benchmarks.relay_feeder --bootstrap HOST:PORT --topic IN --count N --result PATH

It runs under the same variant's instrumentation as the relay after it (``benchmarks.zerocode``),
so the records carry the trace headers that instrumentation writes (none for ``none``). It writes
``{"count": n, "instrumentation": ...}`` to PATH: what kafka-python ran with in this process
(``benchmarks.instrumented``), which the section checks against the variant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from benchmarks import instrumented
from benchmarks.pipelines import payload


def feed(bootstrap: str, topic: str, count: int) -> dict[str, Any]:
    """Send COUNT payloads to TOPIC and wait until the broker has them all."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for number in range(count):
            producer.send(topic, json.dumps(payload(number)).encode())
        producer.flush()
    finally:
        producer.close()
    return {"count": count, "instrumentation": instrumented.kafka()}


def main() -> None:
    """Parse the command line, feed the topic, write the result."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay_feeder", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    args.result.write_text(json.dumps(feed(args.bootstrap, args.topic, args.count)))


if __name__ == "__main__":
    main()
