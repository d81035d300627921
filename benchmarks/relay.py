"""The zero-code Kafka relays: CPU per record of an unchanged relay, plain, under the stock instrumentor and under hoptrace.

One relay per client (``RelayApp``): kafka-python's (section ``relay``, below), confluent-kafka's
(section ``relay-confluent``: ``benchmarks/relay_confluent_app.py``, the same loop with
``poll()``/``produce``) and aiokafka's (``relay-aiokafka``: ``async for``/``send``). These two have
no batching rows; each reports the module of its clients (classes or wrapped methods), which the
section checks against the variant, since the feeder is kafka-python.

The relay is ``benchmarks/relay_app.py``, a user's script that never imports OpenTelemetry or
hoptrace (``for record in consumer:``, ``json.loads``, ``producer.send`` to another topic, a
commit every 500 records, ``producer.flush()`` after N). Each run has its own input and output
topics and consumer group (a fresh namespace): a feeder process (``benchmarks.relay_feeder``,
the same variant's instrumentation, not measured) fills the input topic with N records of about
1 KB, then the relay process starts and relays them. The relay reports its own CPU time (the
whole process, every thread) and wall time from its first record to the end of the flush after
the N-th, and kafka-python's producer batching; its start-up and group join are not measured.

Variants (``benchmarks.zerocode``): ``none``, ``stock-100``, ``stock-1``, ``hoptrace-100``,
``hoptrace-1``; each between two ``none`` runs, in rounds whose order rotates
(``benchmarks.schedule``). Rows: ``relay`` (CPU µs per record; the targets take ``none`` over a
variant's CPU, so higher is better), ``relay-split`` (of that, the main thread's CPU and the time in
garbage collections: what an in-process loop does not see) and ``relay-batching`` (records per
produce request and bytes per batch, to see whether instrumentation makes kafka-python's batching worse).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.processes import Child
from benchmarks.report import Scenario
from benchmarks.schedule import Rounds, bracketed
from benchmarks.zerocode import BY_KEY, NONE, SETTINGS, WrongInstrumentation, ZeroCodeVariant

BATCHING_SECTION = "relay-batching"
KEYS = ("none", "stock-100", "stock-1", "hoptrace-100", "hoptrace-1")
WARM_UP_RECORDS = 3000


@dataclass(frozen=True)
class RelayApp:
    """One client's relay: the script, the section of its rows, and how each instrumentation runs it."""

    section: str
    script: Path
    how: Mapping[str, str]
    """Per instrumentation (``none``, ``stock``, ``hoptrace``), what runs, for the rows' descriptions."""
    clients: Mapping[str, str] | None = None
    """Per instrumentation, the module the relay's clients (their classes, or their wrapped methods) must come from, as a prefix
    (None: not reported by the relay)."""
    batching: bool = False
    """Whether the relay reports kafka-python's producer batching (the ``relay-batching`` rows)."""


KAFKA_PYTHON = RelayApp(
    "relay",
    Path(__file__).with_name("relay_app.py"),
    {
        "none": "python relay_app.py: plain kafka-python, no OpenTelemetry",
        "stock": "opentelemetry-instrument python relay_app.py, stock KafkaInstrumentor (hoptrace's instrumentors disabled)",
        "hoptrace": "opentelemetry-instrument python relay_app.py, hoptrace's drop-in HoptraceKafkaInstrumentor (as installed)",
    },
    batching=True,
)
CONFLUENT = RelayApp(
    "relay-confluent",
    Path(__file__).with_name("relay_confluent_app.py"),
    {
        "none": "python relay_confluent_app.py: plain confluent-kafka, no OpenTelemetry",
        "stock": "opentelemetry-instrument python relay_confluent_app.py, stock ConfluentKafkaInstrumentor (hoptrace's instrumentors disabled)",
        "hoptrace": "opentelemetry-instrument python relay_confluent_app.py, hoptrace's drop-in HoptraceConfluentKafkaInstrumentor (as installed)",
    },
    clients={"none": "cimpl", "stock": "opentelemetry.instrumentation.confluent_kafka", "hoptrace": "hoptrace.clients.confluent.traced_clients"},
)
AIOKAFKA = RelayApp(
    "relay-aiokafka",
    Path(__file__).with_name("relay_aiokafka_app.py"),
    {
        "none": "python relay_aiokafka_app.py: plain aiokafka, no OpenTelemetry",
        "stock": "opentelemetry-instrument python relay_aiokafka_app.py, stock AIOKafkaInstrumentor (hoptrace's instrumentors disabled)",
        "hoptrace": "opentelemetry-instrument python relay_aiokafka_app.py, hoptrace's drop-in HoptraceAIOKafkaInstrumentor (as installed)",
    },
    clients={"none": "aiokafka", "stock": "opentelemetry.instrumentation.aiokafka", "hoptrace": "hoptrace.clients.aiokafka.traced_clients"},
)
BATCHING_ROWS = (("records/request", "records-per-request-avg", "rec"), ("batch bytes", "batch-size-avg", "B"))
"""(row suffix, kafka-python producer metric, unit) of the ``relay-batching`` rows."""
GC = "gc"
SPLIT_ROWS = (("main thread", "CPU of the relay's main thread (its loop, and the instrumentation it runs)"), (GC, "time in garbage collections"))
"""(row suffix, what it measures) of each relay's ``-split`` rows: where its CPU per record goes, beyond in-process loops' reach."""


