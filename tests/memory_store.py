"""An in-memory store of received telemetry, for the tests and benchmarks (the product keeps it in ``hoptrace.view.sqlite_store``).

Tests read spans, metric points and logs from ``TelemetryStore``; it is the receiver's ``TelemetrySink``
(``hoptrace.view.receiver``), as the bounded on-disk store of ``hoptrace watch`` is.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from hoptrace.view.otlp_decode import MetricPoint, ReceivedLog, ReceivedSpan


class TelemetryStore:
    """Thread-safe in-memory store of received spans, metric points and logs, in arrival order."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.RLock())
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[MetricPoint] = []
        self._logs: list[ReceivedLog] = []

    def add_spans(self, spans: Iterable[ReceivedSpan]) -> None:
        """Keep received spans and wake up waiters."""
        self._add(self._spans, spans)

    def add_metrics(self, points: Iterable[MetricPoint]) -> None:
        """Keep received metric data points and wake up waiters."""
        self._add(self._metrics, points)

    def add_logs(self, logs: Iterable[ReceivedLog]) -> None:
        """Keep received log records and wake up waiters."""
        self._add(self._logs, logs)

    def _add(self, records: list[Any], new: Iterable[Any]) -> None:
        """Append to one of the record lists and wake up waiters."""
        with self._changed:
            records.extend(new)
            self._changed.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._changed:
            return list(self._spans)

    def metrics(self, name: str | None = None) -> list[MetricPoint]:
        """Every metric data point received so far, or only those of the metric called ``name``."""
        with self._changed:
            return [point for point in self._metrics if name is None or point.name == name]

    def logs(self) -> list[ReceivedLog]:
        """Every log record received so far."""
        with self._changed:
            return list(self._logs)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """The spans received so far grouped by trace id, each trace's spans ordered by start time."""
        grouped: defaultdict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in sorted(self.spans(), key=lambda span: span.start_ns):
            grouped[span.trace_id].append(span)
        return dict(grouped)

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._changed:
            self._spans.clear()
            self._metrics.clear()
            self._logs.clear()
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[TelemetryStore], bool], timeout: float) -> bool:
        """Block until ``predicate(store)`` holds (checked on every change) or ``timeout`` seconds pass.

        Returns whether the predicate held. The predicate runs under the store's lock and may
        call the store's query methods, but must not block.
        """
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)
