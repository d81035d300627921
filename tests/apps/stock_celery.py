"""A Celery app traced only by the stock ``CeleryInstrumentor``, standing in for a stage hoptrace forwards to.

It knows nothing of hoptrace: it registers one task under the name hoptrace gives a Celery
stage (``TEST_TASK``, e.g. ``hoptrace.orders.charge``) on ``TEST_QUEUE``. Each prefork child
builds an SDK tracer provider after the fork, exporting over OTLP to
``OTEL_EXPORTER_OTLP_ENDPOINT`` (the test's receiver), and instruments Celery with it; it
flushes when the child exits. The task writes what it saw (payload, current span, baggage)
to the Redis list ``TEST_DONE_KEY`` so the test can check the task body ran inside the span.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from opentelemetry import baggage, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

REDIS_URL = os.environ.get("HOPTRACE_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("TEST_QUEUE", "stock")
TASK = os.environ.get("TEST_TASK", "stock.record")
DONE_KEY = os.environ.get("TEST_DONE_KEY", "test:stock:done")

app = Celery("stock", broker=REDIS_URL, set_as_current=False)
app.conf.update(task_ignore_result=True, task_default_queue=QUEUE, worker_hijack_root_logger=False)

_provider: TracerProvider | None = None


@worker_process_init.connect(weak=False)
def _start_tracing(**_: Any) -> None:
    """In each pool process, after the fork: an SDK provider exporting over OTLP, and the stock instrumentation."""
    global _provider
    _provider = TracerProvider(resource=Resource.create({"service.name": "stock-celery"}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"], insecure=True)))
    CeleryInstrumentor().instrument(tracer_provider=_provider)


@worker_process_shutdown.connect(weak=False)
def _stop_tracing(**_: Any) -> None:
    """Export what is buffered before the pool process exits."""
    if _provider is not None:
        _provider.shutdown()


def record(payload: dict[str, Any]) -> None:
    """Note the payload, the span current in the task body, and the job id from baggage."""
    span = trace.get_current_span().get_span_context()
    note = {
        "payload": payload,
        "trace_id": format_trace_id(span.trace_id),
        "span_id": format_span_id(span.span_id),
        "job_id": baggage.get_baggage("hoptrace.job.id"),
    }
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.rpush(DONE_KEY, json.dumps(note))
    finally:
        client.close()


app.task(record, name=TASK, queue=QUEUE, ignore_result=True)
