"""Per-message CPU cost of hoptrace's own code, in process, without a broker.

``python -m benchmarks.cpu --iterations K --repeats R --result PATH`` (run by the benchmark in a
fresh process) times K calls R times per case with ``time.perf_counter`` and reports
microseconds per call (and process CPU time per call, which includes the batch span
processor's export thread). The repeats of all cases interleave (repeat 1 of every case, then
repeat 2, ...), so the machine's drift hits every case alike. Nothing is subtracted. Telemetry is built by hoptrace's own
``telemetry.configure`` (not global) with the SDK's real ``BatchSpanProcessor`` feeding an
exporter that discards, and a ``MeterProvider`` with a periodic reader whose exporter discards;
the sampler is ``always_on`` (sampled) or ``always_off`` (not sampled).

Cases:

* ``handler``: the trivial handler called alone (the floor every consume pays anyway).
* ``publish-*``: ``PipelinePublisher.publish`` of a 1 KB payload from an empty context (a
  new job) through a sender that only calls ``done``.
* ``consume-*``: ``StageProcessor.process`` of a prepared ``Delivery`` (made by
  ``workers.kafka.delivery`` from a record whose headers that publisher wrote), trivial handler.
* ``otel-span``: a bare SDK span with seven attributes, started and ended (a reference).
* ``otel-propagation``: the global propagators' extract and inject of the headers a publish wrote
  (traceparent and the job's baggage), which every instrumented hop pays (a reference).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.discard import DiscardMetricExporter, DiscardSpanExporter
from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.pipelines import payload
from benchmarks.report import Scenario

if TYPE_CHECKING:
    from hoptrace.pipeline.telemetry import Telemetry

SECTION = "cpu"
WARM_UP_CALLS = 1000


def _trivial(message: Any, ctx: Any) -> None:
    """The trivial handler."""


def _timed(call: Callable[[], object], iterations: int) -> tuple[float, float]:
    """µs per CALL over ITERATIONS calls: wall clock and process CPU (every thread)."""
    cpu_began, began = time.process_time(), time.perf_counter()
    for _ in range(iterations):
        call()
    return (time.perf_counter() - began) / iterations * 1e6, (time.process_time() - cpu_began) / iterations * 1e6


@dataclass
class _Setup:
    """Telemetry of one sampler and the calls measured with it."""

    telemetry: Telemetry
    exporter: DiscardSpanExporter
    calls: dict[str, Callable[[], object]]


def _setup(sampler: str) -> _Setup:
    """hoptrace's telemetry with SAMPLER, a publisher and a processor on it; the calls to time."""
    from kafka.consumer.fetcher import ConsumerRecord
    from opentelemetry import propagate
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from hoptrace.pipeline import telemetry
    from hoptrace.pipeline.instruments import Instruments
    from hoptrace.pipeline.stages import KafkaTransport, Pipeline, Stage, Transport
    from hoptrace.producers.kafka import kafka_headers
    from hoptrace.producers.publisher import Done, PipelinePublisher
    from hoptrace.workers.kafka import delivery
    from hoptrace.workers.processing import StageProcessor

    class NullSender:
        """A Sender whose broker accepts everything at once; keeps the last headers."""

        headers: Mapping[str, str] = {}

        def send(self, transport: Transport, message: Any, headers: Mapping[str, str], done: Done) -> None:
            self.headers = headers
            done({}, None)

    os.environ.update({"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"})
    exporter = DiscardSpanExporter()
    configured = telemetry.configure(
        "bench-cpu", set_global=False, span_processors=[BatchSpanProcessor(exporter)], metric_exporters=[DiscardMetricExporter()]
    )
    pipeline = Pipeline("bench-cpu")
    stage = Stage("hop", KafkaTransport("bench.cpu", "bench-cpu"), _trivial)
    pipeline.add(stage)
    instruments = Instruments.of(configured.meter_provider)
    sender = NullSender()
    publisher = PipelinePublisher(pipeline, {"kafka": sender}, configured.tracer_provider, instruments)
    processor = StageProcessor(pipeline, stage, publisher, instruments, configured.tracer_provider)
    message = payload(1)
    publisher.publish(stage, message)  # headers as this sampler's publisher writes them
    value = json.dumps(message).encode()
    record = ConsumerRecord("bench.cpu", 0, 0, 42, 0, 0, None, value, kafka_headers(sender.headers), None, -1, len(value), -1)
    prepared = delivery(record)
    configured.tracer_provider.force_flush()
    label = "sampled" if sampler == "always_on" else "unsampled"
    calls: dict[str, Callable[[], object]] = {
        f"publish-{label}": lambda: publisher.publish(stage, message),
        f"consume-{label}": lambda: processor.process(prepared),
    }
    if sampler == "always_on":
        tracer = configured.tracer_provider.get_tracer("bench")
        attributes = {f"bench.attribute.{n}": "value" for n in range(7)}
        calls["otel-span"] = lambda: tracer.start_span("send bench.cpu", attributes=attributes).end()
        carrier = dict(sender.headers)
        calls["otel-propagation"] = lambda: propagate.inject({}, context=propagate.extract(carrier))
        calls["handler"] = lambda: stage.handler(message, None)  # type: ignore[arg-type]
    return _Setup(configured, exporter, calls)


