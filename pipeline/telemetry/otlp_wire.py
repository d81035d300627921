"""SDK spans to the bytes of an OTLP ``ExportTraceServiceRequest``, written as protobuf wire format.

`SpanEncoder.encode` gives the same bytes as the SDK's
``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(spans).SerializeToString()``
(opentelemetry-exporter-otlp-proto-common 1.45.1) without building protobuf messages: fields
in field-number order, proto3 defaults left out, spans grouped by resource and then by
instrumentation scope in order of first appearance, an attribute the SDK cannot encode
logged and left out, and the same choices as the SDK where OTLP allows several (span
``flags`` carry only the two is-remote bits, a link's ``trace_state`` is not sent).

What repeats is encoded once and kept in size-capped caches: each resource and scope,
attribute keys, span names, and whole key/value pairs whose value is a bool, an int or a
string (floats are never cached, since ``0.0 == -0.0``; a pair is keyed by the value's type
too, since ``1 == True``). Only encodings of at most ``max_cached_bytes`` are kept, and a
full cache is emptied, so high-cardinality values such as job ids cost a re-encode now and
then but memory stays bounded (per cache, ``max_cached_pairs`` entries of at most
``max_cached_bytes`` encoded bytes plus their keys; resources and scopes: 256 entries).

Field numbers: opentelemetry-proto's ``trace/v1/trace.proto``, ``common/v1/common.proto``
and ``resource/v1/resource.proto``; a tag byte below is ``field_number << 3 | wire_type``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span as PB2Span
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.util.types import Attributes

_logger = logging.getLogger(__name__)

_INT64_MIN, _INT64_MAX, _UINT64 = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
_ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))
BODY_ATTRIBUTE = "_hoptrace_otlp_body"
"""Where ``SpanEncoder.encode_one`` leaves an ended span's encoded body, for the exporter's ``encode`` to reuse."""
_IDS = struct.Struct(">2sQQ2sQ")  # tag+len, trace_id as two big-endian halves, tag+len, span_id
_TIMES = struct.Struct("<BQBQ")  # Span.start_time_unix_nano (7) and end_time_unix_nano (8), fixed64
_FIXED64 = struct.Struct("<BQ")
_FIXED32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<Bd")  # AnyValue.double_value (4)
_KINDS = {id(kind): bytes((0x30, PB2Span.SpanKind.Value(f"SPAN_KIND_{kind.name}"))) for kind in SpanKind}  # by id: Enum.__hash__ is Python code
_LOCAL = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_REMOTE = _LOCAL | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_SPAN_FLAGS = {False: b"\x85\x01" + _FIXED32.pack(_LOCAL), True: b"\x85\x01" + _FIXED32.pack(_REMOTE)}  # Span.flags (16)
_LINK_FLAGS = {False: b"\x35" + _FIXED32.pack(_LOCAL), True: b"\x35" + _FIXED32.pack(_REMOTE)}  # Link.flags (6)
_STATUS_UNSET = b"\x7a\x00"  # Span.status (15): an empty Status message
_HOLDERS_CAPACITY = 256  # resources and scopes kept encoded


def _varint(value: int) -> bytes:
    """The base-128 varint of a non-negative int."""
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _string(tag: bytes, text: str | None) -> bytes:
    """A proto3 string field; empty and None are the default and are left out."""
    return _field(tag, text.encode()) if text else b""


def _uint(tag: bytes, value: int) -> bytes:
    """A proto3 varint field; zero is the default and is left out."""
    return tag + _varint(value) if value else b""


def _any_value(value: Any) -> bytes:
    """The body of an ``AnyValue``, deciding the type in the SDK's order (bool before int, str before Sequence)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"Value out of range: {value}")
        return b"\x18" + _varint(value & _UINT64)
    if isinstance(value, float):
        return _DOUBLE.pack(0x21, value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _string(b"\x0a", str(k)) + _field(b"\x12", _any_value(v))) for k, v in value.items()))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


class _BoundedCache(dict[Any, Any]):
    """A dict that empties itself when full: bounded memory, and a hit stays one C-level ``get``."""

    __slots__ = ("_capacity",)

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._capacity = capacity

    def put(self, key: Hashable, value: Any) -> Any:
        """Store ``value`` under ``key`` (emptying the cache first when it is full) and return it."""
        if len(self) >= self._capacity:
            self.clear()
        self[key] = value
        return value


