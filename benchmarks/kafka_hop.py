"""Kafka hop throughput: N records of 1 KB produced and consumed, from the first send to the last handled record.

Each variant runs between two runs of the baseline, in rounds (``benchmarks.schedule``), after
an unmeasured warm-up run. Each measured run has its own topic and consumer group (a fresh
``HOPTRACE_NAMESPACE``): the consumer and producer processes start together; once the
consumer's group is stable with the partition assigned, the producer is told to go (its
start-up is not measured); the run ends when the consumer's handler has counted N records
(it notes the time itself). Both clients are real processes on the real broker; the two
cores are shared with the broker and, when exporting, with the discarding OTLP receiver in
the benchmark process (its CPU time is recorded as ``collector_cpu_s``).

Variants (consumer / producer):

* ``none``: a plain ``poll()`` loop that commits each batch / plain ``KafkaProducer.send``.
* ``none-iterate``: ``for record in consumer`` committing every 500 / plain send. The
  baseline of the stock variant's consumer loop, which needs the iterator to be traced.
* ``stock``: the stock ``KafkaInstrumentor`` on both sides (tracing only: a PRODUCER span
  per send, a CONSUMER span per ``__next__``, which ends before the handler runs).
* ``hoptrace-100``: ``hoptrace worker benchmarks.pipelines:kafka_hop --no-monitor``
  (KafkaStageWorker + StageProcessor) / ``Runtime.publisher`` (PipelinePublisher +
  KafkaSender); traces and metrics over OTLP gRPC to the discarding receiver, 100 % sampled.
* ``hoptrace-1``: the same at 1 % (``parentbased_traceidratio``, 0.01, in both processes).
* ``hoptrace-1-unrecorded``: as ``hoptrace-1`` with the flight recorder off (``HOPTRACE_RECORDER=false``):
  what holding every unsampled message's spans in the recorder costs is ``hoptrace-1`` over this.
* ``hoptrace-down``: the same at 100 % with the OTLP endpoint a refusing loopback port.

Both CRC configurations of kafka-python (``benchmarks.crc``) are measured in the same rounds,
baseline and variants alike: sections ``kafka`` / ``kafka-cpu`` with the crc32c extension
(hoptrace's default install), ``kafka-pure-crc`` / ``kafka-cpu-pure-crc`` with the pure-Python
CRC (``hoptrace-down`` only in the first: a collector that is down costs the same either way).
Every producer and consumer reports the CRC it used, and a run with the wrong one fails.

``kafka-cpu`` also has, per variant, ``<variant> extra``: the CPU µs per message its producer
and consumer processes spent together beyond the ``none`` runs around it (paired), the whole
cost of instrumenting one hop in real processes (compare with the in-process ``cpu`` rows).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.completion import DONE_ENV, EXPECTED_ENV, GO_ENV, FileCompletion
from benchmarks.crc import CONFIGS, WITH_EXTENSION, CrcConfig
from benchmarks.discard import Collector, Collectors
from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.pipelines import KAFKA_SPEC, STAGE
from benchmarks.processes import Child, cpu_seconds, peak_rss_kib, thread_cpu_seconds, wait_until
from benchmarks.report import Scenario
from benchmarks.schedule import Bracket, Rounds, interleaved
from hoptrace.loader import load_pipeline
from hoptrace.pipeline.stages import KafkaTransport

SECTION = "kafka"
CPU_SECTION = "kafka-cpu"
WARM_UP_MESSAGES = 5000
QUIET_PUBLISHES = 2000
"""Publishes hoptrace's producer times through discarding senders after each run (``quiet_publish_us``)."""


