"""The ground floor: what runs inside a user's worker or publisher process.

The stage model, message names (``semconv``), propagation with its per-transport carriers, the
middleware around a message, telemetry set-up and instruments. Nothing here imports
``workers``, ``producers``, the gauges, the viewer or the command line."""

if __name__ != "hoptrace.pipeline":  # the repository folder is mapped into the package; one name per module
    raise ImportError(f"import this as hoptrace.pipeline, not {__name__}: hoptrace installs one top-level name, hoptrace")
