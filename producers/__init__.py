"""Publishing side, on any client: the pipeline publisher that injects trace context, and its ``Sender`` seam.

The clients' senders are in their folders (``hoptrace.clients``).
"""

if not __name__.startswith("hoptrace."):  # the folder rule (pyproject.toml, package-dir): a top-level folder X is hoptrace.X
    raise ImportError(f"import this as hoptrace.{__name__}, not {__name__}: hoptrace installs one top-level name, hoptrace")
