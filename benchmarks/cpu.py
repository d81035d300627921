"""Per-message CPU cost of hoptrace's own code, in process, without a broker; split into its parts.

``python -m benchmarks.cpu --iterations K --repeats R --result PATH`` (run by the benchmark in a
fresh process) times K calls R times per case and reports CPU µs per call: the process's CPU
time (``time.process_time``: every thread, so the batch span processor's thread too), which a
busy neighbour on the machine does not inflate as it does wall-clock time (kept as
``wall_us`` in the details). The repeats of all cases interleave (repeat 1 of every case, then
repeat 2, ...), so the machine's drift hits every case alike. Telemetry is built by hoptrace's
own ``providers.configure`` (not global) with the SDK's real ``BatchSpanProcessor`` feeding an
exporter that discards (so span encoding and export are not included: see ``benchmarks.encoding``),
and a ``MeterProvider`` with a periodic reader whose exporter discards; the sampler is
``always_on`` (sampled) or ``always_off`` (not sampled), and ``always_off`` again with the flight
recorder on (``unsampled-recorded``: every span made and held in the recorder's buffer, at its
default bound, as a worker holds them).

Cases:

* ``handler``: the trivial handler called alone (the floor every consume pays anyway).
* ``publish-*``: ``PipelinePublisher.publish`` of a 1 KB payload from an empty context (a
  new job) through a sender that only calls ``done``.
* ``consume-*``: ``StageProcessor.process`` of a prepared ``Delivery`` (made by
  ``workers.kafka.delivery`` from a record whose headers that publisher wrote, in a handler of the
  stage before, so with a pathway), trivial handler.
* ``publish-*-nospan`` / ``consume-*-nospan``: the same, the tracer provider a
  ``SpanlessTracerProvider`` (``benchmarks.spanless``): the SDK's span work gone, all else kept.
* ``propagation``: hoptrace's header work alone, with the codec it uses now (the W3C fast path
  for the default propagators): ``propagation.extract`` of the headers a publish wrote
  (cleaning, baggage allowlist, codec, publish time) and ``propagation.inject`` of a new job's
  context (traceparent, baggage, publish time).
* ``pathway``: the pathway's work per hop alone (``pipeline.pathways``), the calls the hot path makes:
  the publish writes the handler's pathway into the headers (``propagation.inject``), the consume
  parses it (``propagation.extract``), follows it to its stage and puts the result in the handler's
  context (metrics ``before_message``), and records ``hoptrace.pathway.latency`` (``after_message``).
* ``otel-span``: a bare SDK span with seven attributes, started and ended (a reference).
* ``otel-span-spooled``: the same span on a provider with the span spool (``pipeline.telemetry.span_spool``)
  before its batch processor; ``spool`` is the difference, the spool's cost per sampled span.
* ``otel-propagation``: the global propagators' extract and inject of the headers a publish wrote
  (traceparent and the job's baggage), the SDK's own codec (a reference).

Per repeat, ``hop-*`` is publish + consume, and it is split (``measure``) into SDK span work
(``hop`` minus ``hop nospan``), propagation (the ``propagation`` case) and hoptrace's own code
(``hop nospan`` minus ``propagation``: middleware, job baggage, metric instruments and the
metrics SDK under them, context handling).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.discard import DiscardMetricExporter, DiscardSender, DiscardSpanExporter
from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.pipelines import payload
from benchmarks.report import Scenario
from benchmarks.spanless import SpanlessTracerProvider

if TYPE_CHECKING:
    from hoptrace.pipeline.recorder import FlightRecorder
    from hoptrace.pipeline.telemetry.providers import Telemetry

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
class Prepared:
    """Telemetry of one sampler and the calls measured with it."""

    telemetry: Telemetry
    exporter: DiscardSpanExporter
    calls: dict[str, Callable[[], object]]
    recorder: FlightRecorder | None = None
    """This setup's flight recorder, installed while its cases run."""
    fresh_hop: Callable[[], object] | None = None
    """A publish, then the consume of the record it wrote: a trace of its own per hop, as in a worker (not timed here)."""


