"""W3C ``traceparent``/``tracestate`` and ``baggage``, read and written directly: the fast path of the default propagators.

When ``OTEL_PROPAGATORS`` is unset or ``tracecontext,baggage`` (the global textmap is then the
SDK's composite of exactly those two), every message pays only for what it uses: one regular
expression for ``traceparent``, a split of ``baggage`` with the W3C rules, one context built
with all the members at once, and, on the way out, the incoming ``baggage`` header written
again as it came when the baggage did not change since it was read. The results are the
propagators' own, member for member (tests/test_w3c compares both on a corpus of valid and
broken headers); any other propagator configuration goes through ``opentelemetry.propagate``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from urllib.parse import quote_plus, unquote_plus

from opentelemetry import baggage as baggage_api
from opentelemetry import trace
from opentelemetry.baggage import _BAGGAGE_KEY, _is_valid_value
from opentelemetry.baggage import _is_valid_key as _is_valid_baggage_key
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, create_key, get_value, set_value
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Setter, TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import _TRACECONTEXT_MAXIMUM_TRACESTATE_LENGTH
from opentelemetry.util.re import _DELIMITER_PATTERN

_TRACEPARENT = TraceContextTextMapPropagator._TRACEPARENT_HEADER_FORMAT_RE  # noqa: SLF001 - the propagator's own pattern, so both agree
# The baggage propagator's own delimiter and limits, so both agree.
_DELIMITER = _DELIMITER_PATTERN
_MAX_PAIRS = W3CBaggagePropagator._MAX_PAIRS  # noqa: SLF001
_MAX_PAIR_LENGTH = W3CBaggagePropagator._MAX_PAIR_LENGTH  # noqa: SLF001
_MAX_HEADER_LENGTH = W3CBaggagePropagator._MAX_HEADER_LENGTH  # noqa: SLF001
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_INCOMING = create_key("hoptrace-incoming-baggage")
"""Context key: (the baggage header as it came, the baggage dict read from it), to write it again unchanged."""


@functools.lru_cache(maxsize=8)
def is_default(textmap: TextMapPropagator) -> bool:
    """Whether TEXTMAP is exactly W3C trace context plus W3C baggage (the fast path applies)."""
    propagators = getattr(textmap, "_propagators", None) if isinstance(textmap, CompositePropagator) else None
    kinds = [type(each) for each in propagators or ()]
    return kinds == [TraceContextTextMapPropagator, W3CBaggagePropagator]


def extract(headers: Mapping[str, str]) -> Context:
    """The context W3C trace context and baggage give for HEADERS (clean text, lower-case keys), as the propagators would."""
    context = Context()
    if (traceparent := headers.get("traceparent")) is not None:
        context = _span_context(traceparent, headers.get("tracestate"), context)
    if header := headers.get("baggage"):
        context = _baggage(header, context)
    return context


def _span_context(traceparent: str, tracestate: str | None, context: Context) -> Context:
    match = _TRACEPARENT.search(traceparent)
    if not match:
        return context
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN or (version == "00" and rest) or version == "ff":
        return context
    state = None
    if tracestate is not None and len(tracestate) <= _TRACECONTEXT_MAXIMUM_TRACESTATE_LENGTH:
        state = TraceState.from_header([tracestate])
    span = SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16)), state)
    return trace.set_span_in_context(NonRecordingSpan(span), context)


def _baggage(header: str, context: Context) -> Context:
    if len(header.encode()) > _MAX_HEADER_LENGTH:
        return context
    members: dict[str, object] = {}
    kept = length = 0
    for entry in _DELIMITER.split(header) if " " in header or "\t" in header else header.split(","):  # the same split, cheaper
        if not entry or not entry.isascii() or len(entry) > _MAX_PAIR_LENGTH:
            continue
        if kept >= _MAX_PAIRS:
            break
        length += (1 if kept else 0) + len(entry)
        if length > _MAX_HEADER_LENGTH:
            break
        kept += 1
        name, equals, value = entry.partition("=")
        if not equals:
            continue
        name, value = name.strip(" \t"), value.strip(" \t")
        if not (_is_valid_key(name) and _is_valid_value(value)):
            continue
        members[decode(name)] = decode(value)
    if not members:
        return context
    context = set_value(_BAGGAGE_KEY, members, context)
    return set_value(_INCOMING, (header, members), context) if kept == len(members) else context


@functools.lru_cache(maxsize=1024)
def _is_valid_key(name: str) -> bool:
    """The baggage API's key check, remembered: a pipeline's messages carry the same few keys."""
    return _is_valid_baggage_key(name)


def decode(text: str) -> str:
    """A baggage key or value as the baggage propagator stores it: percent-decoded (``+`` is a space), then trimmed."""
    return unquote_plus(text).strip() if "%" in text or "+" in text else text.strip()


def inject(carrier: CarrierT, setter: Setter[CarrierT], context: Context) -> None:
    """Write CONTEXT's trace context and baggage into CARRIER as the propagators would (an unchanged baggage as it came)."""
    span = trace.get_current_span(context).get_span_context()
    if span != trace.INVALID_SPAN_CONTEXT:
        setter.set(carrier, "traceparent", f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}")
        if span.trace_state:
            setter.set(carrier, "tracestate", span.trace_state.to_header())
    members = get_value(_BAGGAGE_KEY, context)
    if not members:
        return
    incoming = get_value(_INCOMING, context)
    if isinstance(incoming, tuple) and incoming[1] is members:
        setter.set(carrier, "baggage", incoming[0])
        return
    encoded = _encode(baggage_api.get_all(context))
    if encoded:
        setter.set(carrier, "baggage", encoded)


_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")
"""What ``quote_plus`` leaves as it is."""


@functools.lru_cache(maxsize=1024)
def _quoted_key(key: str) -> str:
    return quote_plus(key)


def _quoted(text: str) -> str:
    return text if _SAFE.fullmatch(text) else quote_plus(text)


def _encode(members: Mapping[str, object]) -> str:
    """MEMBERS as a W3C baggage header, within its limits, as the baggage propagator writes it."""
    kept: list[str] = []
    length = 0
    for key, value in members.items():
        entry = _quoted_key(str(key)) + "=" + _quoted(str(value))
        if len(entry) > _MAX_PAIR_LENGTH:
            continue
        if len(kept) >= _MAX_PAIRS:
            break
        length += (1 if kept else 0) + len(entry)
        if length > _MAX_HEADER_LENGTH:
            break
        kept.append(entry)
    return ",".join(kept)
