"""Trace context and baggage in and out of message headers, treating incoming headers as untrusted.

Outgoing: ``inject`` writes the global propagator's fields (so ``OTEL_PROPAGATORS`` is
honoured) and the publish time into a dict of str; each transport turns that dict into its
own header form, replacing keys already there.

Incoming: ``extract`` first reduces whatever the transport delivered (Kafka's list of
``(str, bytes)`` pairs, Celery's dict) to clean text for the few headers that matter, then
runs the propagators, then bounds and filters baggage by the allowlist. Anything broken is
dropped, named in ``Extracted.fallbacks`` and logged in one short line; the message is
then processed as a new root trace, never refused.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context

from pipeline.semconv import BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT, HEADER_SENT_AT

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8192
"""Longest propagation header read (W3C baggage's limit); longer ones are dropped unparsed."""
MAX_BAGGAGE_MEMBERS = 180
"""Most baggage members kept (W3C's limit)."""
ALWAYS_ALLOWED = (BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT)


@dataclass(frozen=True)
class Extracted:
    """What incoming headers gave: the parent context, the publish time, what had to be dropped."""

    context: Context
    sent_at: float | None
    fallbacks: tuple[str, ...]
    """Reasons a header was ignored (``non_utf8``, ``none_value``, ``duplicate``, ``oversized``,
    ``malformed_traceparent``, ``malformed_sent_at``, ``baggage_not_allowed``, ``too_many_baggage_members``)."""

    @property
    def is_root(self) -> bool:
        """True when no valid parent span came with the message (a new trace starts)."""
        return not trace.get_current_span(self.context).get_span_context().is_valid


def _fields() -> frozenset[str]:
    return frozenset(propagate.get_global_textmap().fields) | {HEADER_SENT_AT}


def inject(context: Context | None = None) -> dict[str, str]:
    """Propagation headers for a message published in CONTEXT (default: the current one)."""
    headers: dict[str, str] = {}
    propagate.inject(headers, context=context)
    headers[HEADER_SENT_AT] = f"{time.time():.6f}"
    return headers


def _clean(pairs: Iterable[tuple[object, object]], fallbacks: list[str]) -> dict[str, str]:
    """The propagation headers among PAIRS as text; broken ones are dropped and named in FALLBACKS."""
    wanted = _fields()
    found: dict[str, str] = {}
    duplicated: set[str] = set()
    for raw_key, raw_value in pairs:
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)
        key = key.lower()
        if key not in wanted:
            continue
        if raw_value is None:
            fallbacks.append("none_value")
            continue
        size = len(raw_value) if isinstance(raw_value, (bytes, str)) else 0
        if size > MAX_HEADER_BYTES:
            fallbacks.append("oversized")
            continue
        if isinstance(raw_value, bytes):
            try:
                value = raw_value.decode("utf-8")
            except UnicodeDecodeError:
                fallbacks.append("non_utf8")
                continue
        elif isinstance(raw_value, str):
            value = raw_value
        else:
            fallbacks.append("not_text")
            continue
        if key in found and found[key] != value:
            duplicated.add(key)
        found[key] = value
    for key in duplicated:
        fallbacks.append("duplicate")
        del found[key]
    return found


def _bounded_baggage(context: Context, allowlist: tuple[str, ...], fallbacks: list[str]) -> Context:
    """CONTEXT with only allowed baggage members, at most MAX_BAGGAGE_MEMBERS of them."""
    members = baggage.get_all(context)
    if not members:
        return context
    patterns = ALWAYS_ALLOWED + allowlist
    kept = {key: value for key, value in members.items() if any(fnmatch.fnmatchcase(key, p) for p in patterns)}
    if len(kept) < len(members):
        fallbacks.append("baggage_not_allowed")
    if len(kept) > MAX_BAGGAGE_MEMBERS:
        fallbacks.append("too_many_baggage_members")
        kept = dict(list(kept.items())[:MAX_BAGGAGE_MEMBERS])
    for key in members.keys() - kept.keys():
        context = baggage.remove_baggage(key, context)
    return context


def extract(pairs: Iterable[tuple[object, object]], allowlist: tuple[str, ...] = ()) -> Extracted:
    """Parent context, publish time and fallbacks from untrusted header PAIRS.

    ALLOWLIST holds baggage keys (``fnmatch`` patterns, e.g. ``tenant`` or ``app.*``) to keep
    besides hoptrace's own.
    """
    fallbacks: list[str] = []
    headers = _clean(pairs, fallbacks)
    context = propagate.extract(headers, context=Context())
    if "traceparent" in headers and not trace.get_current_span(context).get_span_context().is_valid:
        fallbacks.append("malformed_traceparent")
    context = _bounded_baggage(context, allowlist, fallbacks)
    sent_at = None
    if HEADER_SENT_AT in headers:
        try:
            sent_at = float(headers[HEADER_SENT_AT])
        except ValueError:
            fallbacks.append("malformed_sent_at")
    if fallbacks:
        logger.warning("ignored broken message headers (%s); processing the message as a new root where needed", ", ".join(sorted(set(fallbacks))))
    return Extracted(context, sent_at, tuple(fallbacks))
