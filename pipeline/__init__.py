"""The ground floor: what runs inside a user's worker or publisher process.

The stage model, message names (``semconv``), propagation with its per-transport carriers, the
middleware around a message (tracing, metrics, retries, the flight recorder) and the instruments;
``telemetry`` makes and sends the spans and points. Nothing here imports ``workers``, ``producers``,
the gauges, the viewer or the command line, nor any messaging client library (``tests/test_layers.py``)."""

if not __name__.startswith("hoptrace."):  # the folder rule (pyproject.toml, package-dir): a top-level folder X is hoptrace.X
    raise ImportError(f"import this as hoptrace.{__name__}, not {__name__}: hoptrace installs one top-level name, hoptrace")