@dataclass(frozen=True)
class KafkaVariant:
    """One way of producing and consuming: which client code, which collector, which sampling."""

    key: str
    label: str
    producer: str
    """``none``, ``stock`` or ``hoptrace`` (see ``benchmarks.kafka_clients``)."""
    consumer: str
    """``poll``, ``iterate``, ``stock`` (iterate, stock-traced) or ``hoptrace`` (the real ``hoptrace worker``)."""
    collector: Collector = "none"
    sampling: float = 1.0
    description: str = ""
    env: tuple[tuple[str, str], ...] = ()
    """Further environment of both processes."""


VARIANTS: tuple[KafkaVariant, ...] = (
    KafkaVariant(
        "none", "none (poll loop)", "none", "poll",
        description="plain KafkaProducer.send of JSON; consumer: poll() loop, json.loads + handler, commit per batch; no OpenTelemetry",
    ),
    KafkaVariant(
        "none-iterate", "none (for record in consumer)", "none", "iterate",
        description="as none, but the consumer iterates (for record in consumer) and commits every 500: the stock variant's loop, untraced",
    ),
    KafkaVariant(
        "stock", "stock KafkaInstrumentor, tracing only", "stock", "stock", "up",
        description="stock KafkaInstrumentor in both processes (wraps KafkaProducer.send and KafkaConsumer.__next__ only; "
        "its CONSUMER span ends before the handler runs); iterating consumer; spans over OTLP gRPC to the discarding receiver; no metrics",
    ),
    KafkaVariant(
        "hoptrace-100", "hoptrace 100% sampled", "hoptrace", "hoptrace", "up",
        description="Runtime.publisher (PipelinePublisher + KafkaSender) / real `hoptrace worker ... --no-monitor` "
        "(KafkaStageWorker + StageProcessor); traces and metrics over OTLP gRPC to the discarding receiver",
    ),
    KafkaVariant(
        "hoptrace-1", "hoptrace 1% sampled", "hoptrace", "hoptrace", "up", 0.01,
        description="as hoptrace-100 with OTEL_TRACES_SAMPLER=parentbased_traceidratio, ARG=0.01 in both processes (metrics still recorded for all)",
    ),
    KafkaVariant(
        "hoptrace-1-unrecorded", "hoptrace 1% sampled, no flight recorder", "hoptrace", "hoptrace", "up", 0.01,
        description="as hoptrace-1 with HOPTRACE_RECORDER=false: unsampled messages get no span at all (hoptrace-1 holds them in the recorder)",
        env=(("HOPTRACE_RECORDER", "false"),),
    ),
    KafkaVariant(
        "hoptrace-down", "hoptrace 100%, collector refused", "hoptrace", "hoptrace", "refused",
        description="as hoptrace-100, OTLP endpoint a closed loopback port (connection refused) in both processes",
    ),
)  # fmt: skip
BASELINES = {
    "none-iterate": "none",
    "stock": "none",
    "hoptrace-100": "none",
    "hoptrace-1": "none",
    "hoptrace-1-unrecorded": "none",
    "hoptrace-down": "none",
}
BY_KEY = {variant.key: variant for variant in VARIANTS}
DEFAULT_CRC_ONLY = frozenset({"hoptrace-down", "hoptrace-1-unrecorded"})
"""Variants measured with the default CRC configuration only."""
ROLES = ("consumer", "producer")


class WrongCrc(RuntimeError):
    """A Kafka client used another CRC implementation than its configuration asked for."""