def prepare(sampler: str, recorded: bool = False) -> Prepared:
    """hoptrace's telemetry with SAMPLER (RECORDED: and a flight recorder), publishers and processors on it; the calls to time."""
    from kafka.consumer.fetcher import ConsumerRecord
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context, attach, detach, set_value
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from hoptrace.pipeline import jobs, propagation
    from hoptrace.pipeline.carriers import DICT_SETTER, FRESH_DICT_SETTER, kafka_headers
    from hoptrace.pipeline.instruments import Instruments
    from hoptrace.pipeline.metrics import Recorder
    from hoptrace.pipeline.pathways import PATHWAY_KEY, Pathways, parse
    from hoptrace.pipeline.recorder import FlightRecorder
    from hoptrace.pipeline.semconv import HEADER_PATHWAY, PATHWAY, PIPELINE, STAGE
    from hoptrace.pipeline.settings import Settings
    from hoptrace.pipeline.stages import KafkaTransport, Pipeline, Stage
    from hoptrace.pipeline.telemetry import providers
    from hoptrace.producers.publisher import PipelinePublisher
    from hoptrace.workers.kafka import delivery
    from hoptrace.workers.processing import StageProcessor

    os.environ.update({"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"})
    exporter = DiscardSpanExporter()
    configured = providers.configure(
        "bench-cpu", set_global=False, span_processors=[BatchSpanProcessor(exporter)], metric_exporters=[DiscardMetricExporter()]
    )
    recorder = None
    if recorded:
        recorder = FlightRecorder(Settings().recorder_max_bytes, configured.meter_provider)
        recorder.attach(configured.tracer_provider)
        configured.tracer_provider.add_span_processor(recorder)
    pipeline = Pipeline("bench-cpu")
    stage = Stage("hop", KafkaTransport("bench.cpu", "bench-cpu"), _trivial)
    pipeline.add(stage)
    instruments = Instruments.of(configured.meter_provider)
    sender = DiscardSender()
    sampled = sampler == "always_on"
    spanless = SpanlessTracerProvider(sampled)
    publisher = PipelinePublisher(pipeline, {"kafka": sender}, configured.tracer_provider, instruments)
    processor = StageProcessor(pipeline, stage, publisher, instruments, configured.tracer_provider)
    spanless_publisher = PipelinePublisher(pipeline, {"kafka": sender}, spanless, instruments)
    spanless_processor = StageProcessor(pipeline, stage, spanless_publisher, instruments, spanless)
    message = payload(1)
    forwarding = attach(set_value(PATHWAY_KEY, "hop"))  # as a handler of the stage before: the record carries a pathway
    try:
        publisher.publish(stage, message)  # headers as this sampler's publisher writes them
    finally:
        detach(forwarding)
    value = json.dumps(message).encode()
    record = ConsumerRecord("bench.cpu", 0, 0, 42, 0, 0, None, value, kafka_headers(sender.headers), None, -1, len(value), -1)
    prepared = delivery(record)
    configured.tracer_provider.force_flush()
    label = "sampled" if sampled else "unsampled-recorded" if recorded else "unsampled"
    calls: dict[str, Callable[[], object]] = {
        f"publish-{label}": lambda: publisher.publish(stage, message),
        f"consume-{label}": lambda: processor.process(prepared),
    }
    if not recorded:
        calls[f"publish-{label}-nospan"] = lambda: spanless_publisher.publish(stage, message)
        calls[f"consume-{label}-nospan"] = lambda: spanless_processor.process(prepared)
    if sampled:
        tracer = configured.tracer_provider.get_tracer("bench")
        attributes = {f"bench.attribute.{n}": "value" for n in range(7)}
        calls["otel-span"] = lambda: tracer.start_span("send bench.cpu", attributes=attributes).end()
        spooled = _spooled_provider(configured.tracer_provider.resource, exporter).get_tracer("bench")
        calls["otel-span-spooled"] = lambda: spooled.start_span("send bench.cpu", attributes=attributes).end()
        carrier = dict(sender.headers)
        calls["otel-propagation"] = lambda: propagate.inject({}, context=propagate.extract(carrier))
        extracted = propagation.extract(prepared.headers, pipeline.baggage_allowlist).context
        new_job = trace.set_span_in_context(trace.get_current_span(extracted), jobs.ensure_job(Context()))
        allowlist = pipeline.baggage_allowlist
        calls["propagation"] = lambda: (propagation.extract(prepared.headers, allowlist), propagation.inject({}, DICT_SETTER, new_job))
        follower, handling = Pathways(pipeline.name, Settings().pathway_depth, [stage.name]), set_value(PATHWAY_KEY, "hop", new_job)
        span = trace.get_current_span(extracted).get_span_context()  # sampled: the record keeps an exemplar, as a sampled hop's does
        along: dict[str, Recorder] = {}

        def pathway() -> None:
            headers: dict[str, str] = {}
            value = handling.get(PATHWAY_KEY)  # publish: propagation.inject, into PipelinePublisher's headers
            if type(value) is str:
                FRESH_DICT_SETTER.set(headers, HEADER_PATHWAY, value)
            found = follower.follow(parse(headers[HEADER_PATHWAY]), stage.name, False)  # consume: extract, then before_message
            context = set_value(PATHWAY_KEY, found.value, extracted)
            recorder = along.get(found.label)  # after_message
            if recorder is None:
                attributes = {PIPELINE: pipeline.name, STAGE: stage.name, PATHWAY: found.label}
                recorder = along[found.label] = Recorder(instruments.pathway_latency, attributes)
            recorder.record(0.25, span, context)

        calls["pathway"] = pathway
        calls["handler"] = lambda: stage.handler(message, None)  # type: ignore[arg-type]

    def fresh_hop() -> None:
        publisher.publish(stage, message)
        written = ConsumerRecord("bench.cpu", 0, 0, 42, 0, 0, None, value, kafka_headers(sender.headers), None, -1, len(value), -1)
        processor.process(delivery(written))

    return Prepared(configured, exporter, calls, recorder, fresh_hop)


