"""The span processors a tracer provider hands ended spans to, for the flight recorder to hand kept spans to later.

Private name read: ``TracerProvider._active_span_processor`` (the provider's composite of every
added processor). A provider without it (another SDK) gives None: the recorder then cannot
export what it kept and says so once.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider


def span_processor_of(provider: TracerProvider) -> SpanProcessor | None:
    """The composite of PROVIDER's span processors, as spans it ends reach them; None when this SDK has no such field."""
    found = getattr(provider, "_active_span_processor", None)
    return found if isinstance(found, SpanProcessor) else None
