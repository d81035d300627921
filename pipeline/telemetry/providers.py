"""Telemetry set-up from the standard ``OTEL_*`` environment, with bounded flush and shutdown.

:func:`configure` is called explicitly, once per process, by the composition root or by a
worker's start-up (after fork in Celery prefork children); library code never calls it on
import. Exporters, batching, sampling and export intervals come from the ``OTEL_*``
variables, read by the SDK itself wherever it can (see ``hoptrace.pipeline.telemetry.exporters``).

The SDK's exporters retry with backoff for up to ``OTEL_EXPORTER_OTLP_TIMEOUT`` and its
``force_flush`` ignores its timeout, so :meth:`Telemetry.flush` and
:meth:`Telemetry.shutdown` run each provider in a daemon thread and stop waiting at a
deadline: a worker never hangs on an unreachable collector, it drops the telemetry instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    OsResourceDetector,
    OTELResourceDetector,
    ProcessResourceDetector,
    Resource,
    ResourceDetector,
    get_aggregated_resources,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from hoptrace.pipeline.telemetry.exporters import log_exporters, metric_readers_and_exporters, span_exporters
from hoptrace.pipeline.telemetry.loss import CountingBatchSpanProcessor, CountingLogExporter, CountingMetricExporter, TelemetryLoss
from hoptrace.pipeline.telemetry.otlp_exporters import accepts_encoded
from hoptrace.pipeline.telemetry.span_spool import SpanSpool, SpoolMarking, other_files, recover, spool_folder

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
"""A stdlib logging format showing the current trace and span (needs :func:`install_log_correlation`)."""

ENVIRONMENT_VARIABLE = "HOPTRACE_ENVIRONMENT"
"""Names the deployment (``deployment.environment.name``), e.g. ``staging``."""

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Telemetry:
    """The providers built by :func:`configure`, with flush and shutdown that never hang."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider | None
    log_handler: logging.Handler | None = None
    """The handler sending stdlib log records to ``logger_provider``; removed at shutdown."""
    _runs: dict[str, _Calls] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export everything buffered; True when every provider finished within ``timeout_s``.

        A flush still running from an earlier call is awaited instead of starting another, so
        a dead collector does not pile up threads. False after :meth:`shutdown`.
        """
        millis = int(timeout_s * 1000)
        calls = {
            "traces": partial(self.tracer_provider.force_flush, timeout_millis=millis),
            "metrics": partial(self.meter_provider.force_flush, timeout_millis=millis),
        }
        if self.logger_provider is not None:
            calls["logs"] = partial(self.logger_provider.force_flush, timeout_millis=millis)
        with self._lock:
            if "shutdown" in self._runs:
                return False
            started = "flush" not in self._runs or self._runs["flush"].finished()
            if started:
                self._runs["flush"] = _Calls(calls)
            run = self._runs["flush"]
        if (late := run.wait(timeout_s)) and started:
            _logger.warning("telemetry flush incomplete within %.1f s: %s (export goes on)", timeout_s, late)
        return not late

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Flush and shut down every provider within ``timeout_s`` in total; True when all did.

        The SDK's shutdown exports what is still buffered. Idempotent: a later call waits
        (bounded again) for the first call's work.
        """
        calls: dict[str, Callable[[], Any]] = {
            "traces": self.tracer_provider.shutdown,
            "metrics": partial(self.meter_provider.shutdown, timeout_millis=int(timeout_s * 1000)),
        }
        if self.logger_provider is not None:
            calls["logs"] = self.logger_provider.shutdown
        with self._lock:
            started = "shutdown" not in self._runs
            if started:
                atexit.unregister(self.shutdown)
                if self.log_handler is not None:
                    logging.getLogger().removeHandler(self.log_handler)
                self._runs["shutdown"] = _Calls(calls)
            run = self._runs["shutdown"]
        if (late := run.wait(timeout_s)) and started:
            _logger.warning("telemetry shutdown incomplete within %.1f s: %s not exported, dropped", timeout_s, late)
        return not late


