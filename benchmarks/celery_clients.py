"""The measured Celery processes: the baselines' worker app, and a publisher of every variant.

``app`` is what the uninstrumented and stock baselines run with ``celery -A
benchmarks.celery_clients:app worker``: the Celery app hoptrace itself builds
(``hoptrace.clients.celery.app.celery_app``: Redis broker, late acks, prefetch 4, no results) with one
plain task, under the name and queue of the ``celery_hop`` stage, that calls the stage's own
trivial handler. With ``BENCH_CELERY_TRACING=stock`` each prefork child makes an SDK tracer
provider exporting over OTLP gRPC (endpoint and sampler from ``OTEL_*``) and instruments
Celery with the stock ``CeleryInstrumentor`` after the fork, and flushes it when it exits.

``python -m benchmarks.celery_clients --tracing {none,stock,hoptrace} --count N --result PATH``
publishes N payloads of about 1 KB and writes ``{"first": epoch_s, "last": epoch_s, "cpu_s": s}``:

* ``none``: ``app.send_task`` of the plain task;
* ``stock``: the same with the stock ``CeleryInstrumentor`` (a PRODUCER span per publish);
* ``hoptrace``: ``Runtime.publisher`` (``PipelinePublisher`` + ``CelerySender``), as ``hoptrace publish``.

The first publish waits for the start signal (``BENCH_GO``, see ``benchmarks.completion``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from benchmarks.completion import wait_for_go
from benchmarks.pipelines import CELERY_SPEC, STAGE, payload
from benchmarks.stock import CELERY_TRACING_ENV, stock_tracer_provider
from hoptrace.clients.celery.app import celery_app
from hoptrace.loader import load_pipeline
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import CeleryTransport, Payload, Pipeline, Stage


def _stage() -> tuple[Pipeline, Stage, CeleryTransport]:
    settings = Settings()
    pipeline = load_pipeline(CELERY_SPEC, settings.namespace)
    stage = pipeline[STAGE]
    assert isinstance(stage.transport, CeleryTransport)
    return pipeline, stage, stage.transport


def _plain_app() -> Celery:
    """hoptrace's Celery app for the stage, with a plain (uninstrumented) task calling the stage's handler."""
    pipeline, stage, transport = _stage()
    plain = celery_app(pipeline, Settings())
    handler = stage.handler

    def run_plain(message: Payload) -> None:
        handler(message, None)  # type: ignore[arg-type]

    plain.task(run_plain, name=transport.task, queue=transport.queue, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    return plain


app = _plain_app()
_shutdowns: list[Callable[[], Any]] = []


def instrument_stock(service_name: str) -> Callable[[], Any]:
    """Trace Celery in this process with the stock CeleryInstrumentor; returns the provider's shutdown."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    provider = stock_tracer_provider(service_name)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    return provider.shutdown


@worker_process_init.connect(weak=False)
def _trace_pool_process(**_: Any) -> None:
    if os.environ.get(CELERY_TRACING_ENV) == "stock":
        _shutdowns.append(instrument_stock("bench-celery-worker"))


@worker_process_shutdown.connect(weak=False)
def _flush_pool_process(**_: Any) -> None:
    while _shutdowns:
        _shutdowns.pop()()


def publish(tracing: str, count: int) -> dict[str, float]:
    """Publish COUNT payloads to the stage's queue as TRACING says; the first and last publish times, the CPU time between."""
    pipeline, stage, transport = _stage()
    close: Callable[[], Any] = lambda: None  # noqa: E731
    if tracing == "hoptrace":
        from hoptrace.runtime import Runtime

        runtime = Runtime(pipeline, Settings(), "publisher", celery_app(pipeline, Settings()))
        publisher = runtime.publisher
        send: Callable[[dict[str, Any]], object] = lambda message: publisher.publish(stage, message)  # noqa: E731
        close = runtime.shutdown
    else:
        if tracing == "stock":
            close = instrument_stock("bench-celery-publisher")
        send = lambda message: app.send_task(transport.task, args=(message,), queue=transport.queue)  # noqa: E731
    wait_for_go()
    first, cpu = time.time(), time.process_time()
    for number in range(count):
        send(payload(number))
    last, cpu = time.time(), time.process_time() - cpu
    close()
    return {"first": first, "last": last, "cpu_s": cpu}


def main() -> None:
    """Parse the command line, publish, write the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.celery_clients", description="Publish benchmark tasks.")
    parser.add_argument("--tracing", choices=("none", "stock", "hoptrace"), default="none")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    args.result.write_text(json.dumps(publish(args.tracing, args.count)))


if __name__ == "__main__":
    main()