@dataclass(frozen=True)
class RelayResult:
    """One measured relay run."""

    variant: str
    records: int
    cpu_s: float
    """CPU time of the relay process (every thread) from its first record to the end of the flush after the last."""
    seconds: float
    """Wall clock over the same span."""
    batching: dict[str, float | None]
    """kafka-python's producer metrics in the relay (``relay_app.BATCHING``)."""
    cpu_by_thread_s: dict[str, float]
    """``cpu_s`` per Python thread by name, and ``(native threads)`` (``cpu_split``)."""
    gc_s: list[float]
    """Time in garbage collections over the same span, per generation."""

    @property
    def cpu_us(self) -> float:
        """CPU µs per record."""
        return self.cpu_s / self.records * 1e6

    def split_us(self, part: str) -> float:
        """µs per record of PART (``SPLIT_ROWS``): the main thread's CPU, or the time in garbage collections."""
        seconds = sum(self.gc_s) if part == GC else self.cpu_by_thread_s.get("MainThread", float("nan"))
        return seconds / self.records * 1e6

    def metric(self, name: str) -> float:
        """Producer metric NAME (NaN when kafka-python did not report it)."""
        value = self.batching.get(name)
        return float("nan") if value is None else float(value)


def run_relay(run: Run, app: RelayApp, variant: ZeroCodeVariant, records: int, label: str) -> RelayResult:
    """Fill a fresh input topic with RECORDS records, then relay them with APP to a fresh output topic, both as VARIANT runs them."""
    namespace = run.namespace(label)
    source, sink = run.create_topic(f"{namespace}relay-in"), run.create_topic(f"{namespace}relay-out")
    group = run.track_group(f"{namespace}relay")
    fed, relayed = run.file(f"{label}.fed.json"), run.file(f"{label}.relayed.json")
    env = variant.env(run, namespace)
    bootstrap = run.settings.kafka_bootstrap
    timeout_s = max(60.0, records / 200)
    children: list[Child] = []
    try:
        feeder_args = ["python", "-m", "benchmarks.relay_feeder", "--bootstrap", bootstrap, "--topic", source, "--count", str(records)]
        children.append(feeder := run.start(f"{label}-feeder", variant.command([*feeder_args, "--result", str(fed)]), env))
        feeder.wait(timeout_s)
        feeder.check()
        variant.check(json.loads(fed.read_text())["instrumentation"], "feeder")
        relay_args = ["python", str(app.script), "--bootstrap", bootstrap, "--source", source, "--sink", sink, "--group", group]
        children.append(relay := run.start(f"{label}-relay", variant.command([*relay_args, "--count", str(records), "--result", str(relayed)]), env))
        relay.wait(timeout_s)
        relay.check()
        result: dict[str, Any] = json.loads(relayed.read_text())
        if app.clients is not None:
            expected = app.clients[variant.instrumentation]
            if not all(module.startswith(expected) for module in result["clients"].values()):
                raise WrongInstrumentation(f"{variant.key}: the relay's clients came from {result['clients']}, expected {expected!r}")
    finally:
        for child in children:
            child.stop()
        run.drop_groups([group])
        run.drop_topics([source, sink])
    split = (result["cpu_by_thread_s"], result["gc_s"])
    return RelayResult(variant.key, result["count"], result["cpu_s"], result["seconds"], result["batching"], *split)


