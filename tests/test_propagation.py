"""Headers in and out: hoptrace.pipeline.propagation and hoptrace.pipeline.jobs (the carriers are in test_carriers).

Incoming headers are untrusted: every broken case must give its exact fallback reasons and
never raise. Span contexts are built with the real OpenTelemetry API; no broker is needed.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context, set_value
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hoptrace.pipeline import jobs
from hoptrace.pipeline.carriers import APPEND_SETTER, DICT_SETTER, KAFKA_SETTER, celery_request_pairs, dict_pairs, kafka_pairs
from hoptrace.pipeline.jobs import JOB_ID
from hoptrace.pipeline.messages import Delivery
from hoptrace.pipeline.pathways import PATHWAY_KEY
from hoptrace.pipeline.propagation import MAX_BAGGAGE_MEMBERS, Extracted, _extract, _sound, extract, fields, inject
from hoptrace.pipeline.receiving import receive
from hoptrace.pipeline.semconv import BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT, HEADER_PATHWAY, HEADER_SENT_AT
from hoptrace.pipeline.stages import KafkaTransport, Stage
from tests.test_fuzz_headers import ALLOWLISTS, as_dict, header_sets, valid_headers

STAGE = Stage("charge", KafkaTransport("payments", "charge"), handler=lambda payload, context: None)
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def sending(flags: int = TraceFlags.SAMPLED, members: dict[str, str] | None = None) -> Context:
    """A context as a producer has it: a span (TRACE_ID, SPAN_ID) and baggage MEMBERS."""
    context = trace.set_span_in_context(NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, False, TraceFlags(flags))))
    for key, value in (members or {}).items():
        context = baggage.set_baggage(key, value, context)
    return context


def injected(context: Context | None = None) -> dict[str, str]:
    """The headers ``inject`` writes into an empty dict for a message published in CONTEXT."""
    headers: dict[str, str] = {}
    inject(headers, DICT_SETTER, context)
    return headers


def parent(extracted: Extracted) -> SpanContext:
    return trace.get_current_span(extracted.context).get_span_context()


def members(extracted: Extracted) -> dict[str, object]:
    return dict(baggage.get_all(extracted.context))


def as_kafka(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(key, value.encode()) for key, value in headers.items()]


def as_celery(headers: dict[str, str]) -> Any:
    return dict(headers).items()


# --- round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", [as_kafka, as_celery], ids=["kafka", "celery"])
@pytest.mark.parametrize("flags", [TraceFlags.SAMPLED, TraceFlags.DEFAULT], ids=["sampled", "not-sampled"])
def test_inject_then_extract_round_trips(carrier: Callable[[dict[str, str]], Any], flags: int) -> None:
    job = {BAGGAGE_JOB_ID: "job-1", BAGGAGE_JOB_STARTED_AT: "1700000000.250000", "tenant": "acme"}
    before = time.time()
    headers = injected(sending(flags, job))
    after = time.time()

    extracted = extract(carrier(headers), allowlist=("tenant",))

    assert sorted(headers) == ["baggage", HEADER_SENT_AT, "traceparent"]
    assert re.fullmatch(r"\d{10}\.\d{6}", headers[HEADER_SENT_AT])
    assert (parent(extracted).trace_id, parent(extracted).span_id) == (TRACE_ID, SPAN_ID)
    assert (parent(extracted).trace_flags.sampled, parent(extracted).is_remote) == (flags == TraceFlags.SAMPLED, True)
    assert members(extracted) == job
    assert extracted.sent_at is not None and before - 1e-6 <= extracted.sent_at <= after + 1e-6
    assert (extracted.parent is None, extracted.fallbacks) == (False, ())


def test_inject_defaults_to_the_current_context() -> None:
    token = otel_context.attach(sending())
    try:
        headers = injected()
    finally:
        otel_context.detach(token)
    assert headers["traceparent"] == TRACEPARENT


# --- the pathway header ----------------------------------------------------------------------


def _kafka_round_trip(context: Context, existing: list[tuple[str, bytes]]) -> list[tuple[str, object]]:
    """The pairs a Kafka consumer's getter finds in a record whose headers ``inject`` wrote into EXISTING."""
    headers = list(existing)
    inject(headers, KAFKA_SETTER if headers else APPEND_SETTER, context)
    return kafka_pairs(headers, fields())


