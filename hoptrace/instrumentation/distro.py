"""``opentelemetry-instrument`` with hoptrace installed: its distro, its configurator, and the hook that skips stock instrumentors.

- ``HoptraceDistro`` (entry point ``opentelemetry_distro``): the defaults opentelemetry-distro
  sets (OTLP traces and metrics), and ``OTEL_PYTHON_CONFIGURATOR=hoptrace`` unless set.
- ``HoptraceConfigurator`` (``opentelemetry_configurator``): the SDK from the standard
  ``OTEL_*`` variables, as ``hoptrace.pipeline.telemetry.providers.configure`` builds it (bounded flush
  and shutdown, hoptrace's histograms for every reader).
- ``before_instrumentors`` (``opentelemetry_pre_instrument``, which always runs): the stock
  Celery, kafka-python, confluent-kafka and aiokafka instrumentors become no-ops where hoptrace's
  instrument those libraries (not where ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names hoptrace's
  entry point, such as ``hoptrace_kafka``: then the stock one runs), and providers some other configurator built get
  hoptrace's bounded shutdown.
- ``after_instrumentors`` (``opentelemetry_post_instrument``): when hoptrace instruments something in this process,
  the start-up heap frozen out of the garbage collector (``pipeline.heap``), before the application starts.

The auto-instrumentation loader runs one distro and one configurator, the first it finds unless
``OTEL_PYTHON_DISTRO`` / ``OTEL_PYTHON_CONFIGURATOR`` say which; with opentelemetry-distro
installed too, either may win and the result is one SDK either way. Nothing here raises: a
failure in the loader's sequence would leave the process uninstrumented.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro

logger = logging.getLogger(__name__)

DEFAULTS = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp", "OTEL_PYTHON_CONFIGURATOR": "hoptrace"}
"""What the distro sets when the environment does not."""


class HoptraceDistro(BaseDistro):  # type: ignore[misc]
    """hoptrace's distro: OTLP by default, and hoptrace's configurator."""

    def _configure(self, **kwargs: Any) -> None:
        for name, value in DEFAULTS.items():
            os.environ.setdefault(name, value)


class HoptraceConfigurator:
    """Sets up the SDK once per process from ``OTEL_*``: traces, metrics and (with ``OTEL_LOGS_EXPORTER``) logs."""

    def configure(self, **kwargs: Any) -> None:
        """Build and set the global providers (a second call, or providers already set, changes nothing)."""
        try:
            from opentelemetry import trace

            from hoptrace.pipeline.telemetry import providers

            if type(trace.get_tracer_provider()).__name__ != "ProxyTracerProvider" or providers.global_telemetry() is not None:
                return
            providers.configure(os.environ.get("OTEL_SERVICE_NAME", "").strip() or "unknown_service")
        except Exception:  # noqa: BLE001 - a broken set-up must not stop the application
            logger.exception("hoptrace could not set up OpenTelemetry; the application runs without telemetry")


def disabled_instrumentations() -> frozenset[str]:
    """The entry point names ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` lists, read as the auto-instrumentation loader reads them."""
    return frozenset(name.strip() for name in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(","))


def before_instrumentors() -> None:
    """Skip the stock Celery and Kafka instrumentors where hoptrace's run, and adopt providers hoptrace did not build."""
    try:
        from hoptrace.instrumentation import stock_instrumentors
        from hoptrace.instrumentation.dropin import silence
        from hoptrace.pipeline.telemetry import providers

        for stock, ours in stock_instrumentors(disabled_instrumentations()):
            silence(stock, ours)
        providers.global_telemetry()
    except Exception:  # noqa: BLE001 - the loader would stop instrumenting anything after us
        logger.exception("hoptrace's pre-instrumentation hook failed; stock instrumentors may run beside hoptrace's")


def after_instrumentors() -> None:
    """Freeze the start-up heap (``pipeline.heap``) when hoptrace instruments a library here, unless ``HOPTRACE_GC_FREEZE`` is off.

    At start-up, before the application: the freeze's one full collection delays no message, and a process that forks
    its workers later (a Celery worker's pool) hands them the heap frozen. A process where hoptrace instruments nothing
    (its instrumentors all disabled) is left alone, and so is one whose settings do not parse (its first message says why).
    """
    try:
        from hoptrace.instrumentation import instrumenting
        from hoptrace.pipeline import heap
        from hoptrace.pipeline.settings import Settings

        if not instrumenting():
            return
        try:
            settings = Settings()
        except ValueError:  # a setting that does not parse: pydantic's ValidationError, a missing secrets folder
            return
        heap.freeze(settings)
    except Exception:  # noqa: BLE001 - the application must start either way
        logger.exception("hoptrace could not freeze the start-up heap; the application runs with the garbage collector as it is")
