"""The configured sampler's decision without calling it: a shortcut, only for samplers whose answer it can prove.

``Tracer.start_span`` calls ``sampler.should_sample`` for every span, which builds a
``SamplingResult`` (a mapping proxy of the attributes, the parent's trace state) through a
chain of Python calls. The SDK's own samplers decide from three things only: whether the
parent is valid, remote and sampled, and, for ``TraceIdRatioBased``, the trace id masked with
its ``TRACE_ID_LIMIT`` (the low 64 bits) against the rate's bound. ``shortcut(sampler)`` turns
such a sampler, read once, into a small function of those; any other sampler (a user's own, ``AlwaysRecordSampler``, one that
overrides ``should_sample``) gives None and the caller asks the sampler itself.

The builtin samplers also agree on the rest of the result: the span's attributes are the ones
given, and its trace state is the valid parent's (None for a root), so the shortcut returns
only the decision. tests/test_sampling_shortcut holds it to ``should_sample`` on generated
parents, trace ids and rates.

Private names read: ``ParentBased._root`` and its four ``_*_parent_*`` delegates,
``StaticSampler._decision``.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, StaticSampler, TraceIdRatioBased
from opentelemetry.trace import SpanContext

Decide = Callable[[SpanContext | None, int], bool]
"""``decide(parent, trace_id)``: whether a span with PARENT (a valid span context, or None for a root) in TRACE_ID is sampled."""

_DELEGATES = ("_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled", "_local_parent_not_sampled")


def _constant(answer: bool) -> Decide:
    return lambda parent, trace_id: answer


def _ratio(mask: int, bound: int) -> Decide:
    return lambda parent, trace_id: trace_id & mask < bound


def _leaf(sampler: Sampler) -> Decide | None:
    """The decision of a sampler that ignores its parent (a static one, or a trace id ratio), when it is the SDK's own."""
    kind = type(sampler)
    if isinstance(sampler, StaticSampler) and kind.should_sample is StaticSampler.should_sample:
        decision = getattr(sampler, "_decision", None)
        return _constant(decision is Decision.RECORD_AND_SAMPLE) if decision in (Decision.DROP, Decision.RECORD_AND_SAMPLE) else None
    if isinstance(sampler, TraceIdRatioBased) and kind.should_sample is TraceIdRatioBased.should_sample:
        return _ratio(sampler.TRACE_ID_LIMIT, sampler.bound)
    return None


def shortcut(sampler: Sampler) -> Decide | None:
    """SAMPLER's decision as a function of the parent and the trace id; None when SAMPLER is not one this module can answer for."""
    if not (isinstance(sampler, ParentBased) and type(sampler).should_sample is ParentBased.should_sample):
        return _leaf(sampler)
    root = _leaf(getattr(sampler, "_root", None))  # type: ignore[arg-type]
    delegates = [_leaf(getattr(sampler, name, None)) for name in _DELEGATES]  # type: ignore[arg-type]
    if root is None or any(each is None for each in delegates):
        return None
    remote_sampled, remote_unsampled, local_sampled, local_unsampled = delegates

    def decide(parent: SpanContext | None, trace_id: int) -> bool:
        if parent is None:
            return root(parent, trace_id)
        if parent.is_remote:
            chosen = remote_sampled if parent.trace_flags & 1 else remote_unsampled
        else:
            chosen = local_sampled if parent.trace_flags & 1 else local_unsampled
        return chosen(parent, trace_id)  # type: ignore[misc]

    return decide
