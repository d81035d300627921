"""Where hoptrace depends on private names of the OpenTelemetry SDK, on the per-message path.

Each module here states what it reads and checks it when it is built: when a name is missing
(a newer SDK), or a configuration is one it cannot prove it handles exactly as the SDK would,
it says so and the caller takes the SDK's general path instead. Nothing outside this package
reaches into the tracing SDK's private names for the hot path.
"""

if not __name__.startswith("hoptrace."):  # the folder rule (pyproject.toml, package-dir): a top-level folder X is hoptrace.X
    raise ImportError(f"import this as hoptrace.{__name__}, not {__name__}: hoptrace installs one top-level name, hoptrace")
