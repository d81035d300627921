"""``python -m tests.apps.sdk_configured ARGS``: ``hoptrace ARGS`` in a process whose OpenTelemetry SDK is already configured.

This is what opentelemetry-distro does under ``opentelemetry-instrument``: its configurator
(the SDK's own ``_OTelSDKConfigurator``) sets global tracer and meter providers from the
``OTEL_*`` environment in every process at start-up, before the application runs. Run it
under ``opentelemetry-instrument`` so the stock instrumentors are loaded too. Supervised
children (``hoptrace worker`` with several stage groups) would not pass through here: run one
stage group per process.
"""

from __future__ import annotations

import sys

from opentelemetry.sdk._configuration import _OTelSDKConfigurator


def main() -> None:
    """Configure the SDK globally, as a distro would, then run the ``hoptrace`` command line."""
    _OTelSDKConfigurator().configure()
    from hoptrace.cli import main as hoptrace_main

    sys.argv = ["hoptrace", *sys.argv[1:]]
    hoptrace_main()


if __name__ == "__main__":
    main()