@dataclass(frozen=True)
class HopResult:
    """One measured run of a variant."""

    variant: str
    messages: int
    seconds: float
    """First send to the last handled record."""
    producer_seconds: float
    """First send to the last acknowledgement the producer waited for."""
    consumer_seconds: float
    """First handled record to the last."""
    consumer_peak_rss_kib: int
    """VmHWM of the consumer process once it handled every record."""
    collector_cpu_s: float
    """CPU time of the benchmark process (the discarding receiver) during the run."""
    consumer_cpu_s: float
    """CPU time of the consumer process (every thread) from the producer's start to the last handled record."""
    producer_cpu_s: float
    """CPU time of the producer process (every thread) from its first send to its last acknowledgement."""
    consumer_main_cpu_s: float
    """Of ``consumer_cpu_s``: its main thread's (the poll loop and, in hoptrace's worker, the handler's processing)."""
    producer_cpu_by_thread_s: dict[str, float]
    """Of ``producer_cpu_s``: per thread, by name (``MainThread`` sends; kafka-python's I/O thread runs the send callbacks)."""
    quiet_publish_cpu_us: float | None
    """hoptrace's producer only: main-thread CPU µs per publish through a discarding sender, after the run (``kafka_clients``)."""
    kafka_crc: str
    """The CRC implementation both clients reported (``benchmarks.crc.active``)."""

    @property
    def rate(self) -> float:
        """Messages per second, end to end."""
        return self.messages / self.seconds

    def cpu_us(self, role: str) -> float:
        """CPU µs per message of the ``consumer`` or ``producer`` process."""
        return float(getattr(self, f"{role}_cpu_s")) / self.messages * 1e6

    def threads_cpu_us(self, role: str) -> dict[str, float]:
        """CPU µs per message of each thread of the ``consumer`` (main and other threads) or ``producer`` (by name) process."""
        if role == "consumer":
            by_thread = {"MainThread": self.consumer_main_cpu_s, "(other threads)": self.consumer_cpu_s - self.consumer_main_cpu_s}
        else:
            by_thread = self.producer_cpu_by_thread_s
        return {name: seconds / self.messages * 1e6 for name, seconds in by_thread.items()}

    def both_cpu_us(self) -> float:
        """CPU µs per message of the producer and consumer processes together."""
        return sum(self.cpu_us(role) for role in ROLES)


def _consumer_args(variant: KafkaVariant, messages: int, result: str) -> list[str]:
    if variant.consumer == "hoptrace":
        return ["python", "-m", "hoptrace", "worker", KAFKA_SPEC, "--stage", STAGE, "--no-monitor"]
    tracing, loop = ("stock", "iterate") if variant.consumer == "stock" else ("none", variant.consumer)
    client = ["python", "-m", "benchmarks.kafka_clients", "consume", "--tracing", tracing, "--loop", loop]
    return [*client, "--spec", KAFKA_SPEC, "--stage", STAGE, "--count", str(messages), "--result", result]


def producer_args(tracing: str, spec: str, stage: str, messages: int, confirm_every: int, result: str, quiet_publishes: int = 0) -> list[str]:
    """The command line of a producer process (``benchmarks.kafka_clients produce``)."""
    client = ["python", "-m", "benchmarks.kafka_clients", "produce", "--tracing", tracing, "--spec", spec, "--stage", stage]
    return [*client, "--count", str(messages), "--confirm-every", str(confirm_every), "--quiet-publishes", str(quiet_publishes), "--result", result]


