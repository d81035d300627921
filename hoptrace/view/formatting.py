"""How ``hoptrace watch``, ``traces``, ``trace`` and ``demo`` show values: durations, rates, ids, statuses, JSON, plain text.

Pure functions: they read the values they are given and return strings or ``rich`` text; nothing
here opens a store, a terminal or reads the clock. The renderables themselves are made in
``tree`` (one trace as a tree of hops) and ``tables`` (the stage and trace tables).
``to_text`` renders one as plain text (no ANSI codes) for pipes and logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from io import StringIO
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

from hoptrace.view.otlp_decode import Attributes, ReceivedSpan
from hoptrace.view.queries import to_json

NONE = "—"
_STAND_INS = {
    **{code: 0x2400 + code for code in range(0x20)},  # C0 controls (ESC, BEL, CR, LF...) as their control pictures: ␛ ␇ ␍ ␊
    0x7F: 0x2421,  # DEL as ␡
    **{code: 0xFFFD for code in range(0x80, 0xA0)},  # C1 controls (CSI, OSC...)
    **{code: 0xFFFD for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))},  # bidirectional overrides and isolates
}
"""Each character a terminal would act on instead of showing, and the one shown in its place."""


def shown(text: Text) -> Text:
    """TEXT (changed in place) with every control character a visible stand-in of the same length, so its styles stay where they were.

    Span names, attributes, status messages and labels come from whoever sent them: an escape
    sequence in one would set the terminal's title, clear the screen or forge a line.
    """
    plain = text.plain
    safe = plain.translate(_STAND_INS)
    if safe != plain:
        text.plain = safe
    return text


"""What a value that is not known is shown as."""
SHORT_ID = 8
"""How many leading characters of a job id are shown."""

_STATUS_STYLES = {
    "ok": "green",
    "retried": "yellow",
    "retrying": "yellow",
    "failed": "red",
    "dead-lettered": "red",
    "queued": "cyan",
    "in flight": "cyan",
    "stuck": "red",
}


def format_duration(seconds: float | None) -> str:
    """SECONDS for people: ``40ns``, ``850µs``, ``1.5ms``, ``12ms``, ``1.23s``, ``12.3s``, ``2m05s``, ``1h02m``; ``—`` for None.

    The one formatter of every duration hoptrace prints (negative ones, from clock skew, get a minus).
    """
    if seconds is None:
        return NONE
    if seconds == 0:
        return "0s"
    sign, value = ("-" if seconds < 0 else ""), abs(seconds)
    if round(value * 1e9) < 1000:
        return f"{sign}{value * 1e9:.0f}ns"
    for scale, unit, next_at in ((1e6, "µs", 1e-3), (1e3, "ms", 1.0)):
        if value < next_at:
            scaled = value * scale
            if round(scaled, 1) < 10:
                return f"{sign}{scaled:.1f}{unit}"
            if round(scaled) < 1000:
                return f"{sign}{scaled:.0f}{unit}"
    if round(value, 2) < 10:
        return f"{sign}{value:.2f}s"
    if round(value, 1) < 60:
        return f"{sign}{value:.1f}s"
    whole = round(value)
    if whole < 3600:
        return f"{sign}{whole // 60}m{whole % 60:02d}s"
    return f"{sign}{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_ns(nanoseconds: int | None) -> str:
    """A duration in nanoseconds, formatted as ``format_duration`` does."""
    return format_duration(None if nanoseconds is None else nanoseconds / 1e9)


def format_rate(per_s: float) -> str:
    """Messages per second: ``0``, ``<0.1``, ``2.5``, ``340``."""
    if per_s == 0:
        return "0"
    if per_s < 0.05:
        return "<0.1"
    return f"{per_s:.1f}" if per_s < 100 else f"{per_s:.0f}"


def format_number(value: float | None) -> str:
    """A gauge value: whole numbers without a fraction; ``—`` for None."""
    if value is None:
        return NONE
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def short_id(job_id: str | None) -> str:
    """The first ``SHORT_ID`` characters of a job id, or ``—``."""
    return job_id[:SHORT_ID] if job_id else NONE


def status_text(status: str) -> Text:
    """A hop, job or trace status in its colour: green ok, yellow retried, red failed or dead-lettered, cyan queued or in flight."""
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def _json_ready(value: Attributes) -> Any:
    """VALUE as strict JSON values.

    Bytes are ``{"$bytes": "<base64>"}`` (the store's own encoding, ``queries.to_json``); NaN and the
    infinities are the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, as protobuf's JSON mapping writes them.
    """
    return json.loads(to_json(value), parse_constant=str)


def trace_json(spans: Iterable[ReceivedSpan]) -> list[dict[str, Any]]:
    """The SPANS (in the order given) as JSON-ready dicts with every ReceivedSpan field, keys in field order.

    Times are integer nanoseconds; events are ``{"name", "attributes"}`` and links
    ``{"trace_id", "span_id", "attributes"}``; a bytes value anywhere in attributes or the
    resource is ``{"$bytes": "<base64>"}`` (a map that would read as such is wrapped in ``{"$map": ...}``),
    a NaN or infinite number its name as a string: the whole is strict JSON.
    """
    return [
        {
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "kind": span.kind,
            "start_ns": int(span.start_ns),
            "end_ns": int(span.end_ns),
            "attributes": _json_ready(span.attributes),
            "status_code": span.status_code,
            "status_message": span.status_message,
            "events": [{"name": name, "attributes": _json_ready(attributes)} for name, attributes in span.events],
            "links": [{"trace_id": trace, "span_id": link, "attributes": _json_ready(attributes)} for trace, link, attributes in span.links],
            "resource": _json_ready(span.resource),
            "scope_name": span.scope_name,
        }
        for span in spans
    ]


def to_text(renderable: RenderableType, width: int = 100) -> str:
    """RENDERABLE as plain text WIDTH cells wide, without colours or any other ANSI code."""
    buffer = StringIO()
    console = Console(
        file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False, highlight=False, emoji=False, markup=False
    )
    console.print(renderable)
    return buffer.getvalue()
