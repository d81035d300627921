"""What hoptrace costs per message: CPU, export, throughput, shutdown time and memory, against real brokers.

Run ``python -m benchmarks --quick`` (about 6 minutes on 2 cores) or ``python -m benchmarks`` (full mode)
from the repository root. Every scenario is measured in the same run as its baseline, each
variant between two baseline runs, on fresh topics and queues; the report (a table, issue 20's
targets, and ``$HOPTRACE_STATE_DIR/bench/<timestamp>-<run>.json``) gives medians, ratios to the
baseline and the targets.

Modules: ``harness`` (a run: names, brokers, clean-up), ``processes`` (child processes, /proc),
``schedule`` (bracketed rounds, interleaved groups), ``discard`` (an OTLP endpoint that drops
everything, and collectors that are down), ``pipelines`` and ``completion`` (the trivial stages
and how a run knows it is done), ``crc`` (kafka-python with its crc32c extension or its
pure-Python CRC), ``spanless`` (a tracer without the SDK's span work), ``kafka_clients`` /
``celery_clients`` / ``stock`` (the measured client processes), ``zerocode`` and
``instrumented`` (unchanged apps under ``opentelemetry-instrument``: the variants, and what
each process really ran with), ``relay_app`` / ``relay_feeder`` and ``celery_plain_app`` /
``celery_plain_publisher`` (those apps), ``kafka_hop``, ``celery_hop``, ``relay``,
``celery_plain``, ``cpu``, ``encoding`` (export), ``shutdown``, ``memory`` (the sections),
``modes``, ``report`` and ``machine`` (results, targets, tables and JSON).
"""

from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
"""The checkout the benchmarks run from (they are not installed with hoptrace)."""