def run_hop(
    run: Run, collectors: Collectors, variant: KafkaVariant, messages: int, label: str, confirm_every: int, crc: CrcConfig = WITH_EXTENSION
) -> HopResult:
    """Produce and consume MESSAGES records as VARIANT does, with kafka-python's CRC as CRC says, on a topic of their own."""
    namespace = run.namespace(label)
    transport = load_pipeline(KAFKA_SPEC, namespace)[STAGE].transport
    assert isinstance(transport, KafkaTransport)
    topic = run.create_topic(transport.topic)
    group = run.track_group(transport.group)
    done = run.file(f"{label}.done")
    produced = run.file(f"{label}.produced.json")
    go = run.file(f"{label}.go")
    extra = {
        **collectors.env(variant.collector, variant.sampling),
        **dict(variant.env),
        EXPECTED_ENV: str(messages),
        DONE_ENV: str(done),
        GO_ENV: str(go),
    }
    env = run.env(namespace, extra, crc.path_first(run.dir))
    timeout_s = max(60.0, messages / 300)
    children: list[Child] = []
    try:
        consumer = run.start(f"{label}-{variant.key}-consumer", _consumer_args(variant, messages, str(run.file(f"{label}.consumed.json"))), env)
        children.append(consumer)
        producer = run.start(
            f"{label}-{variant.key}-producer",
            producer_args(variant.producer, KAFKA_SPEC, STAGE, messages, confirm_every, str(produced), QUIET_PUBLISHES),
            env,
        )
        children.append(producer)
        run.wait_assigned(group, 60, [consumer, producer])
        cpu, consumer_cpu, consumer_main_cpu = time.process_time(), cpu_seconds(consumer.pid), thread_cpu_seconds(consumer.pid, consumer.pid)
        go.touch()
        finished = wait_until(lambda: FileCompletion.read(done), timeout_s, f"{variant.key}: {messages} records handled", [consumer, producer])
        peak = peak_rss_kib(consumer.pid)
        collector_cpu, consumer_cpu = time.process_time() - cpu, cpu_seconds(consumer.pid) - consumer_cpu
        consumer_main_cpu = thread_cpu_seconds(consumer.pid, consumer.pid) - consumer_main_cpu
        if variant.consumer == "hoptrace":
            consumer.terminate()  # a worker runs until stopped; let it flush while the producer closes
        producer.wait(60)
        sent = json.loads(produced.read_text())
        consumer.wait(30)
    finally:
        for child in children:
            child.stop()
        run.drop_groups([group])
        run.drop_topics([topic])
    reported = {"producer": sent.get("kafka_crc"), "consumer": finished.get("kafka_crc")}
    if set(reported.values()) != {crc.expected}:
        raise WrongCrc(f"{variant.key} ({crc.key}): expected kafka-python's {crc.expected} CRC, the clients reported {reported}")
    return HopResult(
        variant.key,
        messages,
        seconds=finished["done"] - sent["first"],
        producer_seconds=sent["last_ack"] - sent["first"],
        consumer_seconds=finished["done"] - finished["first"],
        consumer_peak_rss_kib=peak,
        collector_cpu_s=collector_cpu,
        consumer_cpu_s=consumer_cpu,
        producer_cpu_s=sent["cpu_s"],
        consumer_main_cpu_s=consumer_main_cpu,
        producer_cpu_by_thread_s=sent["cpu_by_thread_s"],
        quiet_publish_cpu_us=sent.get("quiet_publish_cpu_us"),
        kafka_crc=finished["kafka_crc"],
    )


def measure(run: Run, collectors: Collectors, mode: Mode, confirm_every: int, progress: Callable[[str], None]) -> list[Scenario]:
    """A warm-up run, then rounds of bracketed runs (none, v1, none, v2, ..., none) of both CRC configurations; their scenarios."""
    warm_up = run_hop(run, collectors, BY_KEY["none"], min(mode.kafka_messages, WARM_UP_MESSAGES), "k-warm-up", confirm_every)
    progress(f"kafka warm-up (not counted): {warm_up.rate:,.0f} msg/s")
    groups = {crc: Bracket("none", _variants(mode, crc)) for crc in CONFIGS}

    def one(crc: CrcConfig, key: str, label: str) -> HopResult:
        result = run_hop(run, collectors, BY_KEY[key], mode.kafka_messages, f"k-{crc.key}-{label}", confirm_every, crc)
        progress(f"kafka {crc.key} {label}: {BY_KEY[key].label}: {result.rate:,.0f} msg/s ({result.seconds:.2f} s)")
        return result

    measured = interleaved(groups, mode.kafka_rounds, one)
    return [scenario for crc, rounds in measured.items() for scenario in _scenarios(crc, rounds, mode.kafka_messages)]


def _variants(mode: Mode, crc: CrcConfig) -> list[str]:
    """The variant keys measured against ``none`` with CRC (``none-iterate`` only when the mode asks for it)."""
    chosen = [variant.key for variant in VARIANTS[1:] if mode.kafka_iterate_reference or variant.key != "none-iterate"]
    return [key for key in chosen if crc is WITH_EXTENSION or key not in DEFAULT_CRC_ONLY]


