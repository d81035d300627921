"""Tracing as a user of the stock OpenTelemetry instrumentations alone would set it up (no metrics).

OpenTelemetry is imported only when a provider is made, so the uninstrumented baselines that
import this module load none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

CELERY_TRACING_ENV = "BENCH_CELERY_TRACING"
"""``stock`` makes the pool processes of ``celery -A benchmarks.celery_clients:app worker`` stock-traced."""


def stock_tracer_provider(service_name: str) -> TracerProvider:
    """An SDK tracer provider exporting over OTLP gRPC in batches; endpoint and sampler come from ``OTEL_*``."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
