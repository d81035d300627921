"""Trace context and baggage in and out of message headers, treating incoming headers as untrusted.

Outgoing: ``inject`` writes the global propagator's fields (so ``OTEL_PROPAGATORS`` is
honoured), the publish time and, inside a handler, its message's pathway (``pathways``) through a
transport's setter (``carriers``), replacing keys already there.

Incoming: ``extract`` takes the raw header pairs a transport's getter found (``carriers``),
reduces them to clean text, runs the propagators, then bounds and filters baggage by the
allowlist. Anything broken is dropped, named in ``Extracted.fallbacks`` and logged in one
short line; the message is then processed as a new root trace, never refused.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import CarrierT, Setter, TextMapPropagator
from opentelemetry.trace import SpanContext

from hoptrace.pipeline import pathways, w3c
from hoptrace.pipeline.jobs import JOB_ID, parse_epoch_seconds
from hoptrace.pipeline.pathways import PATHWAY_KEY
from hoptrace.pipeline.semconv import BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT, HEADER_PATHWAY, HEADER_SENT_AT

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8192
"""Longest propagation header read (W3C baggage's limit); longer ones are dropped unparsed."""
MAX_BAGGAGE_MEMBERS = 180
"""Most baggage members kept (W3C's limit)."""
ALWAYS_ALLOWED = (BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT)


@dataclass(slots=True)
class Extracted:
    """What incoming headers gave: the parent context, the publish time, the pathway, what had to be dropped."""

    context: Context
    sent_at: float | None
    fallbacks: tuple[str, ...]
    """Reasons a header was ignored (``non_utf8``, ``none_value``, ``not_text``, ``duplicate``, ``oversized``,
    ``malformed_traceparent``, ``malformed_tracestate``, ``malformed_sent_at``, ``malformed_job_id``,
    ``malformed_pathway``, ``baggage_not_allowed``, ``too_many_baggage_members``)."""
    parent: SpanContext | None = None
    """The valid parent span in ``context``; None when there is none (a new trace starts)."""
    baggage: Mapping[str, object] = field(default_factory=dict)
    """The baggage members in ``context``."""
    pathway: str | None = None
    """The stages the message's job went through before it (``pathways.parse``'s); None when it came with none or a broken one."""


_fields: tuple[TextMapPropagator | None, frozenset[str]] = (None, frozenset())


def fields() -> frozenset[str]:
    """The header keys hoptrace reads and writes: the global propagator's fields, the publish time and the pathway."""
    global _fields
    textmap = propagate.get_global_textmap()
    if _fields[0] is not textmap:  # asked for every message: remembered for the propagator in place
        _fields = (textmap, frozenset(textmap.fields) | {HEADER_SENT_AT, HEADER_PATHWAY})
    return _fields[1]


@functools.lru_cache(maxsize=64)
def _allowed_keys(allowlist: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for hoptrace's own baggage keys and the ALLOWLIST patterns."""
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in ALWAYS_ALLOWED + allowlist))


def inject(carrier: CarrierT, setter: Setter[CarrierT], context: Context | None = None) -> None:
    """Write the propagation headers of a message published in CONTEXT (default: the current one) into CARRIER through SETTER.

    The pathway header only when CONTEXT is (or derives from) one a handler runs in: a pathway goes on from a message to those it made.
    """
    if context is None:
        context = get_current()
    textmap = propagate.get_global_textmap()
    if w3c.is_default(textmap):
        w3c.inject(carrier, setter, context)
    else:
        textmap.inject(carrier, context=context, setter=setter)
    setter.set(carrier, HEADER_SENT_AT, f"{time.time():.6f}")
    pathway = context.get(PATHWAY_KEY)
    if type(pathway) is str:
        setter.set(carrier, HEADER_PATHWAY, pathway)


def _text(raw_value: object, fallbacks: list[str]) -> str | None:
    """RAW_VALUE as text when it is usable; otherwise None, with the reason added to FALLBACKS."""
    if raw_value is None:
        fallbacks.append("none_value")
        return None
    if not isinstance(raw_value, (bytes, str)):
        fallbacks.append("not_text")
        return None
    if isinstance(raw_value, str) and raw_value.isascii():  # the usual case: nothing to check beyond the size
        if len(raw_value) > MAX_HEADER_BYTES:
            fallbacks.append("oversized")
            return None
        return raw_value
    # A str may hold lone surrogates (JSON's "\ud800" decodes to one): encoded as they are, the
    # strict decode below refuses them, so they never reach a propagator (the baggage one raised).
    data = raw_value if isinstance(raw_value, bytes) else raw_value.encode("utf-8", "surrogatepass")
    if len(data) > MAX_HEADER_BYTES:
        fallbacks.append("oversized")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        fallbacks.append("non_utf8")
        return None