def run_cases(iterations: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Every case, sampled and not; the repeats of all cases interleave, so a drift of the machine hits them alike."""
    setups = [_setup("always_on"), _setup("always_off")]
    found: dict[str, dict[str, Any]] = {}
    for setup in setups:
        for case, call in setup.calls.items():
            for _ in range(min(iterations, WARM_UP_CALLS)):
                call()
            found[case] = {"wall_us": [], "cpu_us": [], "timed_calls": iterations * repeats, "spans_exported": 0}
        setup.telemetry.tracer_provider.force_flush()
    for _ in range(repeats):
        for setup in setups:
            for case, call in setup.calls.items():
                before = setup.exporter.exported
                wall, cpu = _timed(call, iterations)
                setup.telemetry.tracer_provider.force_flush()  # outside the timed loop
                found[case]["wall_us"].append(wall)
                found[case]["cpu_us"].append(cpu)
                found[case]["spans_exported"] += setup.exporter.exported - before  # of the timed calls: fewer means dropped
    for setup in setups:
        setup.telemetry.shutdown(5.0)
    return found


ROWS: tuple[tuple[str, str], ...] = (
    ("handler", "the trivial handler called alone"),
    ("otel-span", "a bare SDK span with 7 attributes, started and ended (reference)"),
    ("otel-propagation", "the global propagators alone: extract + inject of a hop's traceparent and baggage (reference)"),
    ("publish-sampled", "PipelinePublisher.publish, always_on, sender only calls done"),
    ("consume-sampled", "StageProcessor.process of a prepared Delivery, always_on"),
    ("hop-sampled", "publish + consume, sampled"),
    ("publish-unsampled", "PipelinePublisher.publish, always_off"),
    ("consume-unsampled", "StageProcessor.process, always_off"),
    ("hop-unsampled", "publish + consume, not sampled"),
)


def measure(run: Run, mode: Mode, progress: Callable[[str], None]) -> list[Scenario]:
    """Run the cases in a fresh process; a scenario per case (µs per call), plus publish + consume per hop."""
    result = run.file("cpu.json")
    child = run.start(
        "cpu",
        ["python", "-m", "benchmarks.cpu", "--iterations", str(mode.cpu_iterations), "--repeats", str(mode.cpu_repeats), "--result", str(result)],
        run.env(),
    )
    child.wait(600)
    child.check()
    cases: dict[str, dict[str, Any]] = json.loads(result.read_text())
    for label in ("sampled", "unsampled"):
        publish, consume = cases[f"publish-{label}"], cases[f"consume-{label}"]
        cases[f"hop-{label}"] = {key: [a + b for a, b in zip(publish[key], consume[key], strict=True)] for key in ("wall_us", "cpu_us")}
    scenarios = []
    for key, label in ROWS:
        case = cases[key]
        details = {name: value for name, value in case.items() if name != "wall_us"}
        details.update(iterations=mode.cpu_iterations, repeats=mode.cpu_repeats)
        scenarios.append(Scenario(SECTION, key, label, "µs", case["wall_us"], description=f"{label}: µs per call, wall clock", details=details))
        progress(f"cpu {label}: {scenarios[-1].median:.1f} µs")
    return scenarios


def main() -> None:
    """Parse the command line, run the cases, write them as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description="Per-message CPU cost of hoptrace, in process.")
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    args.result.write_text(json.dumps(run_cases(args.iterations, args.repeats)))


if __name__ == "__main__":
    main()
