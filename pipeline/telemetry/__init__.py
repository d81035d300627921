"""The telemetry plumbing under the ground floor: how a process's spans and metric points are made cheaply and sent.

- ``providers``: the SDK's tracer and meter providers built from the standard ``OTEL_*`` variables, with
  bounded flush and shutdown; ``exporters`` picks the exporters those variables name;
- ``otlp_exporters`` and ``otlp_wire``: the OTLP span exporters with hoptrace's own protobuf encoder;
- ``histograms`` and ``metric_producer``: duration histograms aggregated in the process and handed to
  every metric reader;
- ``span_spool``: ended spans kept on disk until exported; ``loss``: telemetry that could not be sent, counted;
- ``sdk_internals``: the per-message shortcuts that read the SDK's private names, each checked when built.

Every reach into a private name of the OpenTelemetry SDK is in this package (each marked ``noqa: SLF001``).
What a message carries and which spans and points a stage makes are the ground floor's (``tracing``,
``metrics``, ``propagation``); this package only makes and sends them.
"""

if not __name__.startswith("hoptrace."):  # the folder rule (pyproject.toml, package-dir): a top-level folder X is hoptrace.X
    raise ImportError(f"import this as hoptrace.{__name__}, not {__name__}: hoptrace installs one top-level name, hoptrace")