def _spooled_provider(resource: Any, exporter: Any) -> Any:
    """A tracer provider whose ended spans go through the span spool (a file in a temporary folder) to EXPORTER, shut down at exit."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from hoptrace.pipeline.telemetry.span_spool import SpanSpool, SpoolMarking

    provider = TracerProvider(resource=resource, shutdown_on_exit=True)
    spool = SpanSpool(Path(tempfile.mkdtemp(prefix="hoptrace-bench-spool-")))
    provider.add_span_processor(spool)
    provider.add_span_processor(BatchSpanProcessor(SpoolMarking(exporter, spool)))
    return provider


def run_cases(iterations: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Every case, sampled and not; the repeats of all cases interleave, so a drift of the machine hits them alike."""
    from hoptrace.pipeline.recorder import install

    setups = [prepare("always_on"), prepare("always_off"), prepare("always_off", recorded=True)]
    found: dict[str, dict[str, Any]] = {}
    for setup in setups:
        install(setup.recorder)
        for case, call in setup.calls.items():
            for _ in range(min(iterations, WARM_UP_CALLS)):
                call()
            found[case] = {"wall_us": [], "cpu_us": [], "timed_calls": iterations * repeats, "spans_exported": 0}
        setup.telemetry.tracer_provider.force_flush()
    for _ in range(repeats):
        for setup in setups:
            install(setup.recorder)
            for case, call in setup.calls.items():
                before = setup.exporter.exported
                wall, cpu = _timed(call, iterations)
                setup.telemetry.tracer_provider.force_flush()  # outside the timed loop
                found[case]["wall_us"].append(wall)
                found[case]["cpu_us"].append(cpu)
                found[case]["spans_exported"] += setup.exporter.exported - before  # of the timed calls: fewer means dropped
    for setup in setups:
        setup.telemetry.shutdown(5.0)
    found["propagation"]["codec"] = _codec()
    return found


def _codec() -> str:
    """Which codec hoptrace's propagation uses in this process."""
    from opentelemetry import propagate

    from hoptrace.pipeline import w3c

    return "hoptrace's W3C fast path (pipeline/w3c.py)" if w3c.is_default(propagate.get_global_textmap()) else "the global propagators"