def _celery_round_trip(context: Context, existing: list[tuple[str, bytes]]) -> list[tuple[str, object]]:
    """The pairs a Celery worker's getter finds in a message whose header dict ``inject`` wrote into EXISTING."""
    headers: dict[str, object] = {key: value.decode() for key, value in existing}
    inject(headers, DICT_SETTER, context)
    return dict_pairs(headers, fields())


@pytest.mark.parametrize("existing", [[], [("x-app", b"shop"), ("Hoptrace-Pathway", b"stale>route")]], ids=["fresh", "replaced"])
@pytest.mark.parametrize("carrier", [_kafka_round_trip, _celery_round_trip], ids=["kafka", "celery"])
@pytest.mark.parametrize("path", ["sound", "general"])
def test_the_pathway_of_the_handlers_context_round_trips(
    path: str, carrier: Callable[[Context, list[tuple[str, bytes]]], list[tuple[str, object]]], existing: list[tuple[str, bytes]]
) -> None:
    handler = set_value(PATHWAY_KEY, "~>validate>charge", sending(members=JOB))
    pairs = carrier(handler, existing)
    assert [value for key, value in pairs if key == HEADER_PATHWAY] in (["~>validate>charge"], [b"~>validate>charge"])  # once, replaced
    _extract(pairs, ())  # the baggage keys judged, so the one-pass path may take these headers
    extracted = _sound(pairs, ()) if path == "sound" else _extract(pairs, ())
    assert extracted is not None
    assert (extracted.pathway, extracted.fallbacks, extracted.sent_at is not None, members(extracted)) == ("~>validate>charge", (), True, JOB)
    assert receive(STAGE, Delivery({}, pairs)).pathway_in == "~>validate>charge"


def test_a_publish_outside_any_handler_writes_no_pathway() -> None:
    assert HEADER_PATHWAY not in injected(sending(members=JOB))
    assert (extract(injected(sending(members=JOB)).items()).pathway, HEADER_PATHWAY in fields()) == (None, True)


@pytest.mark.parametrize(
    "value",
    ["", "validate>>charge", "validate>", "caf\u00e9", "a b", "a\r\nforged", "x" * 129, ">".join(["ab"] * 342), "~", "a>~>b", b"\xff", None],
    ids=["empty", "empty-stage", "trailing", "not-ascii", "space", "crlf", "129-chars", "1025-chars", "cut-only", "cut-inside", "bytes", "none"],
)
def test_a_malformed_pathway_is_ignored_and_counted(value: object) -> None:
    reason = {None: "none_value", b"\xff": "non_utf8"}.get(value, "malformed_pathway")  # type: ignore[call-overload]
    extracted = extract([("traceparent", TRACEPARENT), (HEADER_PATHWAY, value)])
    assert (extracted.pathway, extracted.fallbacks, extracted.parent is None) == (None, (reason,), False)


