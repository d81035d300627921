"""Drop-in instrumentation: hoptrace for Celery apps, kafka-python, confluent-kafka and aiokafka code that never import it.

Zero-code, with hoptrace installed::

    opentelemetry-instrument celery -A proj worker
    opentelemetry-instrument python consumer.py

From Python, for those who set up OpenTelemetry in code::

    import hoptrace
    hoptrace.instrument()                      # every library below that is installed
    HoptraceCeleryInstrumentor().instrument()  # or one by one

The instrumentors live in their clients' folders (``hoptrace.clients.<client>.instrumentor``; confluent-kafka's
and aiokafka's load when the client is installed: ``pip install hoptrace[confluent]``, ``hoptrace[aiokafka]``);
``distro`` what ``opentelemetry-instrument`` loads (distro, configurator, and the hook that makes the stock instrumentors of the same
libraries step aside, so exactly one instruments each).
"""

from __future__ import annotations

import logging
import pkgutil
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class Library(NamedTuple):
    """One library hoptrace instruments: its instrumentor, the stock one it replaces (``module:Class`` each), and its entry point."""

    ours: str
    stock: str
    entry_point: str
    """The ``opentelemetry_instrumentor`` entry point of hoptrace's instrumentor, as pyproject.toml declares it."""


LIBRARIES = {
    "celery": Library(
        ours="hoptrace.clients.celery.instrumentor:HoptraceCeleryInstrumentor",
        stock="opentelemetry.instrumentation.celery:CeleryInstrumentor",
        entry_point="hoptrace_celery",
    ),
    "kafka": Library(
        ours="hoptrace.clients.kafka_python.instrumentor:HoptraceKafkaInstrumentor",
        stock="opentelemetry.instrumentation.kafka:KafkaInstrumentor",
        entry_point="hoptrace_kafka",
    ),
    "confluent_kafka": Library(
        ours="hoptrace.clients.confluent.instrumentor:HoptraceConfluentKafkaInstrumentor",
        stock="opentelemetry.instrumentation.confluent_kafka:ConfluentKafkaInstrumentor",
        entry_point="hoptrace_confluent_kafka",
    ),
    "aiokafka": Library(
        ours="hoptrace.clients.aiokafka.instrumentor:HoptraceAIOKafkaInstrumentor",
        stock="opentelemetry.instrumentation.aiokafka:AIOKafkaInstrumentor",
        entry_point="hoptrace_aiokafka",
    ),
}
"""The libraries hoptrace instruments, by the name ``dropin.step_aside`` and ``stock_instrumentor`` know them by."""


def _load(path: str) -> type | None:
    """The class PATH (``module:Class``) names; None when its module does not import (the library or the stock package is not installed)."""
    try:
        return pkgutil.resolve_name(path)  # type: ignore[no-any-return]
    except ImportError:
        logger.debug("%s not importable; skipped", path)
        return None


def _ours() -> list[tuple[str, type]]:
    """hoptrace's instrumentors whose libraries are installed, by library."""
    return [(library, found) for library, row in LIBRARIES.items() if (found := _load(row.ours)) is not None]


def stock_instrumentor(library: str) -> type | None:
    """The stock instrumentor of LIBRARY (``celery``, ``kafka``, ``confluent_kafka``, ``aiokafka``) when its package is installed."""
    return _load(LIBRARIES[library].stock)


def stock_instrumentors(disabled: frozenset[str] = frozenset()) -> list[tuple[type, str]]:
    """Each installed stock instrumentor hoptrace replaces, with the name of hoptrace's that replaces it.

    Libraries whose hoptrace entry point is in DISABLED (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``) are left out:
    hoptrace does not instrument them, so their stock instrumentors may.
    """
    found = []
    for library, ours in _ours():
        if LIBRARIES[library].entry_point not in disabled and (stock := stock_instrumentor(library)) is not None:
            found.append((stock, ours.__name__))
    return found


def instrument(**kwargs: Any) -> None:
    """Instrument every supported library that is installed (KWARGS go to each ``instrument()``); twice is a no-op."""
    for _, instrumentor in _ours():
        if not instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().instrument(**kwargs)


def instrumenting() -> bool:
    """Whether any of hoptrace's instrumentors is instrumenting its library in this process now."""
    return any(instrumentor().is_instrumented_by_opentelemetry for _, instrumentor in _ours())


def uninstrument() -> None:
    """Undo ``instrument``: every hook, wrapper and signal connected is gone, the stock instrumentors are restored."""
    for _, instrumentor in _ours():
        if instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().uninstrument()