def _clean(pairs: Iterable[tuple[object, object]], fallbacks: list[str]) -> dict[str, str]:
    """The propagation headers among PAIRS as text; broken ones are dropped and named in FALLBACKS."""
    wanted = fields()
    found: dict[str, str] = {}
    duplicated: set[str] = set()
    for raw_key, raw_value in pairs:
        key = raw_key if type(raw_key) is str and raw_key in wanted else _key(raw_key)  # a getter's pairs: lower-case str already
        if key not in wanted:
            continue
        if type(raw_value) is bytes and len(raw_value) <= MAX_HEADER_BYTES and raw_value.isascii():
            value: str | None = raw_value.decode("ascii")  # the usual Kafka header: nothing more to check
        elif (value := _text(raw_value, fallbacks)) is None:
            continue
        if key in found and found[key] != value:
            duplicated.add(key)
        found[key] = value
    for key in sorted(duplicated):
        fallbacks.append("duplicate")
        del found[key]
    return found


def _key(raw_key: object) -> str:
    """A header key as lower-case text."""
    return (raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)).lower()


def _stored_key(raw_key: str) -> str:
    """A raw baggage key as the propagator will store it: trimmed, then percent-decoded (so "ab%63" cannot pass "*3" as "abc")."""
    return w3c.decode(raw_key.strip(" \t"))


_allowed: dict[tuple[str, ...], dict[str, bool]] = {}
"""Per allowlist, the raw baggage keys already judged (a pipeline's messages carry the same few keys)."""
MAX_JUDGED_KEYS = 4096
"""Raw keys remembered per allowlist; emptied when full (keys come from untrusted headers)."""


def _judged(allowlist: tuple[str, ...]) -> dict[str, bool]:
    found = _allowed.get(allowlist)
    if found is None:
        found = _allowed[allowlist] = {}
    elif len(found) >= MAX_JUDGED_KEYS:
        found.clear()
    return found


def _is_allowed(raw_key: str, allowlist: tuple[str, ...]) -> bool:
    """Whether baggage members with RAW_KEY are kept."""
    judged = _judged(allowlist)
    found = judged.get(raw_key)
    if found is None:
        found = judged[raw_key] = _allowed_keys(allowlist).match(_stored_key(raw_key)) is not None
    return found


def _known_allowed(members: list[str], allowlist: tuple[str, ...]) -> bool:
    """Whether the raw baggage MEMBERS are at most ``MAX_BAGGAGE_MEMBERS``, each with a key already judged allowed: nothing to filter."""
    if len(members) > MAX_BAGGAGE_MEMBERS:
        return False
    judged = _judged(allowlist)
    return all([judged.get(member.partition("=")[0]) for member in members])


def _bad_job_id(members: Mapping[str, object] | None) -> bool:
    """Whether baggage MEMBERS hold a job id that is not one (``jobs.JOB_ID``)."""
    job = members.get(BAGGAGE_JOB_ID) if members else None
    return job is not None and not JOB_ID.fullmatch(str(job))


def _allowed_baggage(header: str, allowlist: tuple[str, ...], fallbacks: list[str]) -> str:
    """The members of a raw baggage HEADER whose keys are allowed, hoptrace's own first, at most MAX_BAGGAGE_MEMBERS.

    Filtering the raw header before the propagator parses it keeps a flood of unwanted
    members from pushing the job's own members past the member limit.
    """
    members = header.split(",")
    if _known_allowed(members, allowlist):  # the usual case: nothing to drop, the header as it came
        return header
    members = [member for member in members if member.strip()]
    kept = [member for member in members if _is_allowed(member.partition("=")[0], allowlist)]
    if len(kept) < len(members):
        fallbacks.append("baggage_not_allowed")
    if len(kept) > MAX_BAGGAGE_MEMBERS:
        fallbacks.append("too_many_baggage_members")
        kept.sort(key=lambda member: _stored_key(member.partition("=")[0]) not in ALWAYS_ALLOWED)  # stable: hoptrace's own first
        kept = kept[:MAX_BAGGAGE_MEMBERS]
    elif len(kept) == len(members) and len(members) == header.count(",") + 1:
        return header
    return ",".join(kept)


