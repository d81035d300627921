"""Memory: peak RSS (VmHWM) of a Kafka stage worker over N records, collector down against collector up.

Each run is a Kafka hop of the ``hoptrace-100`` variant (a real ``hoptrace worker`` of a
trivial stage, fed by the hoptrace publisher; see ``benchmarks.kafka_hop``), with both
processes exporting to the collector under test: ``up`` (the discarding receiver),
``refused`` (a closed loopback port) and, in full mode, ``silent`` (accepts TCP, never
answers). The worker's VmHWM is read once it handled the last record, before it is stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from benchmarks.discard import Collector, Collectors
from benchmarks.harness import Run
from benchmarks.kafka_hop import BY_KEY, run_hop
from benchmarks.modes import Mode
from benchmarks.report import Scenario
from benchmarks.schedule import rotated

SECTION = "memory"
LABELS = {"up": "peak RSS, collector up", "refused": "peak RSS, collector refused", "silent": "peak RSS, collector hung"}


def measure(run: Run, collectors: Collectors, mode: Mode, confirm_every: int, progress: Callable[[str], None]) -> list[Scenario]:
    """A worker per collector per round; scenarios of peak RSS (MB) and of each down collector minus up."""
    chosen: tuple[Collector, ...] = tuple(mode.memory_collectors)  # type: ignore[arg-type]
    peaks: dict[str, list[float]] = {collector: [] for collector in chosen}
    rates: dict[str, list[float]] = {collector: [] for collector in chosen}
    for number in range(mode.memory_pairs):
        for collector in rotated(chosen, number):
            variant = replace(BY_KEY["hoptrace-100"], key=f"memory-{collector}", collector=collector)
            result = run_hop(run, collectors, variant, mode.memory_messages, f"m{number}-{collector}", confirm_every)
            peaks[collector].append(result.consumer_peak_rss_kib / 1024)
            rates[collector].append(result.rate)
            peak = peaks[collector][-1]
            progress(f"memory round {number + 1}/{mode.memory_pairs} collector {collector}: {peak:.1f} MB peak over {result.messages:,} records")
    details = {"messages": mode.memory_messages, "worker": "hoptrace worker benchmarks.pipelines:kafka_hop --no-monitor"}
    scenarios = [
        Scenario(
            SECTION,
            collector,
            LABELS[collector],
            "MB",
            peaks[collector],
            None if collector == "up" else "up",
            f"VmHWM of the `hoptrace worker` of a hoptrace-100 Kafka hop after {mode.memory_messages:,} records, {LABELS[collector]}",
            details={**details, "msg_per_s": rates[collector]},
        )
        for collector in chosen
    ]
    for collector in chosen:
        if collector != "up":
            difference = [down - up for down, up in zip(peaks[collector], peaks["up"], strict=True)]
            key = "down-minus-up" if collector == "refused" else f"{collector}-minus-up"
            scenarios.append(Scenario(SECTION, key, f"{LABELS[collector].split(', ')[1]} minus up", "MB", difference, details=details))
    return scenarios
