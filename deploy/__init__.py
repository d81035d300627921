"""Deployment files shipped as package data: local-service scripts, Collector, Jaeger, Prometheus, Grafana, Compose and Kubernetes."""

if __name__ != "hoptrace.deploy":  # the repository folder is mapped into the package; one name per module
    raise ImportError(f"import this as hoptrace.deploy, not {__name__}: hoptrace installs one top-level name, hoptrace")
