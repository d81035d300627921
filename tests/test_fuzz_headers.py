"""Fuzzed message headers through extraction, in every shape the transports deliver (hypothesis).

One generated header set is a list of ``(key, value)`` pairs: propagation keys in any letter
case (str or bytes) beside unrelated ones, values that are near-valid ``traceparent``s,
baggage around W3C's limits (members around 180, bytes around 8192, percent-encoding,
properties, keys outside the allowlist), near-valid ``hoptrace-sent-at``s and ``hoptrace-pathway``s, and junk
(arbitrary and non-UTF-8 bytes, lone surrogates, ``None``, numbers, lists, values over
8192 bytes), with repeated keys of equal and different values. Each set goes through
extraction as every transport delivers it:

- Kafka: the list itself, as kafka-python's ``ConsumerRecord.headers`` (``carriers.kafka_pairs``);
- Celery: a dict of message headers (``carriers.dict_pairs``), and the worker's ``task.request``,
  a real ``celery.app.task.Context`` built from that dict, with or without a nested ``headers``
  (``carriers.celery_request_pairs``);

then ``propagation.extract`` and ``receiving.receive``. The README's "Untrusted headers"
rules are checked against an oracle written from the rules (and W3C Trace Context), not
from the code: no exception escapes; the message is a root exactly when its traceparent was
absent or unusable; the fallback reasons are exactly the broken headers; kept baggage is
within the allowlist and hoptrace's own keys, at most 180 members; ``sent_at`` is a finite
float or None; the pathway is the header exactly when it is stage names joined by ``>``
(ASCII, at most 1024 characters, maybe a leading ``~``); the message still gets a context and a job; hoptrace logs at most one short
line. A differential test checks that clean, valid headers give exactly what
``opentelemetry.propagate.extract`` gives.

Hypothesis runs derandomized and without an example database: each run tries the same
examples (a CI failure reproduces locally from the test name alone; nothing is written
into the working tree). ``HOPTRACE_FUZZ_EXAMPLES=N`` explores instead: N random examples
per test, a new seed every run.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

import pytest
from celery.app.task import Context as TaskRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from hoptrace.pipeline import jobs
from hoptrace.pipeline.carriers import RawPairs, celery_request_pairs, dict_pairs, kafka_pairs
from hoptrace.pipeline.messages import Delivery
from hoptrace.pipeline.propagation import MAX_BAGGAGE_MEMBERS, MAX_HEADER_BYTES, Extracted, extract, fields
from hoptrace.pipeline.receiving import receive
from hoptrace.pipeline.semconv import BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT, HEADER_PATHWAY, HEADER_SENT_AT
from hoptrace.pipeline.stages import KafkaTransport, Stage

_EXPLORE = os.environ.get("HOPTRACE_FUZZ_EXAMPLES")


def fuzz_settings(examples: int) -> settings:
    """EXAMPLES derandomized examples without a database, or HOPTRACE_FUZZ_EXAMPLES random ones."""
    return settings(
        max_examples=int(_EXPLORE) if _EXPLORE else examples,
        derandomize=not _EXPLORE,
        database=None,
        deadline=None,  # two shared cores: a slow example is not a failure
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


WANTED = fields()
"""The propagation headers hoptrace reads: ``traceparent``, ``tracestate``, ``baggage``, ``hoptrace-sent-at``, ``hoptrace-pathway``."""
OWN_KEYS = (BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT)
VALID_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STAGE = Stage("fuzz", KafkaTransport("fuzz.orders", "fuzz"), lambda payload, context: None)
ALLOWLISTS: tuple[tuple[str, ...], ...] = ((), ("tenant",), ("app.*", "tenant"), ("*",), ("app.k*",), ("*3", "t?"))
"""Exact keys, prefixes, everything, and suffix/one-character patterns (which percent-encoded keys could slip past)."""


# --- the oracle: the README's rules, written independently of the code --------------------


_TRACEPARENT = re.compile(
    r"[ \t]*(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})(?P<rest>-[^\n]*)?[ \t]*\n?"
)
"""W3C Trace Context's traceparent, lower-case hex only, with the optional whitespace (and the one trailing newline) OpenTelemetry tolerates."""


