"""Export cost per span: the SDK's OTLP encoder against hoptrace's wire encoder, on the same spans.

``python -m benchmarks.encoding`` prints µs per span for (a) the SDK's
``encode_spans(spans).SerializeToString()`` and (b) ``SpanEncoder.encode(spans)``, measured
alternately in rounds (A, B, A, B, ...) on batches of realistic hoptrace spans: a CONSUMER
"process" span with a remote parent and 13 attributes (a unique job id, offset and message
id per span) and a PRODUCER "publish" span with 7 (a unique job id). Medians over rounds
and their ratio are reported, and the end-to-end cost of ``export()`` through the gRPC
exporters into a receiver in another process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent import futures
from multiprocessing.connection import Connection

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as SDKGrpcSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context

from hoptrace.pipeline.otlp_exporters import OTLPGrpcSpanExporter
from hoptrace.pipeline.otlp_wire import SpanEncoder


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


def measure(spans_per_batch: int = 512, rounds: int = 9, batches: int = 4) -> dict[str, float]:
    """Median µs per span of the SDK encoder (``sdk_us``) and of `SpanEncoder` (``hoptrace_us``), and ``speedup``.

    Each round times ``batches`` encodings of one batch with the SDK, then with hoptrace's
    encoder; the two therefore share the machine's load.
    """
    spans = realistic_spans(spans_per_batch)
    encoder = SpanEncoder()
    assert encoder.encode(spans) == encode_spans(spans).SerializeToString()
    sdk, _, ours, _ = _alternate(lambda: encode_spans(spans).SerializeToString(), lambda: encoder.encode(spans), len(spans), rounds, batches)
    sdk_us, ours_us = statistics.median(sdk), statistics.median(ours)
    return {"spans_per_batch": spans_per_batch, "rounds": rounds, "sdk_us": sdk_us, "hoptrace_us": ours_us, "speedup": sdk_us / ours_us}


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


def measure_export(spans_per_batch: int = 512, rounds: int = 5, batches: int = 2) -> dict[str, float]:
    """Median µs per span of ``export()`` into a gRPC receiver in a child process: the SDK's exporter against `OTLPGrpcSpanExporter`.

    ``*_export_us`` is the wall time of the call (encoding, the RPC, the receiver's parsing);
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
    median = statistics.median
    return {
        "sdk_export_us": median(sdk),
        "hoptrace_export_us": median(ours),
        "sdk_export_cpu_us": median(sdk_cpu),
        "hoptrace_export_cpu_us": median(ours_cpu),
        "export_speedup": median(sdk) / median(ours),
    }


if __name__ == "__main__":
    results = measure()
    print(f"encode+serialize, {results['spans_per_batch']} spans per batch, median of {results['rounds']} alternated rounds:")
    print(f"  SDK encode_spans().SerializeToString()  {results['sdk_us']:7.2f} µs/span")
    print(f"  hoptrace SpanEncoder.encode()           {results['hoptrace_us']:7.2f} µs/span   ({results['speedup']:.2f}x faster)")
    exported = measure_export()
    print("export() through gRPC into a receiver in another process (wall: encode + RPC + receiver parse; CPU: exporting thread):")
    print(
        f"  SDK OTLPSpanExporter                    {exported['sdk_export_us']:7.2f} µs/span wall  {exported['sdk_export_cpu_us']:7.2f} µs/span CPU"
    )
    print(
        f"  hoptrace OTLPGrpcSpanExporter           {exported['hoptrace_export_us']:7.2f} µs/span wall  "
        f"{exported['hoptrace_export_cpu_us']:7.2f} µs/span CPU   ({exported['export_speedup']:.2f}x faster)"
    )
    print(json.dumps({**results, **exported}))