def configure(
    service_name: str,
    *,
    set_global: bool = True,
    resource_attributes: Mapping[str, str] | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    metric_exporters: Sequence[MetricExporter] = (),
    spool: Path | None = None,
) -> Telemetry:
    """Build tracer, meter and (when ``OTEL_LOGS_EXPORTER`` asks) logger providers.

    ``service_name`` is used unless ``OTEL_SERVICE_NAME`` is set. ``span_processors``,
    ``metric_readers`` and ``metric_exporters`` (read periodically) are added to the ones chosen
    from the environment (tests pass in-memory ones); hoptrace's histograms reach every one of
    them (``metric_producer``). With ``set_global`` the providers become the global ones, which the
    API allows once per process: when an SDK is set up already (``opentelemetry-instrument``, a
    distro, the application), that one is used, with the extra processors and readers added, so a
    process never runs two. Shutdown is registered ``atexit`` (bounded, 5 s). With ``spool`` (a folder), ended spans
    are kept on disk until exported and a dead process's are exported (``span_spool``).
    """
    existing = global_telemetry() if set_global else None
    if existing is not None:
        _logger.debug("OpenTelemetry is set up already in this process; hoptrace uses it (service %s is not applied)", service_name)
        for processor in span_processors:
            existing.tracer_provider.add_span_processor(processor)
        for reader in [*metric_readers, *(PeriodicExportingMetricReader(exporter) for exporter in metric_exporters)]:
            existing.meter_provider.add_metric_reader(reader)
        return existing
    resource = build_resource(service_name, resource_attributes)
    loss = TelemetryLoss(service_name)
    chosen_readers, chosen_exporters = metric_readers_and_exporters()
    periodic = [PeriodicExportingMetricReader(CountingMetricExporter(exporter, loss)) for exporter in [*chosen_exporters, *metric_exporters]]
    meter_provider = MeterProvider([*chosen_readers, *periodic, *metric_readers], resource=resource, shutdown_on_exit=False)
    loss.register(meter_provider)
    # No sampler given: the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG itself.
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for processor in [*_batch_processors(span_exporters(), loss, spool, service_name), *span_processors]:
        tracer_provider.add_span_processor(processor)
    install_log_correlation()
    logger_provider, handler = None, None
    if exporters := log_exporters():
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        for exporter in exporters:
            logger_provider.add_log_record_processor(BatchLogRecordProcessor(CountingLogExporter(exporter, loss)))
        with warnings.catch_warnings():  # its successor is in a package hoptrace does not depend on
            warnings.simplefilter("ignore", DeprecationWarning)
            handler = LoggingHandler(logger_provider=logger_provider)
        handler.addFilter(lambda record: not record.name.startswith(("opentelemetry", __name__)))
        logging.getLogger().addHandler(handler)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        if logger_provider is not None:
            _logs.set_logger_provider(logger_provider)
    telemetry = Telemetry(tracer_provider, meter_provider, logger_provider, handler)
    atexit.register(telemetry.shutdown)
    if set_global:
        global _global
        _global = telemetry
    return telemetry


def _batch_processors(exporters: Sequence[SpanExporter], loss: TelemetryLoss, spool: Path | None, service_name: str) -> list[SpanProcessor]:
    """A batch processor per exporter; with SPOOL and one exporter of hoptrace's, the span spool before it, and dead processes' spans recovered.

    The recovery runs on a thread of its own, started only when the spool folder holds another process's file.
    """
    if spool is None or len(exporters) != 1 or not accepts_encoded(exporters[0]):
        return [CountingBatchSpanProcessor(exporter, loss) for exporter in exporters]
    (exporter,) = exporters
    folder = spool_folder(spool, service_name, exporter)
    spooled = SpanSpool(folder)
    others = other_files(folder, spooled.path)
    if others:  # alone in its folder, a process has nothing to recover: no thread
        threading.Thread(target=recover, args=(others, exporter), name="hoptrace-spool-recovery", daemon=True).start()
    return [spooled, CountingBatchSpanProcessor(SpoolMarking(exporter, spooled), loss, spooled.disposed)]


