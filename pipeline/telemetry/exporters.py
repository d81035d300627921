"""Exporter selection from the standard ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` variables.

A variable holds a comma-separated list of names. ``otlp`` means the OTLP exporter of the
protocol in ``OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``
(``grpc`` by default, or ``http/protobuf``); ``none`` means no exporter at all; any other
name is looked up in the entry-point group the SDK's own auto-configuration uses
(``opentelemetry_traces_exporter`` …), so ``console`` and third-party exporters work too.

Exporters are built without arguments: endpoint, headers, timeout, compression and
certificates are read by the exporters themselves from ``OTEL_EXPORTER_OTLP_*``.

Spans sent over OTLP (either protocol) go through hoptrace's exporters
(``telemetry.otlp_exporters``): the SDK's, with an encoder several times faster; set
``HOPTRACE_SPAN_ENCODER=sdk`` to use the SDK's own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Literal, TypeVar

from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
from opentelemetry.sdk.trace.export import SpanExporter

Signal = Literal["traces", "metrics", "logs"]
"""The three signals, spelled as in the ``OTEL_*`` variable names (lower case)."""

DEFAULT_EXPORTERS: dict[Signal, str] = {"traces": "otlp", "metrics": "otlp", "logs": "none"}
"""The exporter names used when a signal's ``OTEL_*_EXPORTER`` variable is unset or empty."""

OTLP_PROTOCOLS: dict[str, str] = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
"""Supported OTLP protocols and the entry-point name of their exporters."""

_logger = logging.getLogger(__name__)
_ExporterT = TypeVar("_ExporterT")


def otlp_protocol(signal: Signal) -> str:
    """The OTLP protocol configured for ``signal``: its own variable first, then the shared one."""
    value = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "").strip()
    return (value or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip() or "grpc").lower()


def exporter_names(signal: Signal) -> list[str]:
    """Entry-point names of the exporters chosen for ``signal``, without duplicates.

    Empty when the list contains ``none``; an ``otlp`` of an unsupported protocol is left
    out with a warning.
    """
    raw = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip() or DEFAULT_EXPORTERS[signal]
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    if "none" in names:
        return []
    chosen: list[str] = []
    for name in dict.fromkeys(names):
        if name == "otlp":
            protocol = otlp_protocol(signal)
            if protocol not in OTLP_PROTOCOLS:
                _logger.warning(
                    "OTLP protocol %r for %s is not supported (use one of %s); no OTLP export",
                    protocol,
                    signal,
                    ", ".join(OTLP_PROTOCOLS),
                )
                continue
            name = OTLP_PROTOCOLS[protocol]
        chosen.append(name)
    return chosen


ENCODER_VARIABLE = "HOPTRACE_SPAN_ENCODER"
"""``sdk`` makes OTLP span exporters use the SDK's encoder instead of hoptrace's."""


def _factory(signal: Signal, name: str) -> Callable[[], object] | None:
    """What builds the exporter NAME of SIGNAL: hoptrace's OTLP span exporters, else the entry point of that name."""
    if signal == "traces" and name in OTLP_PROTOCOLS.values() and os.environ.get(ENCODER_VARIABLE, "").strip().lower() != "sdk":
        from hoptrace.pipeline.telemetry import otlp_exporters

        return otlp_exporters.OTLPGrpcSpanExporter if name == OTLP_PROTOCOLS["grpc"] else otlp_exporters.OTLPHttpSpanExporter
    entry = next(iter(entry_points(group=f"opentelemetry_{signal}_exporter", name=name)), None)
    return None if entry is None else lambda: entry.load()()


def _build(signal: Signal, kind: type[_ExporterT] | tuple[type, ...]) -> list[_ExporterT]:
    """Build the chosen exporters of ``signal``; one that cannot be built is skipped with a warning."""
    exporters: list[_ExporterT] = []
    for name in exporter_names(signal):
        factory = _factory(signal, name)
        if factory is None:
            _logger.warning("unknown %s exporter %r in OTEL_%s_EXPORTER, ignored", signal, name, signal.upper())
            continue
        try:
            exporter = factory()
        except Exception as error:  # noqa: BLE001 - a bad exporter must not stop the worker
            _logger.warning("cannot create %s exporter %r, ignored: %s", signal, name, error)
            continue
        if isinstance(exporter, kind):
            exporters.append(exporter)
        else:
            kinds = " or ".join(each.__name__ for each in (kind if isinstance(kind, tuple) else (kind,)))
            _logger.warning("%s exporter %r is not a %s, ignored", signal, name, kinds)
    return exporters


def span_exporters() -> list[SpanExporter]:
    """The span exporters chosen by ``OTEL_TRACES_EXPORTER`` (default ``otlp``)."""
    return _build("traces", SpanExporter)


def metric_readers_and_exporters() -> tuple[list[MetricReader], list[MetricExporter]]:
    """What ``OTEL_METRICS_EXPORTER`` (default ``otlp``) chose: readers as they are (``prometheus`` is a
    pull reader), and exporters for a periodic reader to push to."""
    chosen = _build("metrics", (MetricReader, MetricExporter))
    return [each for each in chosen if isinstance(each, MetricReader)], [each for each in chosen if isinstance(each, MetricExporter)]


def log_exporters() -> list[LogRecordExporter]:
    """The log record exporters chosen by ``OTEL_LOGS_EXPORTER`` (default ``none`` in hoptrace)."""
    return _build("logs", LogRecordExporter)