def w3c_parent(text: str) -> tuple[int, int, int] | None:
    """``(trace id, span id, flags)`` of a usable traceparent TEXT; None when W3C says to ignore it."""
    match = _TRACEPARENT.fullmatch(text)
    if match is None or match["version"] == "ff" or (match["version"] == "00" and match["rest"]):
        return None  # version ff is forbidden; version 00 has exactly four fields
    trace_id, span_id = int(match["trace_id"], 16), int(match["span_id"], 16)
    return (trace_id, span_id, int(match["flags"], 16)) if trace_id and span_id else None


def usable(value: object) -> tuple[str | None, str | None]:
    """``(text, None)`` for a header value hoptrace may parse, or ``(None, reason)`` for one dropped unparsed."""
    if value is None:
        return None, "none_value"
    if not isinstance(value, (bytes, str)):
        return None, "not_text"
    data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    if len(data) > MAX_HEADER_BYTES:
        return None, "oversized"
    try:
        return data.decode("utf-8"), None  # strict: lone surrogates are not UTF-8 either
    except UnicodeDecodeError:
        return None, "non_utf8"


def baggage_key(member: str) -> str:
    """The key a baggage list-member ends up under once parsed: trimmed, then percent-decoded (W3C baggage)."""
    return unquote_plus(member.split("=", 1)[0].strip(" \t")).strip()


def allowed(key: str, allowlist: tuple[str, ...]) -> bool:
    """Whether KEY may be kept: one of hoptrace's own or matching an allowlist pattern."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in OWN_KEYS + allowlist)


_STAGE_NAME = r"[A-Za-z0-9_.:@-]{1,128}"
_PATHWAY = re.compile(rf"(~>)?{_STAGE_NAME}(>{_STAGE_NAME})*", re.ASCII)


def pathway_of(text: str) -> str | None:
    """TEXT when it is a pathway: names of 1-128 ASCII letters, digits and ``_.:@-`` joined by ``>``, the first maybe ``~``; 1024 chars at most."""
    return text if len(text) <= 1024 and _PATHWAY.fullmatch(text) else None


def finite_seconds(text: str) -> float | None:
    """TEXT as a finite number, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Expected:
    """What extraction must give for one message's headers."""

    headers: dict[str, str]
    """The propagation headers that survive: usable, and not repeated with different values."""
    reasons: frozenset[str]
    parent: tuple[int, int, int] | None
    sent_at: float | None
    pathway: str | None


def expected(pairs: RawPairs, allowlist: tuple[str, ...]) -> Expected:
    """The oracle: what the README's rules say PAIRS (``(lower-case key, raw value)``) must give."""
    reasons: set[str] = set()
    texts: dict[str, set[str]] = {}
    for key, value in pairs:
        text, reason = usable(value)
        if reason is not None:
            reasons.add(reason)
        else:
            texts.setdefault(key, set()).add(str(text))
    if any(len(values) > 1 for values in texts.values()):
        reasons.add("duplicate")
    headers = {key: next(iter(values)) for key, values in texts.items() if len(values) == 1}
    parent = None
    if "traceparent" in headers:
        parent = w3c_parent(headers["traceparent"])
        if parent is None:
            reasons.add("malformed_traceparent")
    if "tracestate" in headers and not re.fullmatch(r"[\x20-\x7e\t]*", headers["tracestate"]):
        reasons.add("malformed_tracestate")  # W3C list text is visible ASCII, spaces and tabs: no CR or LF to forge a log line
    sent_at = None
    if HEADER_SENT_AT in headers:
        sent_at = finite_seconds(headers[HEADER_SENT_AT])
        if sent_at is None:
            reasons.add("malformed_sent_at")
    pathway = None
    if HEADER_PATHWAY in headers:
        pathway = pathway_of(headers[HEADER_PATHWAY])
        if pathway is None:
            reasons.add("malformed_pathway")
    if "baggage" in headers:
        members = [member for member in headers["baggage"].split(",") if member.strip()]
        kept = [member for member in members if allowed(baggage_key(member), allowlist)]
        if len(kept) < len(members):
            reasons.add("baggage_not_allowed")
        if len(kept) > MAX_BAGGAGE_MEMBERS:
            reasons.add("too_many_baggage_members")
            kept = sorted(kept, key=lambda member: baggage_key(member) not in OWN_KEYS)[:MAX_BAGGAGE_MEMBERS]
        job = baggage.get_baggage(BAGGAGE_JOB_ID, W3CBaggagePropagator().extract({"baggage": ",".join(kept)}))  # W3C's parse
        if job is not None and not re.fullmatch(r"[\x21-\x7e]{1,128}", str(job)):
            reasons.add("malformed_job_id")  # a job id is 1-128 visible ASCII characters
    return Expected(headers, frozenset(reasons), parent, sent_at, pathway)


