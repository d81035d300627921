"""Telemetry the process could not send, counted and said once per outage, never silent.

Spans, metric points and log records are lost in two places: a batch processor's queue that
is full (the collector is down or slow longer than the queue absorbs: ``OTEL_BSP_MAX_QUEUE_SIZE``,
2048 spans by default, is about 2 s of a worker ending 1,000 spans a second) and an export that
fails after the exporter's own retries (``OTEL_EXPORTER_OTLP_TIMEOUT``). Both are counted in
``hoptrace.telemetry.dropped`` per ``hoptrace.telemetry.signal`` (``traces``, ``metrics``,
``logs``); the first loss of an outage is logged with what to check, and its end with the total.
The counter is cumulative, so what was lost during an outage reaches the backend once the
collector is back.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from hoptrace.pipeline import semconv
from hoptrace.pipeline.instruments import Tally

logger = logging.getLogger(__name__)


class TelemetryLoss:
    """What one process lost, per signal, and whether each signal's export is failing now."""

    def __init__(self, service: str) -> None:
        """Nothing lost yet of SERVICE's telemetry (its ``service.name``, named in the log lines)."""
        self.service = service
        self.tally = Tally()
        self._outage: dict[str, int] = {}
        self._lock = threading.Lock()

    def register(self, meter_provider: MeterProvider) -> None:
        """Report the counts as ``hoptrace.telemetry.dropped`` on METER_PROVIDER."""
        meter = meter_provider.get_meter("hoptrace")
        meter.create_observable_counter(semconv.TELEMETRY_DROPPED, [self.tally.observe], "{item}", "Spans, metric points and log records lost.")

    def dropped(self, signal: str, count: int, why: str) -> None:
        """COUNT items of SIGNAL were lost (WHY: ``queue_full`` or ``export_failed``); the first of an outage is logged."""
        if count <= 0:
            return
        self.tally.add(count, {semconv.TELEMETRY_SIGNAL: signal})
        with self._lock:
            first = signal not in self._outage
            self._outage[signal] = self._outage.get(signal, 0) + count
        if first:
            logger.warning(
                "dropping %s of %s (%s): the collector does not take them; check OTEL_EXPORTER_OTLP_ENDPOINT and the collector."
                " Counted in %s; one line when export works again",
                signal,
                self.service,
                why,
                semconv.TELEMETRY_DROPPED,
            )

    def exported(self, signal: str) -> None:
        """An export of SIGNAL succeeded: an outage, if one was under way, is over (logged with what it cost)."""
        if signal not in self._outage:
            return
        with self._lock:
            lost = self._outage.pop(signal, 0)
        logger.warning("%s export of %s works again; %d %s were dropped during the outage", signal, self.service, lost, signal)


class CountingSpanExporter(SpanExporter):
    """A span exporter whose failed exports are counted as lost spans."""

    def __init__(self, exporter: SpanExporter, loss: TelemetryLoss) -> None:
        """Export through EXPORTER, counting into LOSS."""
        self.exporter = exporter
        self._loss = loss

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export SPANS; a failure (or an exception) loses them all."""
        try:
            result = self.exporter.export(spans)
        except Exception:
            self._loss.dropped("traces", len(spans), "export_failed")
            raise
        if result is SpanExportResult.SUCCESS:
            self._loss.exported("traces")
        else:
            self._loss.dropped("traces", len(spans), "export_failed")
        return result

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter):
    """A metric exporter whose failed exports are counted as lost data points."""

    def __init__(self, exporter: MetricExporter, loss: TelemetryLoss) -> None:
        """Export through EXPORTER (with its temporality and aggregation preferences), counting into LOSS."""
        super().__init__(preferred_temporality=exporter._preferred_temporality, preferred_aggregation=exporter._preferred_aggregation)  # noqa: SLF001
        self.exporter = exporter
        self._loss = loss

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Export METRICS_DATA; a failure loses every point in it."""
        result = self.exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result is MetricExportResult.SUCCESS:
            self._loss.exported("metrics")
        else:
            metrics = [metric for resource in metrics_data.resource_metrics for scope in resource.scope_metrics for metric in scope.metrics]
            points = sum(len(metric.data.data_points) for metric in metrics)
            self._loss.dropped("metrics", points, "export_failed")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


class CountingLogExporter(LogRecordExporter):
    """A log record exporter whose failed exports are counted as lost records."""

    def __init__(self, exporter: LogRecordExporter, loss: TelemetryLoss) -> None:
        """Export through EXPORTER, counting into LOSS."""
        self.exporter = exporter
        self._loss = loss

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Export BATCH; a failure loses it all."""
        result = self.exporter.export(batch)
        if result is LogRecordExportResult.SUCCESS:
            self._loss.exported("logs")
        else:
            self._loss.dropped("logs", len(batch), "export_failed")
        return result

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)


class _CountingQueue(collections.deque):  # type: ignore[type-arg]
    """A batch processor's bounded queue that makes room for a new span itself, so each span it drops is counted exactly once.

    The SDK checks for a full queue before it appends, but its export thread may take a batch
    in between: counting at the check counts spans that were exported after all. Here the
    oldest span is popped (as a full deque would drop it) only while the queue is full, and
    only a span really popped is counted.
    """

    def __init__(self, maxlen: int, dropped: Callable[[], None]) -> None:
        super().__init__((), maxlen)
        self._dropped = dropped

    def appendleft(self, item: Any) -> None:
        """Add ITEM at the new end; when the queue is full, drop (and count) the oldest first."""
        if self.maxlen is not None and len(self) >= self.maxlen:
            try:
                self.pop()
            except IndexError:  # the export thread emptied it meanwhile: nothing lost
                pass
            else:
                self._dropped()
        super().appendleft(item)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch span processor, counting each span it drops because its queue is full."""

    def __init__(self, exporter: SpanExporter, loss: TelemetryLoss, dropped: Callable[[int], None] | None = None) -> None:
        """Batch into EXPORTER (wrapped to count failed exports) with the ``OTEL_BSP_*`` settings; count into LOSS (and DROPPED, when given)."""
        super().__init__(CountingSpanExporter(exporter, loss))

        def drop() -> None:
            loss.dropped("traces", 1, "queue_full")
            if dropped is not None:
                dropped(1)

        # The SDK's queue (a bounded deque, still empty) is replaced by one that counts what it drops.
        queue = getattr(self._batch_processor, "_queue", None)
        if isinstance(queue, collections.deque) and queue.maxlen is not None:
            self._batch_processor._queue = _CountingQueue(queue.maxlen, drop)  # noqa: SLF001