def extract(pairs: Iterable[tuple[object, object]], allowlist: tuple[str, ...] = ()) -> Extracted:
    """Parent context, publish time, pathway and fallbacks from untrusted header PAIRS.

    ALLOWLIST holds baggage keys (``fnmatch`` patterns, e.g. ``tenant`` or ``app.*``) to keep
    besides hoptrace's own.
    """
    return _sound(pairs, allowlist) or _extract(pairs, allowlist)


def _sound(pairs: Iterable[tuple[object, object]], allowlist: tuple[str, ...]) -> Extracted | None:
    """``_extract``'s result for headers as hoptrace (or any W3C SDK) writes them, in one pass; None for anything else.

    Sound means: the default propagators, each header once (or repeated with the same value, as a Celery request's
    attribute and its nested header) with a lower-case key, ASCII values within
    the size limit, a valid ``traceparent``, a baggage of at most ``MAX_BAGGAGE_MEMBERS`` members whose
    keys are all allowed and already judged so, a publish time that parses, a pathway that parses. Then nothing needs cleaning,
    filtering or reporting; tests/test_propagation holds this to ``_extract`` on generated headers.
    """
    if not w3c.is_default(propagate.get_global_textmap()):
        return None
    found: dict[object, str] = {}
    for key, value in pairs:
        if type(value) is bytes:
            if len(value) > MAX_HEADER_BYTES or not value.isascii():
                return None
            value = value.decode("ascii")
        elif type(value) is not str or len(value) > MAX_HEADER_BYTES or not value.isascii():
            return None
        if found.setdefault(key, value) != value:
            return None  # two different values: the general path drops the key and counts it
    sent_at = None
    if (sent := found.pop(HEADER_SENT_AT, None)) is not None and (sent_at := parse_epoch_seconds(sent)) is None:
        return None
    pathway = None
    if (route := found.pop(HEADER_PATHWAY, None)) is not None and (pathway := pathways.parse(route)) is None:
        return None
    header = found.get("baggage")
    if header is not None and (not header or not _known_allowed(header.split(","), allowlist)):
        return None
    if len(found) > ("traceparent" in found) + ("tracestate" in found) + (header is not None):
        return None  # a key in another letter case, or one a getter let through: the general path sorts it out
    if (state := found.get("tracestate")) is not None and not w3c.is_list_text(state):
        return None
    context, parent, members = w3c.read(found)  # type: ignore[arg-type]
    if "traceparent" in found and parent is None or header is not None and not members:
        return None
    if _bad_job_id(members):
        return None
    return Extracted(context, sent_at, (), parent, members or {}, pathway)


def _extract(pairs: Iterable[tuple[object, object]], allowlist: tuple[str, ...]) -> Extracted:
    """``extract`` for any headers: cleaned, filtered, broken ones named in the fallbacks and logged."""
    fallbacks: list[str] = []
    headers = _clean(pairs, fallbacks)
    if "tracestate" in headers and not w3c.is_list_text(headers["tracestate"]):
        fallbacks.append("malformed_tracestate")  # CR or LF in it would forge a line in the SDK's log of what it refused
        del headers["tracestate"]
    baggage_fallbacks: list[str] = []
    if "baggage" in headers:
        headers["baggage"] = _allowed_baggage(headers["baggage"], allowlist, baggage_fallbacks)
    textmap = propagate.get_global_textmap()
    if w3c.is_default(textmap):
        context, parent, members = w3c.read(headers)
    else:
        context = textmap.extract(headers, context=Context())
        parent, members = trace.get_current_span(context).get_span_context(), baggage.get_all(context)
        parent = parent if parent.is_valid else None
    if "traceparent" in headers and parent is None:
        fallbacks.append("malformed_traceparent")
    if _bad_job_id(members):
        fallbacks.append("malformed_job_id")  # the message starts a new job here: its id and start time go
        for key in ALWAYS_ALLOWED:
            context = baggage.remove_baggage(key, context)
        members = baggage.get_all(context)
    fallbacks += baggage_fallbacks
    sent_at = None
    if HEADER_SENT_AT in headers:
        sent_at = parse_epoch_seconds(headers[HEADER_SENT_AT])
        if sent_at is None:
            fallbacks.append("malformed_sent_at")
    pathway = None
    if HEADER_PATHWAY in headers:
        pathway = pathways.parse(headers[HEADER_PATHWAY])
        if pathway is None:
            fallbacks.append("malformed_pathway")  # the message's pathway starts at its stage
    if fallbacks:
        reasons = ", ".join(sorted(set(fallbacks)))
        logger.warning("ignored broken message headers (%s); processing the message as a new root where needed", reasons)
    return Extracted(context, sent_at, tuple(fallbacks), parent, members or {}, pathway)