def _lower(key: object) -> str:
    """A header key as lower-case text."""
    return (key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)).lower()


def headers_of_pairs(pairs: list[tuple[object, object]]) -> RawPairs:
    """The propagation headers of a header list or dict's items: keys are matched in any letter case."""
    return [(_lower(key), value) for key, value in pairs if _lower(key) in WANTED]


def headers_of_request(request: TaskRequest) -> RawPairs:
    """The propagation headers of a Celery task request: its lower-case attributes, and its nested ``headers`` in any case."""
    attributes = vars(request)
    found: RawPairs = [(key, value) for key, value in attributes.items() if key in WANTED]
    nested = attributes.get("headers")
    return found + (headers_of_pairs(list(nested.items())) if isinstance(nested, Mapping) else [])


# --- checking one message ------------------------------------------------------------------


class _Lines(logging.Handler):
    """Keeps the records it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep RECORD."""
        self.records.append(record)


@contextmanager
def hoptrace_log_lines() -> Iterator[list[logging.LogRecord]]:
    """The lines ``hoptrace.pipeline.propagation`` logs inside the block (kept out of pytest's capture)."""
    logger = logging.getLogger("hoptrace.pipeline.propagation")
    lines = _Lines()
    logger.addHandler(lines)
    propagating, logger.propagate = logger.propagate, False
    try:
        yield lines.records
    finally:
        logger.removeHandler(lines)
        logger.propagate = propagating


def parent_of(context: Context) -> SpanContext:
    """The span context CONTEXT carries (invalid for a root)."""
    return trace.get_current_span(context).get_span_context()


def check(found: RawPairs, oracle_pairs: RawPairs, allowlist: tuple[str, ...]) -> Extracted:
    """Assert every rule for one message whose getter FOUND these pairs (ORACLE_PAIRS: what the transport shape holds)."""
    assert sorted(map(repr, found)) == sorted(map(repr, oracle_pairs))
    want = expected(oracle_pairs, allowlist)
    with hoptrace_log_lines() as lines:
        extracted = extract(found, allowlist)

    assert set(extracted.fallbacks) == want.reasons
    assert (extracted.parent is None) == (want.parent is None)
    span = parent_of(extracted.context)
    if want.parent is not None:
        assert (span.trace_id, span.span_id, int(span.trace_flags), span.is_remote) == (*want.parent, True)
    assert extracted.sent_at == want.sent_at
    assert extracted.pathway == want.pathway
    assert extracted.sent_at is None or (type(extracted.sent_at) is float and math.isfinite(extracted.sent_at))

    kept = dict(baggage.get_all(extracted.context))
    assert len(kept) <= MAX_BAGGAGE_MEMBERS
    assert [key for key in kept if not allowed(key, allowlist)] == []
    if "baggage" not in want.headers:
        assert kept == {}  # a broken or oversized baggage header is dropped whole, unparsed

    assert len(lines) == (1 if extracted.fallbacks else 0)
    assert all(len(line.getMessage()) < 300 for line in lines)

    with hoptrace_log_lines():
        message = receive(STAGE, Delivery({}, found), allowlist)  # what every consumer does first
    assert (message.fallbacks, message.sent_at, message.pathway_in) == (extracted.fallbacks, extracted.sent_at, extracted.pathway)
    assert parent_of(message.context) == span
    assert jobs.job_id(message.context) is not None  # processed anyway, as a job of its own if none came
    if BAGGAGE_JOB_ID in kept:
        assert jobs.job_id(message.context) == kept[BAGGAGE_JOB_ID]
        assert re.fullmatch(r"[\x21-\x7e]{1,128}", str(kept[BAGGAGE_JOB_ID]))
    return extracted


