"""How much each section measures: the quick mode (whole run in about 6 minutes on 2 cores) and the full mode."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Mode:
    """Sizes and repetitions of one benchmark run."""

    name: str
    kafka_messages: int
    """Records per Kafka hop run (1 KB each)."""
    kafka_rounds: int
    """Rounds of the Kafka section; each runs every variant once per CRC configuration, each between two baseline runs (see ``schedule``)."""
    celery_tasks: int
    """Tasks per Celery hop run."""
    celery_rounds: int
    cpu_iterations: int
    """Calls per timed loop of the in-process CPU measurements."""
    cpu_repeats: int
    """Timed loops per case (the median is reported)."""
    encode_rounds: int
    """Alternated rounds of the SDK's and hoptrace's span encoders (``benchmarks.encoding``)."""
    export_rounds: int
    """Alternated rounds of the SDK's and hoptrace's gRPC span exporters."""
    shutdown_runs: int
    shutdown_messages: int
    """Messages the worker processes before it is asked to stop."""
    memory_messages: int
    """Records a Kafka stage worker processes while its peak RSS is watched."""
    memory_pairs: int
    """Rounds of the memory section (each runs a worker per collector, in a rotated order)."""
    relay_records: int
    """Records per zero-code relay run (1 KB each)."""
    relay_rounds: int
    celery_app_tasks: int
    """Tasks per zero-code Celery app run."""
    celery_app_rounds: int
    recorder_hops: int = 80_000
    """In-process hops that fill the flight recorder's buffer for its memory row (two spans each: it is full after about 63,000)."""
    recorder_jobs: int = 10
    """Jobs kept by a failure at notify for the keep latency rows."""
    memory_collectors: tuple[str, ...] = ("up", "refused")
    """Collectors the memory section runs a worker against: ``up`` first, then the ones that are down."""
    kafka_iterate_reference: bool = True
    """Also measure the untraced iterating consumer (``none-iterate``), the loop the stock variant needs."""
    warm_up_celery: bool = True
    """Run an unmeasured Celery run first in the Celery and Celery app sections (the Kafka and relay sections always warm up: the broker's JIT)."""

    def with_rounds(self, rounds: int | None) -> Mode:
        """This mode with ROUNDS rounds in the Kafka, Celery, relay and Celery app sections (None: unchanged)."""
        if rounds is None:
            return self
        return replace(self, kafka_rounds=rounds, celery_rounds=rounds, relay_rounds=rounds, celery_app_rounds=rounds)


QUICK = Mode(
    name="quick",
    kafka_messages=3000,
    kafka_rounds=2,
    celery_tasks=600,
    celery_rounds=2,
    cpu_iterations=2000,
    cpu_repeats=5,
    encode_rounds=7,
    export_rounds=3,
    shutdown_runs=2,
    shutdown_messages=20,
    memory_messages=6000,
    memory_pairs=1,
    relay_records=3000,
    relay_rounds=2,
    celery_app_tasks=500,
    celery_app_rounds=2,
    kafka_iterate_reference=False,
    warm_up_celery=False,
)

FULL = Mode(
    name="full",
    kafka_messages=20_000,
    kafka_rounds=5,
    celery_tasks=3000,
    celery_rounds=5,
    cpu_iterations=20_000,
    cpu_repeats=9,
    encode_rounds=15,
    export_rounds=7,
    shutdown_runs=5,
    shutdown_messages=100,
    memory_messages=100_000,
    memory_pairs=2,
    relay_records=20_000,
    relay_rounds=3,
    celery_app_tasks=3000,
    celery_app_rounds=3,
    recorder_hops=120_000,
    recorder_jobs=40,
    memory_collectors=("up", "refused", "silent"),
)
