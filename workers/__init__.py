"""Consuming side, on any client: the stage processor, and the Kafka poll loop with its ``StageConsumer`` seam.

The clients' consumers and Celery's worker are in their folders (``hoptrace.clients``).
"""

if not __name__.startswith("hoptrace."):  # the folder rule (pyproject.toml, package-dir): a top-level folder X is hoptrace.X
    raise ImportError(f"import this as hoptrace.{__name__}, not {__name__}: hoptrace installs one top-level name, hoptrace")
