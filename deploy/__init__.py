"""Deployment files shipped as package data: local-service scripts, Collector, Jaeger, Prometheus, Grafana, Compose and Kubernetes."""

if not __name__.startswith("hoptrace."):  # the folder rule (pyproject.toml, package-dir): a top-level folder X is hoptrace.X
    raise ImportError(f"import this as hoptrace.{__name__}, not {__name__}: hoptrace installs one top-level name, hoptrace")