_HYPOTHESIS = settings(max_examples=400, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


@_HYPOTHESIS
@given(
    case=st.one_of(valid_headers().map(lambda case: (list(case[0].items()), case[1])), st.tuples(header_sets(), st.sampled_from(ALLOWLISTS))),
    shape=st.sampled_from(["kafka", "celery", "celery-request"]),
)
def test_the_one_pass_path_gives_what_the_general_path_gives(case: tuple[list[tuple[object, object]], tuple[str, ...]], shape: str) -> None:
    """``_sound`` takes only what it can read in one pass, and then gives exactly ``_extract``'s result (the pathway included)."""
    pairs, allowlist = case
    if shape == "kafka":
        found = kafka_pairs(pairs, fields())
    elif shape == "celery":
        found = dict_pairs(as_dict(pairs), fields())
    else:
        found = celery_request_pairs(celery_request(as_dict(pairs)), fields())
    logging.disable(logging.WARNING)
    try:
        general = _extract(found, allowlist)  # first: it judges the baggage keys, which the one-pass path needs
        sound = _sound(found, allowlist)
    finally:
        logging.disable(logging.NOTSET)
    if sound is not None:
        assert _seen(sound) == _seen(general)


def celery_request(headers: dict[Any, object]) -> SimpleNamespace:
    """A Celery task request as a worker sees one: the message's headers as attributes, and again nested under ``headers``."""
    return SimpleNamespace(**{key: value for key, value in headers.items() if isinstance(key, str) and key != "headers"}, headers=headers)


def test_a_celery_request_whose_headers_come_twice_takes_the_one_pass_path() -> None:
    headers = {"traceparent": TRACEPARENT, "baggage": f"{BAGGAGE_JOB_ID}={'a' * 32}", HEADER_SENT_AT: "1700000000.5"}
    found = celery_request_pairs(celery_request(headers), fields())
    general = _extract(found, ())
    sound = _sound(found, ())
    assert len(found) == 6
    assert sound is not None
    assert _seen(sound) == _seen(general)
    assert (sound.fallbacks, sound.sent_at, format(sound.parent.span_id, "016x") if sound.parent else None) == ((), 1700000000.5, "00f067aa0ba902b7")


def test_a_celery_request_whose_two_copies_differ_is_counted_as_a_duplicate() -> None:
    request = SimpleNamespace(traceparent=TRACEPARENT, headers={"traceparent": OTHER_TRACEPARENT})
    found = celery_request_pairs(request, fields())
    assert _sound(found, ()) is None
    assert (_extract(found, ()).fallbacks, _extract(found, ()).parent) == (("duplicate",), None)


def _seen(extracted: Extracted) -> tuple[object, ...]:
    span = parent(extracted)
    context = (span.trace_id, span.span_id, int(span.trace_flags), span.is_remote, span.trace_state.to_header())
    return (context, members(extracted), extracted.sent_at, extracted.pathway, extracted.fallbacks, extracted.parent, dict(extracted.baggage))


def test_no_headers_is_a_root_without_fallbacks() -> None:
    extracted = extract([])
    assert (extracted.parent is None, extracted.sent_at, extracted.fallbacks, members(extracted)) == (True, None, (), {})


# --- untrusted headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "fallbacks", "is_root"),
    [
        pytest.param([("traceparent", b"\xff\xfe00-")], ("non_utf8",), True, id="non-utf8-traceparent"),
        pytest.param([("traceparent", TRACEPARENT), ("baggage", b"tenant=\xe9")], ("non_utf8",), False, id="non-utf8-baggage"),
        pytest.param([("traceparent", None)], ("none_value",), True, id="none-traceparent"),
        pytest.param([("traceparent", TRACEPARENT), ("traceparent", OTHER_TRACEPARENT)], ("duplicate",), True, id="duplicate"),
        pytest.param([("traceparent", TRACEPARENT.encode()), ("traceparent", TRACEPARENT)], (), False, id="duplicate-identical"),
        pytest.param([("traceparent", "00-xyz")], ("malformed_traceparent",), True, id="malformed"),
        pytest.param(
            [("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
            ("malformed_traceparent",),
            True,
            id="zero-trace-id",
        ),
        pytest.param(
            [("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
            ("malformed_traceparent",),
            True,
            id="version-ff",
        ),
        pytest.param([("traceparent", "")], ("malformed_traceparent",), True, id="empty"),
        pytest.param([("traceparent", 42)], ("not_text",), True, id="int"),
        pytest.param([("traceparent", ["00-..."])], ("not_text",), True, id="list"),
        pytest.param([("traceparent", TRACEPARENT), (HEADER_SENT_AT, "yesterday")], ("malformed_sent_at",), False, id="sent-at"),
        pytest.param([(b"traceparent", TRACEPARENT.encode())], (), False, id="bytes-key"),
        pytest.param([("TRACEPARENT", TRACEPARENT), ("Baggage", "tenant=acme")], (), False, id="upper-case-keys"),
        pytest.param(
            [("x-app", b"\xff"), ("x-none", None), ("x-int", 3), (b"\xff", b"\xff"), ("traceparent", TRACEPARENT)],
            (),
            False,
            id="broken-unrelated-headers",
        ),
        pytest.param(
            [("traceparent", None), ("baggage", b"\xff"), (HEADER_SENT_AT, 1.5)],
            ("none_value", "non_utf8", "not_text"),
            True,
            id="several",
        ),
    ],
)
def test_broken_headers_fall_back_and_never_raise(pairs: list[tuple[object, object]], fallbacks: tuple[str, ...], is_root: bool) -> None:
    extracted = extract(pairs, allowlist=("tenant",))

    assert (extracted.fallbacks, extracted.parent is None) == (fallbacks, is_root)
    if not is_root:
        assert parent(extracted).trace_id == TRACE_ID


@pytest.mark.parametrize(
    "job",
    ["job%0Aforged%20log%20line", "job%1B%5D0%3Btitle%07", "a%20b", "x" * 129, "%C3%A9t%C3%A9"],
    ids=["newline", "escape", "space", "129-chars", "not-ascii"],
)
def test_a_job_id_that_could_forge_a_line_starts_a_new_job_and_is_counted(job: str, caplog: pytest.LogCaptureFixture) -> None:
    """Job ids reach logs, span attributes and the terminal: one that is not 1-128 visible ASCII characters is dropped with its start."""
    header = f"hoptrace.job.id={job},hoptrace.job.started_at=1700000000.5,tenant=acme"
    extracted = extract([("traceparent", TRACEPARENT), ("baggage", header)], allowlist=("tenant",))
    assert (extracted.fallbacks, extracted.parent is None, members(extracted)) == (("malformed_job_id",), False, {"tenant": "acme"})
    assert "malformed_job_id" in caplog.text
    incoming = receive(Stage("s", KafkaTransport("t", "g"), handler=lambda payload: None), Delivery({}, [("baggage", header)], {}))
    assert JOB_ID.fullmatch(incoming.job_id) and incoming.job_id != job, incoming.job_id


def test_a_tracestate_with_a_line_break_is_dropped_counted_and_forges_no_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    extracted = extract([("traceparent", TRACEPARENT), ("tracestate", "a=b,\r\nFORGED LINE x=y")])
    assert (extracted.fallbacks, extracted.parent is None, parent(extracted).trace_state.to_header()) == (("malformed_tracestate",), False, "")
    assert "FORGED" not in caplog.text
    assert [record.getMessage().count("\n") for record in caplog.records] == [0]


@pytest.mark.parametrize("job", ["4f1c2d3e5a6b7c8d9e0f1a2b3c4d5e6f", "order-17:eu/acme", "x" * 128])
def test_a_sound_job_id_is_kept(job: str) -> None:
    header = f"hoptrace.job.id={job},hoptrace.job.started_at=1700000000.5"
    extracted = extract([("traceparent", TRACEPARENT), ("baggage", header)])
    assert (extracted.fallbacks, members(extracted)[BAGGAGE_JOB_ID]) == ((), job)


def test_a_broken_sent_at_leaves_sent_at_none() -> None:
    assert extract([(HEADER_SENT_AT, "12:00")]).sent_at is None
    assert extract([(HEADER_SENT_AT, b"1700000000.5")]).sent_at == 1700000000.5


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_a_non_finite_sent_at_is_malformed(value: str) -> None:
    extracted = extract([(HEADER_SENT_AT, value)])
    assert (extracted.sent_at, extracted.fallbacks) == (None, ("malformed_sent_at",))


def test_a_huge_baggage_is_dropped_unparsed_in_one_short_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    extracted = extract([("traceparent", TRACEPARENT), ("baggage", b"k=" + b"v" * 1_000_000)])

    assert (extracted.fallbacks, extracted.parent is None, members(extracted)) == (("oversized",), False, {})
    assert [record.name for record in caplog.records] == ["hoptrace.pipeline.propagation"]
    assert "oversized" in caplog.records[0].getMessage()
    assert len(caplog.records[0].getMessage()) < 300


def test_oversized_is_measured_in_bytes(caplog: pytest.LogCaptureFixture) -> None:
    extracted = extract({"baggage": "k=" + "é" * 4100}.items())

    assert extracted.fallbacks == ("oversized",)
    assert all(len(record.getMessage()) < 300 for record in caplog.records)


def test_random_headers_never_raise() -> None:
    rng = random.Random(20240601)
    keys: list[object] = ["traceparent", "tracestate", "baggage", HEADER_SENT_AT, b"TraceParent", "x", None, 7]
    values: list[Callable[[], object]] = [
        lambda: rng.randbytes(rng.randrange(0, 120)),
        lambda: rng.randbytes(rng.randrange(0, 60)).decode("latin-1"),
        lambda: TRACEPARENT[: rng.randrange(0, len(TRACEPARENT) + 1)],
        lambda: ",".join(f"{rng.choice('ab=;%,')}{i}={rng.random()}" for i in range(rng.randrange(0, 5))),
        lambda: None,
        lambda: rng.random(),
    ]
    for _ in range(500):
        pairs = [(rng.choice(keys), rng.choice(values)()) for _ in range(rng.randrange(0, 6))]
        assert isinstance(extract(pairs, allowlist=("*",)), Extracted)


# --- baggage allowlist and bounds ----------------------------------------------------------

JOB = {BAGGAGE_JOB_ID: "job-1", BAGGAGE_JOB_STARTED_AT: "1700000000.250000"}
INCOMING = {**JOB, "tenant": "acme", "app.region": "eu", "app.zone": "eu-1", "App.user": "u", "secret": "s"}


@pytest.mark.parametrize(
    ("allowlist", "kept", "fallbacks"),
    [
        ((), JOB, ("baggage_not_allowed",)),
        (("tenant",), {**JOB, "tenant": "acme"}, ("baggage_not_allowed",)),
        (("app.*", "tenant"), {**JOB, "tenant": "acme", "app.region": "eu", "app.zone": "eu-1"}, ("baggage_not_allowed",)),
        (("*",), INCOMING, ()),
    ],
)
def test_baggage_is_filtered_by_the_allowlist(allowlist: tuple[str, ...], kept: dict[str, str], fallbacks: tuple[str, ...]) -> None:
    extracted = extract(injected(sending(members=INCOMING)).items(), allowlist=allowlist)

    assert (members(extracted), extracted.fallbacks, extracted.parent is None) == (kept, fallbacks, False)


def _many_members(count: int) -> str:
    header = ",".join([f"m{i}=1" for i in range(count)])
    assert len(header.encode()) < 8192
    return header


def test_at_most_180_baggage_members_are_kept() -> None:
    extracted = extract([("baggage", _many_members(200))], allowlist=("m*",))

    assert members(extracted) == {f"m{i}": "1" for i in range(MAX_BAGGAGE_MEMBERS)}


def test_too_many_baggage_members_is_reported() -> None:
    assert extract([("baggage", _many_members(200))], allowlist=("m*",)).fallbacks == ("too_many_baggage_members",)


def test_junk_members_cannot_push_the_job_out() -> None:
    header = ",".join([f"junk{i}=1" for i in range(199)] + ["hoptrace.job.id=job-1"])

    extracted = extract([("baggage", header)])

    assert (members(extracted), extracted.fallbacks) == ({BAGGAGE_JOB_ID: "job-1"}, ("baggage_not_allowed",))


# --- OTEL_PROPAGATORS ----------------------------------------------------------------------


@pytest.fixture
def tracecontext_only() -> Iterator[None]:
    """The global textmap as ``OTEL_PROPAGATORS=tracecontext`` makes it; restored afterwards."""
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    yield
    propagate.set_global_textmap(previous)


@pytest.mark.usefixtures("tracecontext_only")
def test_the_global_propagators_decide_what_is_injected_and_extracted() -> None:
    headers = injected(sending(members=JOB))

    assert sorted(headers) == [HEADER_SENT_AT, "traceparent"]
    for incoming in ("hoptrace.job.id=job-1", b"\xff"):  # a header no propagator reads is not even inspected
        extracted = extract([*headers.items(), ("baggage", incoming)])
        assert (members(extracted), extracted.fallbacks, extracted.parent is None) == ({}, (), False)


# --- pipeline.jobs -------------------------------------------------------------------------


def test_ensure_job_starts_a_job_when_none_runs() -> None:
    before = time.time()
    context = jobs.ensure_job(Context())

    assert re.fullmatch("[0-9a-f]{32}", jobs.job_id(context) or "")
    started_at = jobs.job_started_at(context)
    assert started_at is not None and before - 1e-6 <= started_at <= time.time() + 1e-6
    assert jobs.job_id(jobs.ensure_job(Context())) != jobs.job_id(context)


def test_ensure_job_keeps_a_running_job() -> None:
    context = baggage.set_baggage(BAGGAGE_JOB_STARTED_AT, "1.5", baggage.set_baggage(BAGGAGE_JOB_ID, "job-1"))

    assert jobs.ensure_job(context) is context
    assert (jobs.job_id(context), jobs.job_started_at(context)) == ("job-1", 1.5)


@pytest.mark.parametrize("started", [None, "soon", "nan"])
def test_job_of_keeps_the_job_and_the_other_members_and_starts_its_clock_when_missing(started: str | None) -> None:
    context = baggage.set_baggage("tenant", "acme", baggage.set_baggage(BAGGAGE_JOB_ID, "job-1", Context()))
    if started is not None:
        context = baggage.set_baggage(BAGGAGE_JOB_STARTED_AT, started, context)
    before = time.time()

    made, job, new = jobs.job_of(context)

    assert (job, new) == ("job-1", False)
    assert dict(baggage.get_all(made)).keys() == {BAGGAGE_JOB_ID, "tenant", BAGGAGE_JOB_STARTED_AT}
    assert baggage.get_baggage("tenant", made) == "acme"
    started_at = jobs.job_started_at(made)
    assert started_at is not None and before - 1e-6 <= started_at <= time.time() + 1e-6
    assert baggage.get_all(context).get(BAGGAGE_JOB_STARTED_AT) == started  # the caller's context is left as it was


def test_job_of_a_context_without_a_job_says_the_job_is_new() -> None:
    made, job, new = jobs.job_of(baggage.set_baggage("tenant", "acme", Context()))

    assert new and job == jobs.job_id(made) and re.fullmatch("[0-9a-f]{32}", job)
    assert baggage.get_baggage("tenant", made) == "acme" and jobs.job_started_at(made) is not None


@pytest.mark.parametrize(("value", "started_at"), [("1700000000.25", 1700000000.25), ("soon", None), ("", None), (None, None)])
def test_job_started_at(value: str | None, started_at: float | None) -> None:
    context = Context() if value is None else baggage.set_baggage(BAGGAGE_JOB_STARTED_AT, value, Context())
    assert jobs.job_started_at(context) == started_at


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_job_started_at_is_none_when_not_finite(value: str) -> None:
    assert jobs.job_started_at(baggage.set_baggage(BAGGAGE_JOB_STARTED_AT, value, Context())) is None


def test_job_id_is_none_without_a_job() -> None:
    assert jobs.job_id(Context()) is None
