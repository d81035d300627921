"""What an OTLP export request would cost to parse, read off the wire before it is parsed: its records and their parts.

Parsing a protobuf request builds every message in it at once: a body of 8 MiB made of 4 million
empty spans took ~670 MB before any limit could be checked. ``count`` walks the request's wire
format instead, without building anything: along a signal's ``RecordPath`` (the nested fields that
lead to its records: spans, data points, log records) it counts the records, and inside each record
the fields right under it (its parts: ids, times, each attribute, event and link). It stops as soon
as either count passes its bound. Fields off the path are skipped by their length, groups
included, so every well-formed request is counted whole; a request whose wire format breaks along
the path is one protobuf's parser would refuse as well.

Parts nested deeper (the entries of a key-value list inside one attribute, an event's attributes)
are not counted: the body's size bounds them.
"""

from __future__ import annotations

from dataclasses import dataclass

_VARINT, _FIXED64, _LENGTH, _GROUP_START, _GROUP_END, _FIXED32 = 0, 1, 2, 3, 4, 5

RecordPath = tuple[frozenset[int], ...]
"""Field numbers, level by level from the request down to its records (each level: the fields that lead on)."""

SPANS: RecordPath = (frozenset({1}), frozenset({2}), frozenset({2}))
"""ExportTraceServiceRequest.resource_spans → ResourceSpans.scope_spans → ScopeSpans.spans."""
LOG_RECORDS: RecordPath = (frozenset({1}), frozenset({2}), frozenset({2}))
"""ExportLogsServiceRequest.resource_logs → ResourceLogs.scope_logs → ScopeLogs.log_records."""
DATA_POINTS: RecordPath = (frozenset({1}), frozenset({2}), frozenset({2}), frozenset({5, 7, 9, 10, 11}), frozenset({1}))
"""ExportMetricsServiceRequest.resource_metrics → .scope_metrics → .metrics → its gauge, sum, histogram or summary → data_points."""


class Malformed(ValueError):
    """The wire format breaks: a truncated field, an unknown wire type, an unclosed group."""


class OverBound(ValueError):
    """The request holds more records or parts than allowed; the message says which."""


@dataclass
class Counts:
    """Records and parts counted so far, and their bounds."""

    max_records: int
    max_parts: int
    records: int = 0
    parts: int = 0


def count(body: bytes, path: RecordPath, max_records: int, max_parts: int) -> Counts:
    """The records at PATH in BODY and their parts; raises OverBound past MAX_RECORDS or MAX_PARTS, Malformed when the wire breaks."""
    counts = Counts(max_records, max_parts)
    _walk(memoryview(body), 0, len(body), path, counts)
    return counts


def _varint(data: memoryview, at: int, end: int) -> tuple[int, int]:
    """The varint at AT (before END) and the position after it."""
    value = shift = 0
    while at < end:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise Malformed("a varint longer than 10 bytes")
    raise Malformed("a varint cut short")


def _skip(data: memoryview, at: int, end: int, wire_type: int, field: int) -> int:
    """The position after the value of FIELD (of WIRE_TYPE) that starts at AT."""
    if wire_type == _VARINT:
        return _varint(data, at, end)[1]
    if wire_type in (_FIXED64, _FIXED32):
        after = at + (8 if wire_type == _FIXED64 else 4)
    elif wire_type == _LENGTH:
        length, at = _varint(data, at, end)
        after = at + length
    elif wire_type == _GROUP_START:
        while True:
            key, at = _varint(data, at, end)
            if key & 7 == _GROUP_END:
                if key >> 3 != field:
                    raise Malformed("a group closed by another field's end")
                return at
            at = _skip(data, at, end, key & 7, key >> 3)
    else:
        raise Malformed(f"wire type {wire_type}")
    if after > end:
        raise Malformed("a field longer than what holds it")
    return after


def _walk(data: memoryview, at: int, end: int, path: RecordPath, counts: Counts) -> None:
    """Count the records at PATH within DATA[AT:END] (one message's fields)."""
    leads_on, deeper = path[0], path[1:]
    while at < end:
        key, at = _varint(data, at, end)
        wire_type, field = key & 7, key >> 3
        if wire_type == _LENGTH and field in leads_on:
            length, at = _varint(data, at, end)
            if at + length > end:
                raise Malformed("a field longer than what holds it")
            if deeper:
                _walk(data, at, at + length, deeper, counts)
            else:
                _record(data, at, at + length, counts)
            at += length
        else:
            at = _skip(data, at, end, wire_type, field)


def _record(data: memoryview, at: int, end: int, counts: Counts) -> None:
    """Count one record in DATA[AT:END] and the fields right under it."""
    counts.records += 1
    if counts.records > counts.max_records:
        raise OverBound(f"more than {counts.max_records} records")
    while at < end:
        key, at = _varint(data, at, end)
        at = _skip(data, at, end, key & 7, key >> 3)
        counts.parts += 1
        if counts.parts > counts.max_parts:
            raise OverBound(f"more than {counts.max_parts} fields in its records")
