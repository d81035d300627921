"""Drop-in instrumentation: hoptrace for Celery apps, kafka-python, confluent-kafka and aiokafka code that never import it.

Zero-code, with hoptrace installed::

    opentelemetry-instrument celery -A proj worker
    opentelemetry-instrument python consumer.py

From Python, for those who set up OpenTelemetry in code::

    import hoptrace
    hoptrace.instrument()                      # every library below that is installed
    HoptraceCeleryInstrumentor().instrument()  # or one by one

``celery``, ``kafka``, ``confluent`` and ``aiokafka`` hold the instrumentors (confluent-kafka's and
aiokafka's load when the client is installed: ``pip install hoptrace[confluent]``, ``hoptrace[aiokafka]``);
``distro`` what ``opentelemetry-instrument`` loads (distro, configurator, and the hook that makes the stock instrumentors of the same
libraries step aside, so exactly one instruments each).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger(__name__)

INSTRUMENTORS = {
    "celery": ("hoptrace.instrumentation.celery", "HoptraceCeleryInstrumentor"),
    "kafka": ("hoptrace.instrumentation.kafka", "HoptraceKafkaInstrumentor"),
    "confluent_kafka": ("hoptrace.instrumentation.confluent", "HoptraceConfluentKafkaInstrumentor"),
    "aiokafka": ("hoptrace.instrumentation.aiokafka", "HoptraceAIOKafkaInstrumentor"),
}
"""hoptrace's instrumentors by library (module, class)."""
STOCK = {
    "celery": ("opentelemetry.instrumentation.celery", "CeleryInstrumentor"),
    "kafka": ("opentelemetry.instrumentation.kafka", "KafkaInstrumentor"),
    "confluent_kafka": ("opentelemetry.instrumentation.confluent_kafka", "ConfluentKafkaInstrumentor"),
    "aiokafka": ("opentelemetry.instrumentation.aiokafka", "AIOKafkaInstrumentor"),
}
"""The stock instrumentors hoptrace's replace, by library."""


def _classes(table: dict[str, tuple[str, str]]) -> dict[str, type]:
    found = {}
    for library, (module, name) in table.items():
        try:
            found[library] = getattr(importlib.import_module(module), name)
        except ImportError:  # the library (or the stock package) is not installed: nothing to do for it
            logger.debug("%s not importable; skipped", module)
    return found


def stock_instrumentor(library: str) -> type | None:
    """The stock instrumentor of LIBRARY (``celery``, ``kafka``, ``confluent_kafka``, ``aiokafka``) when its package is installed."""
    return _classes({library: STOCK[library]}).get(library)


ENTRY_POINTS = {
    "celery": "hoptrace_celery",
    "kafka": "hoptrace_kafka",
    "confluent_kafka": "hoptrace_confluent_kafka",
    "aiokafka": "hoptrace_aiokafka",
}
"""The ``opentelemetry_instrumentor`` entry point of hoptrace's instrumentor by library (as pyproject.toml declares them)."""


def stock_instrumentors(disabled: frozenset[str] = frozenset()) -> list[tuple[type, str]]:
    """Each installed stock instrumentor hoptrace replaces, with the name of hoptrace's that replaces it.

    Libraries whose hoptrace entry point is in DISABLED (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``) are left out:
    hoptrace does not instrument them, so their stock instrumentors may.
    """
    ours = {library: found for library, found in _classes(INSTRUMENTORS).items() if ENTRY_POINTS[library] not in disabled}
    return [(stock, ours[library].__name__) for library, stock in _classes(STOCK).items() if library in ours]


def instrument(**kwargs: Any) -> None:
    """Instrument every supported library that is installed (KWARGS go to each ``instrument()``); twice is a no-op."""
    for instrumentor in _classes(INSTRUMENTORS).values():
        if not instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().instrument(**kwargs)


def uninstrument() -> None:
    """Undo ``instrument``: every hook, wrapper and signal connected is gone, the stock instrumentors are restored."""
    for instrumentor in _classes(INSTRUMENTORS).values():
        if instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().uninstrument()
