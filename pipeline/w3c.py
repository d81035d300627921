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

from opentelemetry import trace
from opentelemetry.baggage import _BAGGAGE_KEY, _is_valid_value
from opentelemetry.baggage import _is_valid_key as _is_valid_baggage_key
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, create_key
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Setter, TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation import _SPAN_KEY
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
_CANONICAL_KEY = r"[\x21\x23\x24\x26\x27\x2a\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+"
_CANONICAL_VALUE = r"[\x21\x23\x24\x26-\x2a\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
CANONICAL_BAGGAGE = re.compile(f"{_CANONICAL_KEY}={_CANONICAL_VALUE}(?:,{_CANONICAL_KEY}={_CANONICAL_VALUE})*")
"""A baggage header in the form hoptrace and most SDKs write: ``key=value`` members, no whitespace, no properties, nothing
percent- or plus-encoded (the W3C key and value characters less ``%`` and ``+``). Such a header reads as its plain split:
every member is valid and decodes to itself."""
_TRACE_FLAGS = tuple(TraceFlags(value) for value in range(256))
_INCOMING = create_key("hoptrace-incoming-baggage")
"""Context key: (the baggage header as it came, the baggage dict read from it), to write it again unchanged."""


_checked: tuple[TextMapPropagator | None, bool] = (None, False)


def is_default(textmap: TextMapPropagator) -> bool:
    """Whether TEXTMAP is exactly W3C trace context plus W3C baggage (the fast path applies)."""
    global _checked
    if _checked[0] is not textmap:  # asked for every message: remembered for the propagator in place
        _checked = (textmap, _is_default(textmap))
    return _checked[1]


def _is_default(textmap: TextMapPropagator) -> bool:
    propagators = getattr(textmap, "_propagators", None) if isinstance(textmap, CompositePropagator) else None
    kinds = [type(each) for each in propagators or ()]
    return kinds == [TraceContextTextMapPropagator, W3CBaggagePropagator]


def extract(headers: Mapping[str, str]) -> Context:
    """The context W3C trace context and baggage give for HEADERS (clean text, lower-case keys), as the propagators would."""
    return read(headers)[0]


def read(headers: Mapping[str, str]) -> tuple[Context, SpanContext | None, dict[str, object] | None]:
    """``extract``'s context, and what is in it: the valid parent span context (None: none) and the baggage members (None: none)."""
    values: dict[str, object] = {}
    parent = members = None
    if (traceparent := headers.get("traceparent")) is not None:
        parent = _parent(traceparent, headers.get("tracestate"))
        if parent is not None:
            values[_SPAN_KEY] = NonRecordingSpan(parent)
    if header := headers.get("baggage"):
        members, unchanged = _baggage(header)
        if members:
            values[_BAGGAGE_KEY] = members
            if unchanged:
                values[_INCOMING] = (header, members)
        else:
            members = None
    return Context(values), parent, members  # one context with everything, not one copy per value


def is_list_text(value: str) -> bool:
    """Whether VALUE holds only what a W3C list header may (visible ASCII, spaces, tabs): no CR, LF or escape for a log line to carry."""
    return value.isascii() and value.replace("\t", " ").isprintable()


def _parent(traceparent: str, tracestate: str | None) -> SpanContext | None:
    """The remote span context a ``traceparent`` (and ``tracestate``) header gives; None when it is not a valid one."""
    match = _TRACEPARENT.search(traceparent)
    if not match:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN or (version == "00" and rest) or version == "ff":
        return None
    state = None
    if tracestate is not None and len(tracestate) <= _TRACECONTEXT_MAXIMUM_TRACESTATE_LENGTH:
        state = TraceState.from_header([tracestate])
    return SpanContext(int(trace_id, 16), int(span_id, 16), True, _TRACE_FLAGS[int(flags, 16)], state)


def _baggage(header: str) -> tuple[dict[str, object], bool]:
    """The members a baggage HEADER gives, and whether writing them again gives HEADER (every member kept, none repeated)."""
    if len(header) <= _MAX_PAIR_LENGTH and header.count(",") < _MAX_PAIRS and CANONICAL_BAGGAGE.fullmatch(header):
        members: dict[str, object] = dict([entry.split("=", 1) for entry in header.split(",")])  # type: ignore[misc]
        return members, header.count(",") + 1 == len(members)
    members = {}
    if len(header) > _MAX_HEADER_LENGTH or (not header.isascii() and len(header.encode()) > _MAX_HEADER_LENGTH):
        return members, False
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
    return members, kept == len(members)


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
    members = context.get(_BAGGAGE_KEY)
    if not members:
        return
    incoming = context.get(_INCOMING)
    if isinstance(incoming, tuple) and incoming[1] is members:
        setter.set(carrier, "baggage", incoming[0])
        return
    encoded = _encode(members)
    if encoded:
        setter.set(carrier, "baggage", encoded)


def with_members(context: Context, added: Mapping[str, str]) -> Context:
    """CONTEXT with the baggage members ADDED, in one copy of it.

    When the baggage before was known as a header (as it came, or none at all) and ADDED only
    appends members, the header with them appended is remembered too, so ``inject`` writes it
    without encoding the baggage again (a publisher adds a new job's two members to every first
    message).
    """
    members = context.get(_BAGGAGE_KEY) or {}
    combined = {**members, **added}  # type: ignore[dict-item]
    values: dict[str, object] = {_BAGGAGE_KEY: combined}
    incoming = context.get(_INCOMING)
    header = "" if not members else incoming[0] if isinstance(incoming, tuple) and incoming[1] is members else None
    if header is not None and not added.keys() & members.keys():  # type: ignore[union-attr]
        appended = _encode(added)
        whole = f"{header},{appended}" if header else appended
        if appended.count(",") + 1 == len(added) and len(whole) <= _MAX_HEADER_LENGTH and whole.count(",") < _MAX_PAIRS:
            values[_INCOMING] = (whole, combined)
    return Context({**context, **values})


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