class _Groups:
    """Holders (resources, scopes) equal to each other grouped with one value each, in order of first appearance.

    A holder is looked up by identity; one of an identity not seen yet is compared by equality, hashing it (``Resource.__hash__``
    dumps JSON) only once holders of two identities have come: spans that share one resource and scope never hash them.
    """

    __slots__ = ("_by_equality", "_by_id", "_groups")

    def __init__(self) -> None:
        self._groups: list[tuple[Any, Any]] = []
        """(first holder, value) of each group, in order of first appearance."""
        self._by_id: dict[int, Any] = {}  # id(holder) -> value: the holders seen are kept alive by the spans being encoded
        self._by_equality: dict[Any, Any] | None = None  # holder -> value, once holders of two identities came

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """(first holder, value) of each group, in order of first appearance."""
        return iter(self._groups)

    def of(self, holder: Any, new: Callable[[], Any]) -> Any:
        """The value of HOLDER's group: NEW's for a holder equal to none seen before."""
        value = self._by_id.get(id(holder))
        if value is None:
            value = made = new()
            if self._groups:  # another identity: the group of an equal holder, if one came (hashing each holder once)
                if self._by_equality is None:
                    self._by_equality = dict(self._groups)
                value = self._by_equality.setdefault(holder, made)
            if value is made:
                self._groups.append((holder, made))
            self._by_id[id(holder)] = value
        return value