def measure(run: Run, mode: Mode, progress: Callable[[str], None], app: RelayApp = KAFKA_PYTHON) -> list[Scenario]:
    """An unmeasured warm-up, then bracketed rounds (none, v1, none, v2, ..., none); APP's CPU per record and (kafka-python) its batching."""
    warm_up = run_relay(run, app, NONE, min(mode.relay_records, WARM_UP_RECORDS), "r-warm-up")
    progress(f"{app.section} warm-up (not counted): {warm_up.cpu_us:.0f} µs/record")

    def one(key: str, label: str) -> RelayResult:
        result = run_relay(run, app, BY_KEY[key], mode.relay_records, f"r{label}")
        batch = f", {result.metric('records-per-request-avg'):.0f} records/request" if app.batching else ""
        split = ", ".join(f"{part} {result.split_us(part):.0f}" for part, _ in SPLIT_ROWS)
        progress(f"{app.section} {label}: {BY_KEY[key].label}: {result.cpu_us:.0f} µs/record CPU ({split}), {result.seconds:.2f} s{batch}")
        return result

    rounds = bracketed("none", KEYS[1:], mode.relay_rounds, one)
    return _cpu_rows(app, rounds, mode.relay_records) + _split_rows(app, rounds) + (_batching_rows(rounds) if app.batching else [])


def _description(app: RelayApp, variant: ZeroCodeVariant) -> str:
    settings = "" if variant.instrumentation == "none" else f"; {SETTINGS}, sampler arg {variant.sampling:g}"
    return f"{app.how[variant.instrumentation]}{settings}; CPU of the relay process (every thread) from its first record to the flush after the last"


def _cpu_rows(app: RelayApp, rounds: Rounds[RelayResult], records: int) -> list[Scenario]:
    """A row of APP's section per variant: CPU µs per record, paired with the ``none`` runs around it."""
    return [
        Scenario(
            app.section,
            key,
            f"{BY_KEY[key].label}: relay CPU per record",
            "µs",
            [result.cpu_us for result in rounds.results[key]],
            None if key == "none" else "none",
            _description(app, BY_KEY[key]),
            details={
                "paired_ratios": rounds.ratios(key, lambda result: result.cpu_us),
                "records": records,
                "seconds": [result.seconds for result in rounds.results[key]],
                "records_per_s": [result.records / result.seconds for result in rounds.results[key]],
                "batching": [result.batching for result in rounds.results[key]],
                "instrumentation": BY_KEY[key].instrumentation,
                "sampling": BY_KEY[key].sampling,
            },
        )
        for key in KEYS
    ]


def _split_rows(app: RelayApp, rounds: Rounds[RelayResult]) -> list[Scenario]:
    """``{section}-split`` rows per variant: µs per record of the relay's main thread, and in garbage collections."""
    return [
        Scenario(
            f"{app.section}-split",
            f"{key} {suffix}",
            f"{BY_KEY[key].label}: relay {suffix} per record",
            "µs",
            [result.split_us(suffix) for result in rounds.results[key]],
            None,  # parts to read beside the others, not ratios: the plain relay can spend no time at all in the collector
            f"{what} in the relay, per record, over the relay rows' span (benchmarks/cpu_split.py)",
        )
        for key in KEYS
        for suffix, what in SPLIT_ROWS
    ]


def _batching_rows(rounds: Rounds[RelayResult]) -> list[Scenario]:
    """``relay-batching`` rows per variant: kafka-python's records per produce request and bytes per batch in the relay."""
    return [
        Scenario(
            BATCHING_SECTION,
            f"{key} {suffix}",
            f"{BY_KEY[key].label}: relay producer {metric}",
            unit,
            [result.metric(metric) for result in rounds.results[key]],
            None if key == "none" else f"none {suffix}",
            f"kafka-python's producer metric {metric} in the relay after its flush (the other batching metrics: the relay rows' details)",
            details={"paired_ratios": rounds.ratios(key, lambda result, metric=metric: result.metric(metric))},
        )
        for key in KEYS
        for suffix, metric, unit in BATCHING_ROWS
    ]