# --- generated headers ---------------------------------------------------------------------


def _hex(digits: int) -> st.SearchStrategy[str]:
    """DIGITS random lower-case hex digits, not all zero."""
    return st.integers(1, 16**digits - 1).map(lambda value: f"{value:0{digits}x}")


def _mutated_hex(text: str) -> st.SearchStrategy[str]:
    """TEXT (hex digits) made invalid or suspicious: zeros, upper case, a non-hex digit, one digit short or long."""
    return st.sampled_from(["0" * len(text), text.upper(), text[:-1] + "g", text[:-1], text + "0", text[:-1] + "-", ""])


@st.composite
def traceparents(draw: st.DrawFn) -> str:
    """A valid traceparent, or one with one part mutated: version, an id, flags, separators, extra fields, padding."""
    parts = {"version": "00", "trace_id": draw(_hex(32)), "span_id": draw(_hex(16)), "flags": draw(st.sampled_from(["01", "00", "ff", "09"]))}
    separator, extra, before, after = "-", "", "", ""
    mutation = draw(st.sampled_from(["none", "none", "none", "none", "version", "trace_id", "span_id", "flags", "separator", "extra", "padding"]))
    if mutation == "version":
        parts["version"] = draw(st.sampled_from(["01", "cc", "fe", "ff", "FF", "0", "000", "0g", ""]))
        extra = draw(st.sampled_from(["", "-", "-00", "-what-comes-next", "x"]))
    elif mutation in ("trace_id", "span_id"):
        parts[mutation] = draw(_mutated_hex(parts[mutation]))
    elif mutation == "flags":
        parts["flags"] = draw(st.sampled_from(["1", "001", "0G", "FF", "", "0x"]))
    elif mutation == "separator":
        separator = draw(st.sampled_from(["_", "--", " ", ""]))
    elif mutation == "extra":
        extra = draw(st.sampled_from(["-", "-00", "-what-comes-next", "x", "0", "-\n", "\n"]))
    elif mutation == "padding":
        before, after = draw(st.sampled_from([(" ", ""), ("", "\t "), ("", "\n"), ("\n", ""), ("\u00a0", ""), ("", "\x00"), ("\t", " \n")]))
    return before + separator.join(parts.values()) + extra + after


