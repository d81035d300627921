"""Consuming side: the Kafka poll-loop worker and the Celery worker integration."""

if __name__ != "hoptrace.workers":  # the repository folder is mapped into the package; one name per module
    raise ImportError(f"import this as hoptrace.workers, not {__name__}: hoptrace installs one top-level name, hoptrace")
