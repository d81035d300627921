"""Publishing side: Kafka and Celery publishers that inject trace context."""

if __name__ != "hoptrace.producers":  # the repository folder is mapped into the package; one name per module
    raise ImportError(f"import this as hoptrace.producers, not {__name__}: hoptrace installs one top-level name, hoptrace")
