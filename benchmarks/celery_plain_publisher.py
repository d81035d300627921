"""Publishes the plain Celery app's tasks: ``work.delay(payload)`` COUNT times, as a user's code would.

    python -m benchmarks.celery_plain_publisher --count N --result PATH

Run plain or under ``opentelemetry-instrument`` like the worker (``benchmarks.celery_plain``). The
first publish waits for the start signal (``BENCH_GO``, ``benchmarks.completion``). It writes
``{"first": epoch_s, "last": epoch_s, "cpu_s": s, "instrumentation": ...}`` to PATH: the first and
last publish, the process's CPU time between them, and what Celery ran with in this process
(``benchmarks.instrumented``), which the section checks against the variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks import instrumented
from benchmarks.celery_plain_app import work
from benchmarks.completion import wait_for_go
from benchmarks.pipelines import payload


def publish(count: int) -> dict[str, Any]:
    """Publish COUNT tasks once told to go; the first and last publish times and the CPU time between."""
    wait_for_go()
    first, cpu = time.time(), time.process_time()
    for number in range(count):
        work.delay(payload(number))
    last, cpu = time.time(), time.process_time() - cpu
    return {"first": first, "last": last, "cpu_s": cpu, "instrumentation": instrumented.celery()}


def main() -> None:
    """Parse the command line, publish, write the result."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.celery_plain_publisher", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    args.result.write_text(json.dumps(publish(args.count)))


if __name__ == "__main__":
    main()
