"""Collectors for benchmarks: one that accepts and discards everything, and two that are down.

* ``discarding_receiver()``: the project's real ``OtlpReceiver`` (gRPC and HTTP) with a sink
  that only counts, so an export costs the exporter exactly what it costs against a collector.
* ``RefusingEndpoint``: a loopback port that is bound but not listening, so every connection
  is refused at once (a collector that is not running).
* ``SilentEndpoint``: a loopback port that accepts TCP connections and never answers (a hung
  collector); exporters wait for their timeout.
* ``DiscardSpanExporter`` / ``DiscardMetricExporter``: in-process exporters that drop what they
  get, for the CPU measurements.
* ``DiscardSender``: a publisher's ``Sender`` whose broker accepts every message at once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from hoptrace.producers.publisher import Done
from hoptrace.view.receiver import OtlpReceiver

LOOPBACK = "127.0.0.1"


class DiscardSink:
    """A ``TelemetrySink`` that keeps nothing, only counts what arrived."""

    def __init__(self) -> None:
        self.received = {"spans": 0, "metric_points": 0, "logs": 0}
        self._lock = threading.Lock()

    def _count(self, kind: str, records: Iterable[Any]) -> None:
        amount = len(records) if isinstance(records, Sequence) else sum(1 for _ in records)
        with self._lock:
            self.received[kind] += amount

    def add_spans(self, spans: Iterable[Any]) -> None:
        """Count received spans, drop them."""
        self._count("spans", spans)

    def add_metrics(self, points: Iterable[Any]) -> None:
        """Count received metric points, drop them."""
        self._count("metric_points", points)

    def add_logs(self, logs: Iterable[Any]) -> None:
        """Count received log records, drop them."""
        self._count("logs", logs)


def discarding_receiver() -> tuple[OtlpReceiver, DiscardSink]:
    """A started OTLP receiver on ephemeral loopback ports whose sink drops everything; stop it when done."""
    sink = DiscardSink()
    receiver = OtlpReceiver(sink, host=LOOPBACK)
    receiver.start()
    return receiver, sink


class RefusingEndpoint:
    """A loopback port held bound but never listening: connecting is refused. A context manager."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind((LOOPBACK, 0))
        self.port: int = self._socket.getsockname()[1]

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` for an OTLP gRPC exporter."""
        return f"http://{LOOPBACK}:{self.port}"

    def close(self) -> None:
        """Release the port."""
        self._socket.close()

    def __enter__(self) -> RefusingEndpoint:
        """The endpoint."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Release the port."""
        self.close()


class SilentEndpoint:
    """A loopback port that accepts connections, reads and drops what is sent, and never answers. A context manager."""

    def __init__(self) -> None:
        self._server = socket.create_server((LOOPBACK, 0), backlog=64)
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-collector", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` for an OTLP gRPC exporter."""
        return f"http://{LOOPBACK}:{self.port}"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                pass
            except OSError:
                return
            else:
                connection.setblocking(False)
                self._connections.append(connection)
            for connection in list(self._connections):  # drain what clients sent, answer nothing
                try:
                    while connection.recv(65536):
                        pass
                except BlockingIOError:
                    pass
                except OSError:
                    self._connections.remove(connection)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stopping.set()
        self._thread.join(2)
        self._server.close()
        for connection in self._connections:
            connection.close()

    def __enter__(self) -> SilentEndpoint:
        """The endpoint."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Close."""
        self.close()


class DiscardSender:
    """A ``Sender`` whose broker accepts everything at once; keeps the last headers it was given."""

    headers: Mapping[str, str] = {}

    def send(self, transport: object, message: object, headers: Mapping[str, str], done: Done) -> None:
        """Accept MESSAGE: DONE hears it at once, with no broker attributes."""
        self.headers = headers
        done({}, None)


class DiscardSpanExporter(SpanExporter):
    """Drops every span; counts them."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Count SPANS and drop them."""
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


class DiscardMetricExporter(MetricExporter):
    """Drops every metrics export."""

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Drop METRICS_DATA."""
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""


Collector = Literal["up", "refused", "silent", "none"]
"""Where a child exports: the discarding receiver, a refusing port, a silent port, or nowhere (exporters ``none``)."""


class Collectors:
    """The collectors of one run: a discarding receiver (up), a refusing port and a silent port (down)."""

    def __init__(self) -> None:
        """Start all three on loopback."""
        self.receiver, self.sink = discarding_receiver()
        self.refusing = RefusingEndpoint()
        self.silent = SilentEndpoint()

    def endpoint(self, collector: Collector) -> str:
        """The OTLP gRPC endpoint of COLLECTOR."""
        return {"up": self.receiver.grpc_endpoint, "refused": self.refusing.endpoint, "silent": self.silent.endpoint}[collector]

    def env(self, collector: Collector, sampling: float = 1.0) -> dict[str, str]:
        """``OTEL_*`` variables: traces and metrics over OTLP gRPC to COLLECTOR, parent-based sampling at SAMPLING."""
        if collector == "none":
            return {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint(collector),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }
        if sampling < 1.0:
            env.update({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": f"{sampling:g}"})
        return env

    def close(self) -> None:
        """Stop the receiver and release both ports."""
        self.receiver.stop()
        self.refusing.close()
        self.silent.close()

    def __enter__(self) -> Collectors:
        """The collectors."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Close."""
        self.close()
