"""Zero-code variants: an unchanged app run plain, or under ``opentelemetry-instrument`` with the stock or hoptrace's instrumentors.

* ``none``: the command as it is; no OpenTelemetry at all.
* ``stock-100`` / ``stock-1``: ``opentelemetry-instrument <command>`` with the stock
  ``KafkaInstrumentor`` / ``CeleryInstrumentor`` and hoptrace's own instrumentors disabled
  (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=hoptrace_kafka,hoptrace_celery,redis``).
* ``hoptrace-100`` / ``hoptrace-1``: ``opentelemetry-instrument <command>`` with hoptrace installed
  as it is (its drop-in instrumentors load by default and the stock ones step aside);
  ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=redis``.

Sampling ``parentbased_traceidratio`` at 1.0 or 0.01; every exporter off (traces, metrics, logs),
so only the instrumentation is counted. The Redis instrumentor (installed with hoptrace) is off
in every variant (``DISABLED``). The SDK is built by the one configurator installed, hoptrace's
(``OTEL_*`` only, the same for stock and hoptrace).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks.harness import Run

OTEL_INSTRUMENT = str(Path(sys.executable).with_name("opentelemetry-instrument"))
"""The venv's ``opentelemetry-instrument``."""
EXPORTERS_OFF = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
DISABLED = {
    "none": (),
    "stock": ("hoptrace_kafka", "hoptrace_confluent_kafka", "hoptrace_aiokafka", "hoptrace_celery", "redis"),
    "hoptrace": ("redis",),
}
"""``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` per instrumentation: hoptrace's own for the stock variants, and in every
variant the Redis instrumentor that comes with hoptrace (a dependency of it), which would trace kombu's Redis commands
(several per Celery task) in stock and hoptrace variants alike: the rows compare the Kafka and Celery instrumentations."""

Instrumentation = Literal["none", "stock", "hoptrace"]


class WrongInstrumentation(RuntimeError):
    """A process ran with another instrumentation than its variant's."""


@dataclass(frozen=True)
class ZeroCodeVariant:
    """One way of running an unchanged app: plain, or under ``opentelemetry-instrument`` with stock or hoptrace instrumentors."""

    key: str
    label: str
    instrumentation: Instrumentation
    sampling: float = 1.0

    def command(self, argv: Sequence[str]) -> list[str]:
        """ARGV as this variant runs it (``opentelemetry-instrument`` first unless ``none``)."""
        return list(argv) if self.instrumentation == "none" else [OTEL_INSTRUMENT, *argv]

    def env(self, run: Run, namespace: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A child environment of RUN for this variant: the ``OTEL_*`` settings above, and EXTRA."""
        otel: dict[str, str] = {}
        if self.instrumentation != "none":
            otel = {**EXPORTERS_OFF, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": f"{self.sampling:g}"}
            otel["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = ",".join(DISABLED[self.instrumentation])
        return run.env(namespace, {**otel, **(extra or {})})

    def check(self, reported: str, who: str) -> None:
        """Raise WrongInstrumentation unless REPORTED (``benchmarks.instrumented``, by process WHO) is this variant's instrumentation."""
        if reported != self.instrumentation:
            raise WrongInstrumentation(f"{self.key}: the {who} ran with {reported!r} instrumentation, expected {self.instrumentation!r}")


NONE = ZeroCodeVariant("none", "none (no OpenTelemetry)", "none")
VARIANTS: tuple[ZeroCodeVariant, ...] = (
    NONE,
    ZeroCodeVariant("stock-100", "stock instrumentor, 100% sampled", "stock", 1.0),
    ZeroCodeVariant("stock-1", "stock instrumentor, 1% sampled", "stock", 0.01),
    ZeroCodeVariant("hoptrace-100", "hoptrace drop-in, 100% sampled", "hoptrace", 1.0),
    ZeroCodeVariant("hoptrace-1", "hoptrace drop-in, 1% sampled", "hoptrace", 0.01),
)
BY_KEY = {variant.key: variant for variant in VARIANTS}
SETTINGS = "opentelemetry-instrument, parentbased_traceidratio, every exporter off, Redis instrumentor disabled"
"""How every instrumented variant runs, for descriptions."""