def _by_thread(results: list[HopResult], role: str) -> dict[str, list[float]]:
    """The CPU µs per message of each of ROLE's threads, a value per run (0 in a run where the thread did not show)."""
    per_run = [result.threads_cpu_us(role) for result in results]
    names = sorted({name for threads in per_run for name in threads})
    return {name: [threads.get(name, 0.0) for threads in per_run] for name in names}


def _quiet_publish(results: list[HopResult], role: str) -> dict[str, list[float | None]]:
    """For a hoptrace producer, its CPU µs per publish through a discarding sender, a value per run (``kafka_clients``)."""
    quiet = [result.quiet_publish_cpu_us for result in results]
    return {"quiet_publish_us": quiet} if role == "producer" and any(value is not None for value in quiet) else {}


def _scenarios(crc: CrcConfig, rounds: Rounds[HopResult], messages: int) -> list[Scenario]:
    """Throughput per variant; CPU µs per message of each variant's consumer and producer; each variant's extra CPU per hop."""
    section, cpu_section = f"{SECTION}{crc.section_suffix}", f"{CPU_SECTION}{crc.section_suffix}"
    results = rounds.results
    measured = [variant for variant in VARIANTS if variant.key in results]
    compared = [variant for variant in measured if variant.key in rounds.around]
    throughput = [
        Scenario(
            section,
            variant.key,
            variant.label,
            "msg/s",
            [result.rate for result in results[variant.key]],
            BASELINES.get(variant.key),
            variant.description if crc is WITH_EXTENSION else _again(crc),
            details={
                "paired_ratios": rounds.ratios(variant.key, lambda result: result.rate),
                "messages": messages,
                "seconds": [result.seconds for result in results[variant.key]],
                "producer_seconds": [result.producer_seconds for result in results[variant.key]],
                "consumer_seconds": [result.consumer_seconds for result in results[variant.key]],
                "consumer_peak_rss_kib": [result.consumer_peak_rss_kib for result in results[variant.key]],
                "collector_cpu_s": [result.collector_cpu_s for result in results[variant.key]],
                "producer": variant.producer,
                "consumer": variant.consumer,
                "collector": variant.collector,
                "sampling": variant.sampling,
                "kafka_crc_reported": sorted({result.kafka_crc for result in results[variant.key]}),  # by every producer and consumer
            },
        )
        for variant in measured
    ]
    cpu = [
        Scenario(
            cpu_section,
            f"{variant.key} {role}",
            f"{variant.label}: {role} process CPU per message",
            "µs",
            [result.cpu_us(role) for result in results[variant.key]],
            None if variant.key == "none" else f"none {role}",
            f"user + system CPU of the whole {role} process (every thread: exporters, kafka-python's I/O threads) during the run, per message"
            " (per thread in the details)",
            details={
                "paired_ratios": rounds.ratios(variant.key, lambda result, role=role: result.cpu_us(role)),
                "by_thread_us": _by_thread(results[variant.key], role),
                **_quiet_publish(results[variant.key], role),
            },
        )
        for variant in measured
        for role in ROLES
    ]
    extra = [
        Scenario(
            cpu_section,
            f"{variant.key} extra",
            f"{variant.label}: producer + consumer CPU per message beyond none's",
            "µs",
            rounds.differences(variant.key, HopResult.both_cpu_us) or [],
            description="CPU µs per message of the producer and consumer processes together, minus the mean of the two none runs around it",
        )
        for variant in compared
        if variant.key != "none-iterate"
    ]
    return throughput + cpu + extra


def _again(crc: CrcConfig) -> str:
    """The description shared by the rows of a CRC configuration other than the default one."""
    return f"the {SECTION} rows again, {crc.description} (the {SECTION} rows: {WITH_EXTENSION.description})"