_global: Telemetry | None = None


def global_telemetry() -> Telemetry | None:
    """The global providers with hoptrace's bounded flush and shutdown, whoever built them; None without an SDK.

    Providers that another configurator built (opentelemetry-distro's, a user's) are adopted the
    first time: their bounded shutdown is registered at exit, ahead of the SDK's own unbounded one.
    """
    global _global
    if _global is None:
        tracer_provider, meter_provider = trace.get_tracer_provider(), metrics.get_meter_provider()
        if isinstance(tracer_provider, TracerProvider) and isinstance(meter_provider, MeterProvider):
            logger_provider = _logs.get_logger_provider()
            _global = Telemetry(tracer_provider, meter_provider, logger_provider if isinstance(logger_provider, LoggerProvider) else None)
            atexit.register(_global.shutdown)
    return _global


def build_resource(service_name: str, attributes: Mapping[str, str] | None = None) -> Resource:
    """The resource of this process, by increasing precedence.

    SDK defaults and process, OS and host detectors; then ``service.name``,
    ``service.version``, ``deployment.environment.name`` (from ``HOPTRACE_ENVIRONMENT``)
    and ``attributes``; then ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``.
    """
    # One instance per process (Celery pool processes included), so that series from several
    # processes of one service never merge into one (the Collector's Prometheus exporter keys on it).
    own = {SERVICE_NAME: service_name, SERVICE_INSTANCE_ID: str(uuid.uuid4())}
    try:
        own[SERVICE_VERSION] = version("hoptrace")
    except PackageNotFoundError:
        pass
    if environment := os.environ.get(ENVIRONMENT_VARIABLE, "").strip():
        own["deployment.environment.name"] = environment
    own.update(attributes or {})
    # The host detector's class is private in SDK 1.45; its entry point is the public name.
    host: list[ResourceDetector] = [entry.load()() for entry in entry_points(group="opentelemetry_resource_detector", name="host")]
    detected = get_aggregated_resources([ProcessResourceDetector(), OsResourceDetector(), *host], Resource.create())
    return detected.merge(Resource(own)).merge(OTELResourceDetector().detect())


class _CorrelatingRecordFactory:
    """A log record factory adding ``trace_id`` and ``span_id`` (hex, or "0" outside a span)."""

    def __init__(self, wrapped: Callable[..., logging.LogRecord]) -> None:
        self._wrapped = wrapped

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self._wrapped(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        record.trace_id = format_trace_id(context.trace_id) if context.is_valid else "0"
        record.span_id = format_span_id(context.span_id) if context.is_valid else "0"
        return record


def install_log_correlation() -> None:
    """Give every stdlib log record ``trace_id`` and ``span_id`` fields (see :data:`LOG_FORMAT`).

    Uses a log record factory, so records of every logger carry them; installing twice is a no-op.
    """
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _CorrelatingRecordFactory):
        logging.setLogRecordFactory(_CorrelatingRecordFactory(factory))


class _Calls:
    """Named calls, each started at once in a daemon thread, awaited up to a deadline."""

    def __init__(self, calls: Mapping[str, Callable[[], Any]]) -> None:
        self._succeeded: set[str] = set()
        self._threads = {
            name: threading.Thread(target=self._run, args=(name, call), name=f"hoptrace-telemetry-{name}", daemon=True)
            for name, call in calls.items()
        }
        for thread in self._threads.values():
            thread.start()

    def _run(self, name: str, call: Callable[[], Any]) -> None:
        try:
            if call() is not False:
                self._succeeded.add(name)
        except Exception as error:  # noqa: BLE001 - an exporter's failure must not reach the caller
            _logger.debug("telemetry %s failed: %r", name, error)

    def finished(self) -> bool:
        """True when no call is running any more."""
        return not any(thread.is_alive() for thread in self._threads.values())

    def wait(self, timeout_s: float) -> str:
        """Wait for all calls up to ``timeout_s``; the comma-separated names of those not done."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        return ", ".join(name for name in self._threads if name not in self._succeeded)