class SpanEncoder:
    """Encodes SDK spans into serialized ``ExportTraceServiceRequest`` bytes, caching what repeats.

    One encoder serves any number of batches; it may be shared between threads (a cache
    entry is a pure function of its key, and dict operations are atomic).
    """

    def __init__(self, max_cached_pairs: int = 4096, max_cached_bytes: int = 256) -> None:
        """Keep at most ``max_cached_pairs`` entries per cache, each an encoding of at most ``max_cached_bytes``."""
        self._pairs = _BoundedCache(max_cached_pairs)  # (key, type, value) -> varint length + KeyValue body
        self._keys = _BoundedCache(max_cached_pairs)  # key -> KeyValue.key field
        self._names = _BoundedCache(max_cached_pairs)  # span name -> Span.name field
        self._holders = _BoundedCache(_HOLDERS_CAPACITY)  # id(resource or scope) -> (it, head, tail)
        self._max_bytes = max_cached_bytes

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized ``ExportTraceServiceRequest`` of ``spans`` (empty bytes for no spans)."""
        resources = _Groups()
        buckets: dict[tuple[int, int], list[bytes]] = {}  # (id(resource), id(scope)) -> the bucket of their group
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope or None
            bucket = buckets.get((id(resource), id(scope)))
            if bucket is None:
                bucket = buckets[id(resource), id(scope)] = resources.of(resource, _Groups).of(scope, list)
            body = getattr(span, BODY_ATTRIBUTE, None) or self._span(span)
            bucket += (b"\x12" + _varint(len(body)), body)  # ScopeSpans.spans (2)
        return self._request(resources)

    def encode_one(self, span: ReadableSpan) -> bytes:
        """The serialized request of SPAN alone (the span spool's record); the span keeps its body, which ``encode`` then reuses.

        An ended SDK span does not change, so its body stays right; a span that takes no attribute is encoded again later.
        One span is one group, so this skips ``encode``'s grouping (about 1 us) and frames it as ``encode`` does.
        """
        body = self._span(span)
        with suppress(AttributeError):
            setattr(span, BODY_ATTRIBUTE, body)
        return self._request(((span.resource, ((span.instrumentation_scope or None, (b"\x12" + _varint(len(body)), body)),)),))

    def _request(self, resources: Iterable[tuple[Resource, Iterable[tuple[InstrumentationScope | None, Sequence[bytes]]]]]) -> bytes:
        """The request of RESOURCES, each with its scopes, each with its bucket: its spans' ``ScopeSpans.spans`` (2) fields, tag, length, body."""
        out: list[bytes] = []
        for resource, scopes in resources:
            resource_head, resource_tail = self._holder(resource, self._encode_resource)
            at = len(out)
            out += (b"\x0a", b"", resource_head)  # ExportTraceServiceRequest.resource_spans (1), its length set below
            size = len(resource_head) + len(resource_tail)
            for scope, bucket in scopes:
                head, tail = self._holder(scope, self._encode_scope)
                length = len(head) + sum(map(len, bucket)) + len(tail)
                scope_length = _varint(length)
                out += (b"\x12", scope_length, head)  # ResourceSpans.scope_spans (2)
                out += bucket
                out.append(tail)
                size += 1 + len(scope_length) + length
            out.append(resource_tail)
            out[at + 1] = _varint(size)
        return b"".join(out)

    def _span(self, span: ReadableSpan) -> bytes:
        """The body of a ``Span`` message."""
        context = span.get_span_context()
        trace_id, parent, name = context.trace_id, span.parent, span.name
        parts = [_IDS.pack(b"\x0a\x10", trace_id >> 64, trace_id & _UINT64, b"\x12\x08", context.span_id)]
        if context.trace_state:
            parts.append(_string(b"\x1a", context.trace_state.to_header()))
        if parent:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        encoded = self._names.get(name)
        if encoded is None:
            encoded = self._remember(self._names, name, _string(b"\x2a", name))
        parts += (encoded, _KINDS[id(span.kind)])
        start, end = span.start_time, span.end_time
        if start and end:
            parts.append(_TIMES.pack(0x39, start, 0x41, end))
        else:
            parts += (_FIXED64.pack(0x39, start) if start else b"", _FIXED64.pack(0x41, end) if end else b"")
        parts.append(self._attributes(span.attributes, b"\x4a"))
        if dropped := span.dropped_attributes:
            parts.append(b"\x50" + _varint(dropped))
        if events := span.events:
            parts += [_field(b"\x5a", self._event(event)) for event in events]
        if dropped := span.dropped_events:
            parts.append(b"\x60" + _varint(dropped))
        if links := span.links:
            parts += [_field(b"\x6a", self._link(link)) for link in links]
        if dropped := span.dropped_links:
            parts.append(b"\x70" + _varint(dropped))
        status = span.status
        if status is not None:  # written even when empty: the SDK always sets the Status message
            unset = status.status_code is StatusCode.UNSET and not status.description
            parts.append(_STATUS_UNSET if unset else _field(b"\x7a", _string(b"\x12", status.description) + _uint(b"\x18", status.status_code.value)))
        parts.append(_SPAN_FLAGS[bool(parent and parent.is_remote)])
        return b"".join(parts)

    def _event(self, event: Event) -> bytes:
        """The body of a ``Span.Event`` message."""
        timestamp = event.timestamp
        return b"".join(
            (
                _FIXED64.pack(0x09, timestamp) if timestamp else b"",
                _string(b"\x12", event.name),
                self._attributes(event.attributes, b"\x1a"),
                _uint(b"\x20", event.dropped_attributes),
            )
        )

    def _link(self, link: Link) -> bytes:
        """The body of a ``Span.Link`` message."""
        context = link.context
        trace_id = context.trace_id
        return b"".join(
            (
                _IDS.pack(b"\x0a\x10", trace_id >> 64, trace_id & _UINT64, b"\x12\x08", context.span_id),
                self._attributes(link.attributes, b"\x22"),
                _uint(b"\x28", link.dropped_attributes),
                _LINK_FLAGS[bool(context.is_remote)],
            )
        )

    def _attributes(self, attributes: Attributes, tag: bytes) -> bytes:
        """The repeated ``KeyValue`` field ``tag`` of ``attributes``."""
        if not attributes:
            return b""
        pairs = self._pairs
        parts = []
        for key, value in attributes.items():
            kind = type(value)
            if kind is str or kind is int or kind is bool:
                encoded = pairs.get((key, kind, value))
                if encoded is None:
                    encoded = self._pair(key, value)
                    if encoded is not None:
                        self._remember(pairs, (key, kind, value), encoded)
            else:
                encoded = self._pair(key, value)
            if encoded is not None:
                parts.append(encoded)
        return tag + tag.join(parts) if parts else b""

    def _pair(self, key: str, value: Any) -> bytes | None:
        """Varint length and body of one ``KeyValue``; None, logged, for a value the SDK would also drop."""
        try:
            head = self._keys.get(key)
            if head is None:
                head = self._remember(self._keys, key, _string(b"\x0a", key))
            body = head + _field(b"\x12", _any_value(value))
        except Exception as error:  # noqa: BLE001 - same containment and message as the SDK's _encode_attributes
            _logger.exception("Failed to encode key %s: %s", key, error)
            return None
        return _varint(len(body)) + body

    def _remember(self, cache: _BoundedCache, key: Hashable, encoded: bytes) -> bytes:
        """``encoded``, stored in ``cache`` under ``key`` when it is small enough to keep."""
        if len(encoded) <= self._max_bytes:
            cache.put(key, encoded)
        return encoded

    def _holder(self, holder: Resource | InstrumentationScope | None, encode: Any) -> tuple[bytes, bytes]:
        """``encode(holder)``, cached by identity: the entry keeps ``holder`` alive, so its id cannot be reused."""
        entry = self._holders.get(id(holder))
        if entry is None or entry[0] is not holder:
            entry = self._holders.put(id(holder), (holder, *encode(holder)))
        return entry[1], entry[2]

    def _encode_resource(self, resource: Resource) -> tuple[bytes, bytes]:
        """``ResourceSpans.resource`` (1) and ``ResourceSpans.schema_url`` (3)."""
        return _field(b"\x0a", self._attributes(resource.attributes, b"\x0a")), _string(b"\x1a", resource.schema_url)

    def _encode_scope(self, scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
        """``ScopeSpans.scope`` (1, an empty message for no scope) and ``ScopeSpans.schema_url`` (3)."""
        if scope is None:
            return b"\x0a\x00", b""
        body = _string(b"\x0a", scope.name) + _string(b"\x12", scope.version) + self._attributes(scope.attributes, b"\x1a")
        return _field(b"\x0a", body), _string(b"\x1a", scope.schema_url)