def _pad(text: str, size: int) -> str:
    """TEXT repeated and cut to SIZE characters."""
    return (text * (size // max(len(text), 1) + 1))[:size]


_BAGGAGE_KEYS = st.one_of(
    st.sampled_from(
        [
            "tenant",
            "Tenant",
            " tenant ",
            "tenant%20",
            "%74enant",
            "app.region",
            "app.%2A",
            "secret",
            "k1",
            "k",
            "ab%63",
            "ab3",
            "t+",
            "t%",
            "t",
            BAGGAGE_JOB_ID,
            BAGGAGE_JOB_STARTED_AT,
            "hoptrace%2Ejob%2Eid",
            "HOPTRACE.JOB.ID",
            "",
        ]
    ),
    st.from_regex(r"[A-Za-z0-9._*%+!#$&'^`|~-]{1,12}", fullmatch=True),
)
_BAGGAGE_VALUES = st.one_of(
    st.sampled_from(["acme", "a%2Cb", "a b", "", "x;prop=1", "x;flag", "x;", "%E2%82%AC", "%ZZ", "v=1", "1700000000.5", "é"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
)


@st.composite
def baggage_members(draw: st.DrawFn) -> str:
    """One list-member: ``key=value`` with optional whitespace, properties and percent-encoding, or a broken one."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["", " ", "noequals", "=v", ";", "tenant", "==", "\t"]))
    space = draw(st.sampled_from(["", "", " ", "\t"]))
    return f"{space}{draw(_BAGGAGE_KEYS)}{space}={space}{draw(_BAGGAGE_VALUES)}{space}"


@st.composite
def baggage_headers(draw: st.DrawFn) -> str:
    """A baggage header: a few members, around 180 members, or around 8192 bytes."""
    kind = draw(st.integers(0, 5))
    if kind <= 1:
        return ",".join(draw(st.lists(baggage_members(), max_size=12)))
    if kind in (2, 5):  # around the member limit, hoptrace's own keys anywhere among them
        count = draw(st.integers(MAX_BAGGAGE_MEMBERS - 10, MAX_BAGGAGE_MEMBERS + 20))
        own = draw(st.sets(st.integers(0, count), max_size=3))
        return ",".join(f"{BAGGAGE_JOB_ID}=job-{i}" if i in own else f"app.k{i}=1" for i in range(count))
    if kind == 3:  # around the byte limit, counted in bytes, not characters
        size = draw(st.integers(MAX_HEADER_BYTES - 12, MAX_HEADER_BYTES + 12))
        unit = draw(st.sampled_from(["x", "é", "%20"]))
        head = f"{BAGGAGE_JOB_ID}=job-1,tenant="
        body = _pad(unit, size)
        while len((head + body).encode()) > size and body:
            body = body[:-1]
        return head + body
    return ",".join(draw(baggage_members()) for _ in range(draw(st.integers(1, 3)))) + "," + _pad("k=v,", draw(st.integers(7000, 9000)))


_SENT_AT = st.one_of(
    st.sampled_from(
        ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e308", "1e-400", " 1700000000.5 ", "\t1.5\n", "1_700_000_000"]
        + ["0x10", "", " ", "١٧٠٠", "1.5.0", "1,5", "+1", "--1", "1e", "e5", "1700000000.123456"]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=4e9).map(lambda seconds: f"{seconds:.6f}"),
)
_STAGES = st.one_of(
    st.sampled_from(["validate", "charge", "plain.add", "orders:ship@eu", "a", "x" * 128, "~", "…", "a b", "a>b", "", "é", "a\n"]),
    st.from_regex(r"[A-Za-z0-9_.:@-]{1,12}", fullmatch=True),
    st.text(max_size=6),
)
_PATHWAYS = st.one_of(
    st.lists(_STAGES, min_size=1, max_size=10).map(">".join),
    st.lists(_STAGES, min_size=1, max_size=10).map(lambda stages: "~>" + ">".join(stages)),
    st.sampled_from(["", ">", "a>", ">a", "a>>b", "~", "~>", "a>~>b", "x" * 129, " validate", "validate\n", "…>a"]),
    st.integers(1018, 1030).map(lambda size: ">".join(["abcd"] * (size // 5 + 1))[:size].rstrip(">")),
)
_TRACESTATE = st.one_of(
    st.sampled_from(["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "", "a=1,a=2", "=", "k@vendor=v", "UPPER=1", "a=b c", "a=b,"]),
    st.builds(lambda size: _pad("k=v,", size), st.integers(500, 520)),
    st.text(max_size=40),
)
_JUNK: st.SearchStrategy[object] = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.binary(max_size=40).map(bytearray),
    st.binary(max_size=40),
    st.binary(min_size=1, max_size=20).map(lambda data: data + b"\xff\xfe"),  # never UTF-8
    st.text(max_size=20),
    st.builds(lambda text, surrogate: text + surrogate, st.text(max_size=8), st.sampled_from(["\ud800", "\udfff", "\udc80"])),
)


def _as_wire(text: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    """TEXT as the broker may hand it: str, or UTF-8 bytes."""
    return text.flatmap(lambda value: st.sampled_from([value, value.encode("utf-8", "surrogatepass")]))


def _huge(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """TEXT stretched to around or well past the 8192-byte header limit."""
    return st.builds(
        _pad, text.filter(bool), st.one_of(st.integers(MAX_HEADER_BYTES - 8, MAX_HEADER_BYTES + 8), st.integers(MAX_HEADER_BYTES, 200_000))
    )


_NEAR_VALID: dict[str, st.SearchStrategy[str]] = {
    "traceparent": traceparents(),
    "tracestate": _TRACESTATE,
    "baggage": baggage_headers(),
    HEADER_SENT_AT: _SENT_AT,
    HEADER_PATHWAY: _PATHWAYS,
}


def values_for(key: str) -> st.SearchStrategy[object]:
    """Values for a header named KEY: mostly near-valid for it, sometimes huge, sometimes junk."""
    near = _NEAR_VALID.get(key, st.text(max_size=10))
    return st.one_of(_as_wire(near), _as_wire(near), _as_wire(near), _as_wire(_huge(near)), _JUNK)


_UNRELATED = ["x-app", "content-type", "traceparent2", "trace parent", " traceparent", "traceparent\x00", "baggage-x", "id", "sentry-trace"]


@st.composite
def keys_for(draw: st.DrawFn, name: str) -> object:
    """The header NAME as delivered: in any letter case, str or bytes; now and then behind a non-UTF-8 byte (another key then)."""
    mask = draw(st.integers(0, 2 ** len(name) - 1))
    cased = draw(st.sampled_from([name, name, name.upper(), name.title(), "".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(name))]))
    if draw(st.integers(0, 9)) == 0:
        return b"\xff" + cased.encode()
    return draw(st.sampled_from([cased, cased, cased.encode()]))


@st.composite
def header_sets(draw: st.DrawFn, min_size: int = 0, max_size: int = 6) -> list[tuple[object, object]]:
    """A message's headers in delivery order: often what a producer sent (each header maybe broken), other
    and broken headers, and repeated keys with equal and with different values."""
    pairs: list[tuple[object, object]] = []
    if draw(st.booleans()):
        for name in ("traceparent", "tracestate", "baggage", HEADER_SENT_AT, HEADER_PATHWAY):
            if name == "traceparent" or draw(st.booleans()):
                value = draw(_as_wire(_NEAR_VALID[name]) if draw(st.integers(0, 3)) else values_for(name))
                pairs.append((draw(keys_for(name)), value))
    for _ in range(draw(st.integers(min_size, max_size))):
        name = draw(st.sampled_from(sorted(WANTED) * 2 + _UNRELATED))
        pairs.append((draw(keys_for(name)), draw(values_for(name))))
    for _ in range(draw(st.integers(0, 2)) if pairs else 0):
        key, value = draw(st.sampled_from(pairs))
        how = draw(st.integers(0, 2))
        if how == 0:  # the same value again, maybe as the other type or in another case
            text, _ = usable(value)
            value = draw(st.sampled_from([value, text.encode() if text is not None else value]))
            key = _lower(key).upper() if draw(st.booleans()) else key
        elif how == 1:  # the same key, another value
            value = draw(values_for(_lower(key)))
        pairs.append((key, value))
    return pairs


def as_dict(pairs: list[tuple[object, object]]) -> dict[str, object]:
    """PAIRS as Celery message headers: a dict of str keys (a repeated key keeps its last value)."""
    return {key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key): value for key, value in pairs}


def as_request(headers: dict[str, object], nested: object) -> TaskRequest:
    """What ``task.request`` is on a worker for a message with HEADERS (and NESTED under ``headers`` unless it is absent)."""
    request = {"id": "task-1", "task": "fuzz.orders", "retries": 0, **headers}
    return TaskRequest(request if nested is _ABSENT else {**request, "headers": nested})


_ABSENT = object()
_NESTED = st.one_of(
    st.just(_ABSENT), st.none(), header_sets(max_size=4).map(as_dict), st.sampled_from([["traceparent", VALID_TRACEPARENT], "traceparent"])
)


# --- the properties ------------------------------------------------------------------------


@fuzz_settings(1000)
@given(pairs=header_sets(), nested=_NESTED, allowlist=st.sampled_from(ALLOWLISTS))
def test_every_header_set_follows_the_untrusted_header_rules_on_both_transports(
    pairs: list[tuple[object, object]], nested: object, allowlist: tuple[str, ...]
) -> None:
    """Kafka's header list, Celery's header dict and Celery's task request: the same rules, whatever the headers."""
    check(kafka_pairs(pairs, WANTED), headers_of_pairs(pairs), allowlist)

    headers = as_dict(pairs)
    check(dict_pairs(headers, WANTED), headers_of_pairs(list(headers.items())), allowlist)

    request = as_request(headers, nested)
    check(celery_request_pairs(request, WANTED), headers_of_request(request), allowlist)


@fuzz_settings(300)
@given(pairs=header_sets(min_size=1, max_size=3), copies=st.integers(2, 4), same=st.booleans(), allowlist=st.sampled_from(ALLOWLISTS))
def test_a_repeated_header_counts_once_when_equal_and_is_dropped_when_not(
    pairs: list[tuple[object, object]], copies: int, same: bool, allowlist: tuple[str, ...]
) -> None:
    """Every header comes COPIES times: the same as once. Then a valid traceparent after a different usable one: both dropped, a root."""
    repeated = [pair for pair in pairs for _ in range(copies)]
    if not same:
        repeated.append(("traceparent", VALID_TRACEPARENT))
    extracted = check(kafka_pairs(repeated, WANTED), headers_of_pairs(repeated), allowlist)
    single = extract(kafka_pairs(pairs, WANTED), allowlist)
    if same:
        assert (set(extracted.fallbacks), extracted.parent is None, extracted.sent_at) == (
            set(single.fallbacks),
            single.parent is None,
            single.sent_at,
        )
        assert parent_of(extracted.context) == parent_of(single.context)
        assert dict(baggage.get_all(extracted.context)) == dict(baggage.get_all(single.context))
    elif any(_lower(key) == "traceparent" and usable(value)[0] not in (None, VALID_TRACEPARENT) for key, value in pairs):
        assert "duplicate" in extracted.fallbacks and extracted.parent is None


@fuzz_settings(200)
@given(header=_as_wire(_huge(st.sampled_from([VALID_TRACEPARENT, "k=v,", "hoptrace.job.id=j,", "1", "é"]))), name=st.sampled_from(sorted(WANTED)))
def test_a_header_over_8192_bytes_is_dropped_unparsed(header: object, name: str) -> None:
    """Whatever it holds, a header over the limit is ``oversized`` and gives nothing; one at the limit is parsed."""
    size = len(header) if isinstance(header, bytes) else len(str(header).encode())
    extracted = check(kafka_pairs([(name, header)], WANTED), [(name, header)], ("*",))
    assert ("oversized" in extracted.fallbacks) == (size > MAX_HEADER_BYTES)
    if size > MAX_HEADER_BYTES:
        assert (extracted.fallbacks, extracted.parent is None, extracted.sent_at, dict(baggage.get_all(extracted.context))) == (
            ("oversized",),
            True,
            None,
            {},
        )


def _many_members(pool: list[str], count: int) -> list[str]:
    """COUNT members: distinct ``app.k<i>`` ones, every eighth one taken from POOL instead (broken, repeated, not allowed...)."""
    return [pool[i % len(pool)] if i % 8 == 0 else f"app.k{i}=v{i}" for i in range(count)]


@fuzz_settings(200)
@given(
    members=st.builds(_many_members, st.lists(baggage_members(), min_size=1, max_size=6), st.integers(MAX_BAGGAGE_MEMBERS, MAX_BAGGAGE_MEMBERS + 50)),
    own=st.lists(st.sampled_from([f"{BAGGAGE_JOB_ID}=job-7", f"{BAGGAGE_JOB_STARTED_AT}=1700000000.5"]), max_size=2, unique=True),
    where=st.integers(0, MAX_BAGGAGE_MEMBERS + 50),
    allowlist=st.sampled_from(ALLOWLISTS),
)
def test_baggage_around_180_members_keeps_at_most_180_and_the_job_first(
    members: list[str], own: list[str], where: int, allowlist: tuple[str, ...]
) -> None:
    """However many members come and wherever hoptrace's own sit among them, at most 180 are kept, and the job is not pushed out."""
    members[where:where] = own
    header = ",".join(members)
    pairs: RawPairs = [("traceparent", VALID_TRACEPARENT), ("baggage", header)]
    extracted = check(pairs, pairs, allowlist)
    kept = dict(baggage.get_all(extracted.context))
    if len(header.encode()) <= MAX_HEADER_BYTES and header.isascii() and "malformed_job_id" not in extracted.fallbacks:
        assert {member.split("=")[0] for member in own} <= set(kept)  # (a later, malformed job id replaces the job, as the oracle says)


# --- differential: clean, valid headers give what OpenTelemetry gives ----------------------

_TOKEN = st.from_regex(r"[A-Za-z0-9!#$&'*+.^_`|~-]{1,16}", fullmatch=True)
_TRACESTATE_KEY = st.from_regex(r"[a-z][a-z0-9_*/-]{0,12}(@[a-z][a-z0-9_*/-]{0,6})?", fullmatch=True)
_TRACESTATE_VALUE = st.from_regex(r"[!-+\--<>-~]{0,15}[!-+\--<>-~]", fullmatch=True)


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[dict[str, str], tuple[str, ...]]:
    """Clean headers a well-behaved producer sends, and an allowlist that keeps all of their baggage."""
    trace_id, span_id = draw(st.integers(1, 2**128 - 1)), draw(st.integers(1, 2**64 - 1))
    version, extra = draw(st.sampled_from([("00", ""), ("00", ""), ("cc", "-future-field")]))
    headers = {"traceparent": f"{version}-{trace_id:032x}-{span_id:016x}-{draw(st.integers(0, 255)):02x}{extra}"}
    if draw(st.booleans()):
        members = draw(st.dictionaries(_TRACESTATE_KEY, _TRACESTATE_VALUE, min_size=1, max_size=8))
        headers["tracestate"] = ",".join(f"{key}={value}" for key, value in members.items())
    members = draw(st.dictionaries(_TOKEN.filter(lambda key: "%" not in key and "+" not in key), st.text(max_size=30), max_size=20))
    if draw(st.booleans()):
        members[BAGGAGE_JOB_ID] = draw(st.from_regex(r"[0-9a-f]{32}", fullmatch=True))
        members[BAGGAGE_JOB_STARTED_AT] = f"{draw(st.floats(0, 4e9)):.6f}"
    if members:
        headers["baggage"] = ",".join(f"{key}={quote(value.strip(), safe='')}" for key, value in members.items())
    if draw(st.booleans()):
        headers[HEADER_SENT_AT] = f"{draw(st.floats(0, 4e9)):.6f}"
    if draw(st.booleans()):
        stages = draw(st.lists(st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True), min_size=1, max_size=8))
        headers[HEADER_PATHWAY] = ("~>" if draw(st.booleans()) else "") + ">".join(stages)
    exact = tuple(re.sub(r"([*?\[])", r"[\1]", key) for key in members if key not in OWN_KEYS)
    return headers, draw(st.sampled_from([("*",), exact]))


@fuzz_settings(300)
@given(case=valid_headers(), shape=st.sampled_from(["kafka", "celery"]))
def test_valid_headers_give_what_opentelemetry_gives(case: tuple[dict[str, str], tuple[str, ...]], shape: str) -> None:
    """Same parent span context (ids, flags, tracestate, remote) and the same baggage as ``opentelemetry.propagate.extract``."""
    headers, allowlist = case
    found = kafka_pairs([(key, value.encode()) for key, value in headers.items()], WANTED) if shape == "kafka" else dict_pairs(headers, WANTED)

    extracted = extract(found, allowlist)
    reference = propagate.extract(headers, context=Context())

    assert extracted.fallbacks == ()
    assert parent_of(extracted.context) == parent_of(reference)
    assert parent_of(extracted.context).is_valid
    assert dict(baggage.get_all(extracted.context)) == dict(baggage.get_all(reference))
    assert extracted.sent_at == (float(headers[HEADER_SENT_AT]) if HEADER_SENT_AT in headers else None)
    assert extracted.pathway == headers.get(HEADER_PATHWAY)


# --- the shrunk failures, kept as plain examples -------------------------------------------


def test_a_lone_surrogate_in_a_celery_header_is_not_utf8() -> None:
    """JSON's ``"\\ud800"`` decodes to a lone surrogate; as baggage it used to raise UnicodeEncodeError out of extract."""
    pairs: RawPairs = [("traceparent", VALID_TRACEPARENT), ("baggage", f"{BAGGAGE_JOB_ID}=\ud800")]
    extracted = check(pairs, pairs, ())
    assert (extracted.fallbacks, extracted.parent is None) == (("non_utf8",), False)


@pytest.mark.parametrize(("member", "allowlist"), [("ab%63=1", ("*3",)), ("t+=2", ("t?",))])
def test_a_percent_encoded_key_cannot_slip_past_the_allowlist(member: str, allowlist: tuple[str, ...]) -> None:
    """The allowlist is matched against the key as parsed (``abc``, ``t``), not as written (``ab%63``, ``t+``)."""
    pairs: RawPairs = [("baggage", member)]
    extracted = check(pairs, pairs, allowlist)
    assert (dict(baggage.get_all(extracted.context)), extracted.fallbacks) == ({}, ("baggage_not_allowed",))
