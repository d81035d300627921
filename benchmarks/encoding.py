"""Export cost per span: the SDK's OTLP encoder against hoptrace's wire encoder, on the same spans.

``python -m benchmarks.encoding`` prints µs per span for (a) the SDK's
``encode_spans(spans).SerializeToString()`` and (b) ``SpanEncoder.encode(spans)``, measured
alternately in rounds (A, B, A, B, ...) on batches of realistic hoptrace spans: a CONSUMER
"process" span with a remote parent and 13 attributes (a unique job id, offset and message
id per span) and a PRODUCER "publish" span with 7 (a unique job id). Both must give the same
bytes. Then the end-to-end cost of ``export()`` through the SDK's gRPC exporter and hoptrace's
into a receiver in another process. Each figure is taken as the CPU time of the calling thread
(what the exporting thread of a worker pays) and as wall-clock time; ``--result PATH`` writes
every round's figures as JSON.

In ``python -m benchmarks`` this is the ``export`` section (``measure_section``): it runs the
above in a fresh process and reports CPU µs per span, the per-round speedup, and the targets.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent import futures
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as SDKGrpcSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context

from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.report import Scenario
from hoptrace.pipeline.telemetry.otlp_exporters import OTLPGrpcSpanExporter
from hoptrace.pipeline.telemetry.otlp_wire import SpanEncoder


def realistic_spans(count: int) -> list[ReadableSpan]:
    """``count`` finished spans from a real SDK tracer: CONSUMER process spans and PRODUCER publish spans, alternating."""
    collect = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders-worker", "service.version": "1.4.2"}))
    provider.add_span_processor(SimpleSpanProcessor(collect))
    tracer = provider.get_tracer("hoptrace", "0.1.0")
    for n in range(count // 2 + count % 2):
        remote = SpanContext(int.from_bytes(os.urandom(16), "big"), int.from_bytes(os.urandom(8), "big"), True, TraceFlags(1))
        with tracer.start_as_current_span(
            "orders.validate process",
            context=set_span_in_context(NonRecordingSpan(remote)),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": "orders.validate",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.consumer.group.name": "orders.validate.workers",
                "messaging.destination.partition.id": str(n % 3),
                "messaging.kafka.offset": 1_000_000 + n,
                "messaging.message.id": f"orders.validate-{n % 3}-{1_000_000 + n}",
                "hoptrace.pipeline": "orders",
                "hoptrace.stage": "validate",
                "hoptrace.job.id": os.urandom(16).hex(),
                "hoptrace.attempt": 1,
            },
        ) as process:
            process.set_attribute("hoptrace.outcome", "ok")
            tracer.start_span(
                "orders.enrich publish",
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": "orders.enrich",
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "send",
                    "hoptrace.pipeline": "orders",
                    "hoptrace.stage": "enrich",
                    "hoptrace.job.id": os.urandom(16).hex(),  # unique per span, the worst case for the caches
                },
            ).end()
    provider.shutdown()
    return list(collect.get_finished_spans())[:count]


def _cost(function: Callable[[], object], spans: int, repeat: int) -> tuple[float, float]:
    """µs per span of ``function`` (which handles ``spans`` spans) over ``repeat`` calls: wall clock, and CPU of this thread."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - wall) / repeat / spans * 1e6, (time.thread_time() - cpu) / repeat / spans * 1e6


def _alternate(a: Callable[[], object], b: Callable[[], object], spans: int, rounds: int, repeat: int) -> tuple[list[float], ...]:
    """Per round, ``_cost`` of ``a`` then of ``b`` (after one warm-up round): wall and CPU lists of ``a``, then of ``b``."""
    costs: tuple[list[float], ...] = ([], [], [], [])
    for n in range(rounds + 1):
        measured = (*_cost(a, spans, repeat), *_cost(b, spans, repeat))
        for values, value in zip(costs, measured, strict=True):
            if n:
                values.append(value)
    return costs


def measure(spans_per_batch: int = 512, rounds: int = 9, batches: int = 4) -> dict[str, Any]:
    """Per round, µs per span of the SDK encoder (``sdk_encode_*``) and of `SpanEncoder` (``hoptrace_encode_*``).

    Each round times ``batches`` encodings of one batch with the SDK, then with hoptrace's
    encoder; the two therefore share the machine's load. ``*_cpu_us``: CPU of this thread;
    ``*_wall_us``: wall clock.
    """
    spans = realistic_spans(spans_per_batch)
    encoder = SpanEncoder()
    assert encoder.encode(spans) == encode_spans(spans).SerializeToString()
    sdk_encode = lambda: encode_spans(spans).SerializeToString()  # noqa: E731
    sdk, sdk_cpu, ours, ours_cpu = _alternate(sdk_encode, lambda: encoder.encode(spans), len(spans), rounds, batches)
    return {
        "spans_per_batch": spans_per_batch,
        "rounds": rounds,
        "identical_bytes": True,
        "sdk_encode_wall_us": sdk,
        "sdk_encode_cpu_us": sdk_cpu,
        "hoptrace_encode_wall_us": ours,
        "hoptrace_encode_cpu_us": ours_cpu,
    }


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Accepts every export."""

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Answer success."""
        return trace_service_pb2.ExportTraceServiceResponse()