ROWS: tuple[tuple[str, str], ...] = (
    ("handler", "the trivial handler called alone"),
    ("otel-span", "a bare SDK span with 7 attributes, started and ended (reference)"),
    ("otel-span-spooled", "the same span with the span spool before the batch processor (encoded and written to disk as it ends)"),
    ("spool", "the span spool's cost per sampled span (otel-span-spooled minus otel-span)"),
    ("otel-propagation", "the global propagators alone: extract + inject of a hop's traceparent and baggage (reference)"),
    ("propagation", "hoptrace's header work alone, current codec: propagation.extract of a hop's headers + propagation.inject of a new job"),
    ("pathway", "the pathway's work per hop alone: header written, parsed, followed to the stage, put in the context, latency recorded"),
    ("publish-sampled", "PipelinePublisher.publish, always_on, sender only calls done"),
    ("consume-sampled", "StageProcessor.process of a prepared Delivery, always_on"),
    ("hop-sampled", "publish + consume, sampled"),
    ("hop-sampled nospan", "publish + consume, sampled, spanless tracer (no SDK span work)"),
    ("hop-sampled sdk-spans", "of hop-sampled: SDK span work (hop-sampled minus its nospan)"),
    ("hop-sampled hoptrace", "of hop-sampled: hoptrace's own code (nospan minus propagation)"),
    ("publish-unsampled", "PipelinePublisher.publish, always_off"),
    ("consume-unsampled", "StageProcessor.process, always_off"),
    ("hop-unsampled", "publish + consume, not sampled"),
    ("hop-unsampled nospan", "publish + consume, not sampled, spanless tracer (no SDK span work)"),
    ("hop-unsampled sdk-spans", "of hop-unsampled: SDK span work (hop-unsampled minus its nospan)"),
    ("hop-unsampled hoptrace", "of hop-unsampled: hoptrace's own code (nospan minus propagation)"),
    ("publish-unsampled-recorded", "PipelinePublisher.publish, always_off, flight recorder on"),
    ("consume-unsampled-recorded", "StageProcessor.process, always_off, flight recorder on"),
    ("hop-unsampled-recorded", "publish + consume, not sampled, its spans held by the flight recorder (default bound)"),
)
MEASURES = ("cpu_us", "wall_us")


def _combine(cases: dict[str, dict[str, Any]], key: str, parts: tuple[str, ...], signs: tuple[int, ...]) -> None:
    """Case KEY, per repeat: the sum of the PARTS' values, each times its sign (the repeats interleave, so they pair)."""
    for measure in MEASURES:
        repeats = zip(*(cases[part][measure] for part in parts), strict=True)
        cases.setdefault(key, {})[measure] = [sum(sign * value for sign, value in zip(signs, values, strict=True)) for values in repeats]


def derive(cases: dict[str, dict[str, Any]]) -> None:
    """Add the hops (publish + consume) and their split: SDK span work, propagation, hoptrace's own code."""
    for label in ("sampled", "unsampled"):
        _combine(cases, f"hop-{label}", (f"publish-{label}", f"consume-{label}"), (1, 1))
        _combine(cases, f"hop-{label} nospan", (f"publish-{label}-nospan", f"consume-{label}-nospan"), (1, 1))
        _combine(cases, f"hop-{label} sdk-spans", (f"hop-{label}", f"hop-{label} nospan"), (1, -1))
        _combine(cases, f"hop-{label} hoptrace", (f"hop-{label} nospan", "propagation"), (1, -1))
    _combine(cases, "hop-unsampled-recorded", ("publish-unsampled-recorded", "consume-unsampled-recorded"), (1, 1))
    _combine(cases, "spool", ("otel-span-spooled", "otel-span"), (1, -1))


def measure(run: Run, mode: Mode, progress: Callable[[str], None]) -> list[Scenario]:
    """Run the cases in a fresh process; a scenario per row (CPU µs per call), the hops and their split derived per repeat."""
    result = run.file("cpu.json")
    child = run.start(
        "cpu",
        ["python", "-m", "benchmarks.cpu", "--iterations", str(mode.cpu_iterations), "--repeats", str(mode.cpu_repeats), "--result", str(result)],
        run.env(),
    )
    child.wait(600)
    child.check()
    cases: dict[str, dict[str, Any]] = json.loads(result.read_text())
    derive(cases)
    scenarios = []
    for key, label in ROWS:
        case = cases[key]
        details = {name: value for name, value in case.items() if name != "cpu_us"}
        details.update(iterations=mode.cpu_iterations, repeats=mode.cpu_repeats)
        description = f"{label}: CPU µs per call (process time, every thread; wall clock in the details)"
        scenarios.append(Scenario(SECTION, key, label, "µs", case["cpu_us"], description=description, details=details))
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