def _serve(connection: Connection) -> None:
    """In a child process: run a loopback receiver, send its port, stop when told."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Receiver(), server)
    connection.send(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    connection.recv()
    server.stop(None)


def measure_export(spans_per_batch: int = 512, rounds: int = 5, batches: int = 2) -> dict[str, Any]:
    """Per round, µs per span of ``export()`` into a gRPC receiver in a child process: the SDK's exporter against `OTLPGrpcSpanExporter`.

    ``*_export_wall_us`` is the wall time of the call (encoding, the RPC, the receiver's parsing);
    ``*_export_cpu_us`` the CPU of the exporting thread only.
    """
    spans = realistic_spans(spans_per_batch)
    parent, child = multiprocessing.get_context("spawn").Pipe()
    receiver = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
    receiver.start()
    try:
        endpoint = f"127.0.0.1:{parent.recv()}"
        sdk_exporter = SDKGrpcSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
        our_exporter = OTLPGrpcSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
        sdk, sdk_cpu, ours, ours_cpu = _alternate(lambda: sdk_exporter.export(spans), lambda: our_exporter.export(spans), len(spans), rounds, batches)
        sdk_exporter.shutdown()
        our_exporter.shutdown()
    finally:
        parent.send("stop")
        receiver.join(10)
    return {
        "export_rounds": rounds,
        "sdk_export_wall_us": sdk,
        "sdk_export_cpu_us": sdk_cpu,
        "hoptrace_export_wall_us": ours,
        "hoptrace_export_cpu_us": ours_cpu,
    }


SECTION = "export"
ROWS: tuple[tuple[str, str, str | None, str], ...] = (
    ("encode sdk", "sdk_encode", None, "the SDK's encode_spans(spans).SerializeToString()"),
    ("encode hoptrace", "hoptrace_encode", "encode sdk", "hoptrace's SpanEncoder.encode(spans) (telemetry/otlp_wire.py): same spans, same bytes"),
    ("export sdk", "sdk_export", None, "the SDK's OTLPSpanExporter.export() over gRPC into a receiver in another process"),
    ("export hoptrace", "hoptrace_export", "export sdk", "hoptrace's OTLPGrpcSpanExporter.export(): same spans, same receiver"),
)
"""Key, figure, baseline, what is timed."""


def _paired(results: dict[str, Any], figure: str, baseline: str) -> list[float]:
    """Per round, FIGURE over BASELINE (CPU µs per span; the two ran one after the other)."""
    return [mine / theirs for mine, theirs in zip(results[f"{figure}_cpu_us"], results[f"{baseline}_cpu_us"], strict=True)]


def measure_section(run: Run, mode: Mode, progress: Callable[[str], None]) -> list[Scenario]:
    """Run both measurements in a fresh process; a scenario per row (CPU µs per span), and the encoder's speedup per round."""
    result = run.file("encoding.json")
    arguments = ["--rounds", str(mode.encode_rounds), "--export-rounds", str(mode.export_rounds), "--result", str(result)]
    child = run.start("encoding", ["python", "-m", "benchmarks.encoding", *arguments], run.env())
    child.wait(600)
    child.check()
    results: dict[str, Any] = json.loads(result.read_text())
    figures = {key: figure for key, figure, _, _ in ROWS}
    common = {"spans_per_batch": results["spans_per_batch"], "identical_bytes": results["identical_bytes"]}
    scenarios = []
    for key, figure, baseline, label in ROWS:
        details = {**common, "wall_us": results[f"{figure}_wall_us"]}
        if baseline is not None:
            details["paired_ratios"] = _paired(results, figure, figures[baseline])
        description = f"{label}: CPU µs per span of the calling thread ({results['spans_per_batch']} spans a batch; wall clock in the details)"
        scenarios.append(Scenario(SECTION, key, label, "µs", results[f"{figure}_cpu_us"], baseline, description, details))
        progress(f"export {key}: {scenarios[-1].median:.1f} µs per span")
    speedup = [1 / ratio for ratio in _paired(results, "hoptrace_encode", "sdk_encode")]
    label = "the SDK encoder's time over hoptrace's, per round"
    scenarios.append(Scenario(SECTION, "encode speedup", label, "x", speedup, description=f"{label} (CPU, same spans, run one after the other)"))
    return scenarios


def main() -> None:
    """Measure, print the medians; with ``--result``, write every round's figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encoding", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--export-rounds", type=int, default=5)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args()
    results = {**measure(rounds=args.rounds), **measure_export(rounds=args.export_rounds)}
    if args.result:
        args.result.write_text(json.dumps(results))
    median = statistics.median
    print(f"µs per span, {results['spans_per_batch']} spans a batch, median of alternated rounds; CPU of the calling thread / wall clock:")
    for key, figure, _, _ in ROWS:
        print(f"  {key:16s} {median(results[f'{figure}_cpu_us']):7.2f} CPU  {median(results[f'{figure}_wall_us']):7.2f} wall")
    print(f"  encoder speedup  {1 / median(_paired(results, 'hoptrace_encode', 'sdk_encode')):.2f}x (CPU, paired per round)")


if __name__ == "__main__":
    main()
