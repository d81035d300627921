"""A job's critical path across queue hops, split by cause (``hoptrace.view.critical_path``; pure, no broker).

Hand-built traces shaped like the real ones (a pipeline's hops and in-place retries, Celery's
countdowns, ``task.retry``, chords and groups, span links, missing parents, clock skew) with
their exact segments; then generated jobs (hypothesis): the segments always tile the trace,
whatever the skew, the missing parents and the loops, and without skew the path runs through
the hops the last-ending span descends from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hoptrace.view.critical_path import Cause, Segment, critical_path, dominant
from hoptrace.view.otlp_decode import ReceivedSpan
from tests.test_fuzz_headers import fuzz_settings
from tests.traces import tiles

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000
TRACE = "ab" * 16


def _id(number: int) -> str:
    return f"{number:016x}"


def _span(
    number: int,
    parent: int | None,
    name: str,
    kind: str,
    start: int,
    end: int,
    attributes: dict[str, Any] | None = None,
    links: tuple[int, ...] = (),
    status: str = "UNSET",
    trace: str = TRACE,
) -> ReceivedSpan:
    """Span NUMBER of TRACE, START and END in ns after T0, linked to the spans numbered LINKS of TRACE."""
    return ReceivedSpan(
        trace_id=trace,
        span_id=_id(number),
        parent_span_id=None if parent is None else _id(parent),
        name=name,
        kind=kind,
        start_ns=T0 + start,
        end_ns=T0 + end,
        attributes=attributes or {},
        status_code=status,
        status_message="",
        events=(),
        links=tuple((TRACE, _id(link), {}) for link in links),
        resource={"service.name": "worker"},
        scope_name="hoptrace",
    )


def send(number: int, parent: int | None, stage: str, start_ms: float, end_ms: float) -> ReceivedSpan:
    """hoptrace's publish of a message to STAGE."""
    attributes = {"messaging.destination.name": stage, "hoptrace.stage": stage, "messaging.operation.type": "send"}
    return _span(number, parent, f"send {stage}", "PRODUCER", round(start_ms * MS), round(end_ms * MS), attributes)


def process(
    number: int,
    parent: int | None,
    stage: str,
    start_ms: float,
    end_ms: float,
    attempt: int = 1,
    outcome: str = "processed",
    eta_ms: float | None = None,
    links: tuple[int, ...] = (),
) -> ReceivedSpan:
    """hoptrace's process span of one attempt at STAGE (ERROR unless processed; held until ETA_MS when given)."""
    attributes: dict[str, Any] = {"hoptrace.stage": stage, "hoptrace.attempt": attempt, "hoptrace.outcome": outcome}
    if eta_ms is not None:
        attributes["hoptrace.eta"] = T0 + round(eta_ms * MS)
    status = "UNSET" if outcome == "processed" else "ERROR"
    return _span(number, parent, f"process {stage}", "CONSUMER", round(start_ms * MS), round(end_ms * MS), attributes, links, status)


def user(number: int, parent: int | None, name: str, start_ms: float, end_ms: float, kind: str = "INTERNAL") -> ReceivedSpan:
    """A span of the user's own (or a canvas's ``start ...``)."""
    return _span(number, parent, name, kind, round(start_ms * MS), round(end_ms * MS))


def seg(stage: str, cause: Cause, start_ms: float, end_ms: float) -> Segment:
    return Segment(stage, cause, T0 + round(start_ms * MS), T0 + round(end_ms * MS))


ORDERS = [  # validate -> charge -> ship -> notify; charge's handler takes 100 ms
    send(1, None, "validate", 0, 1),
    process(2, 1, "validate", 3, 10),
    send(3, 2, "charge", 8, 9),
    process(4, 3, "charge", 12, 112),
    send(5, 4, "ship", 110, 111),
    process(6, 5, "ship", 115, 130),
    send(7, 6, "notify", 128, 129),
    process(8, 7, "notify", 131, 140),
]


def test_no_spans_no_path() -> None:
    assert critical_path([]) == []
    assert dominant([]) is None


def test_a_four_hop_job_with_a_slow_handler() -> None:
    path = critical_path(ORDERS)
    assert path == [
        seg("validate", "publish", 0, 1),
        seg("validate", "queue_wait", 1, 3),
        seg("validate", "handler", 3, 8),
        seg("charge", "publish", 8, 9),
        seg("charge", "queue_wait", 9, 12),
        seg("charge", "handler", 12, 110),
        seg("ship", "publish", 110, 111),
        seg("ship", "queue_wait", 111, 115),
        seg("ship", "handler", 115, 128),
        seg("notify", "publish", 128, 129),
        seg("notify", "queue_wait", 129, 131),
        seg("notify", "handler", 131, 140),
    ]
    longest = dominant(path)
    assert longest == seg("charge", "handler", 12, 110)
    assert (longest.duration_ns, longest.duration_s) == (98 * MS, 0.098)
    assert critical_path(list(reversed(ORDERS))) == path  # the order spans arrive in does not matter


def test_a_slow_queue() -> None:
    spans = [send(1, None, "a", 0, 1), process(2, 1, "a", 2, 5), send(3, 2, "b", 4, 5), process(4, 3, "b", 505, 510)]
    path = critical_path(spans)
    assert path == [
        seg("a", "publish", 0, 1),
        seg("a", "queue_wait", 1, 2),
        seg("a", "handler", 2, 4),
        seg("b", "publish", 4, 5),
        seg("b", "queue_wait", 5, 505),
        seg("b", "handler", 505, 510),
    ]
    assert dominant(path) == seg("b", "queue_wait", 5, 505)


def test_an_in_place_retry_waits_its_backoff() -> None:
    spans = [send(1, None, "charge", 0, 1), process(2, 1, "charge", 2, 12, 1, "retried"), process(3, 1, "charge", 112, 120, 2)]
    assert critical_path(spans) == [
        seg("charge", "publish", 0, 1),
        seg("charge", "queue_wait", 1, 2),
        seg("charge", "handler", 2, 12),
        seg("charge", "retry_backoff", 12, 112),
        seg("charge", "handler", 112, 120),
    ]


def test_a_celery_countdown_holds_the_message_until_its_eta() -> None:
    spans = [send(1, None, "add", 0, 1), process(2, 1, "add", 1003, 1010, eta_ms=1001)]
    path = critical_path(spans)
    assert path == [
        seg("add", "publish", 0, 1),
        seg("add", "eta_hold", 1, 1001),
        seg("add", "queue_wait", 1001, 1003),
        seg("add", "handler", 1003, 1010),
    ]
    assert dominant(path) == seg("add", "eta_hold", 1, 1001)


def test_a_celery_retry_with_a_countdown_is_a_backoff() -> None:
    spans = [
        send(1, None, "add", 0, 1),
        process(2, 1, "add", 2, 10, 1, "retried"),
        send(3, 2, "add", 8, 9),  # task.retry(countdown=2) publishes the next attempt from inside the failed one
        process(4, 3, "add", 2012, 2015, 2, eta_ms=2009),
    ]
    assert critical_path(spans) == [
        seg("add", "publish", 0, 1),
        seg("add", "queue_wait", 1, 2),
        seg("add", "handler", 2, 8),
        seg("add", "publish", 8, 9),
        seg("add", "retry_backoff", 9, 2009),
        seg("add", "queue_wait", 2009, 2012),
        seg("add", "handler", 2012, 2015),
    ]


def _chord_headers(slow_end_ms: float) -> list[ReceivedSpan]:
    """A canvas's ``start chord`` span sending 5 ``add`` headers at 1..5 ms; header 3 (span 23) runs from 5 ms to SLOW_END_MS."""
    spans = [user(1, None, "start chord", 0, 6)]
    for member in range(1, 6):
        spans.append(send(10 + member, 1, "add", member, member + 1))
        end = slow_end_ms if member == 3 else member + 12
        spans.append(process(20 + member, 10 + member, "add", member + 2, end))
    return spans


def test_a_chord_runs_through_its_slowest_header() -> None:
    spans = [
        *_chord_headers(505),
        send(30, 23, "xsum", 503, 504),  # the body, sent by the header that finished last
        process(31, 30, "xsum", 506, 520, links=(21, 22, 23, 24, 25)),
    ]
    path = critical_path(spans)
    assert path == [
        seg("?", "handler", 0, 3),
        seg("add", "publish", 3, 4),
        seg("add", "queue_wait", 4, 5),
        seg("add", "handler", 5, 503),
        seg("xsum", "publish", 503, 504),
        seg("xsum", "queue_wait", 504, 506),
        seg("xsum", "handler", 506, 520),
    ]
    assert dominant(path) == seg("add", "handler", 5, 503)


def test_a_chord_body_sent_after_its_last_header_ended_waited_for_the_join() -> None:
    spans = [
        *_chord_headers(505),
        send(30, 99, "xsum", 600, 601),  # sent by an untraced chord_unlock: its parent is not in the trace
        process(31, 30, "xsum", 603, 610, links=(21, 22, 23, 24, 25)),
    ]
    assert critical_path(spans) == [
        seg("?", "handler", 0, 3),
        seg("add", "publish", 3, 4),
        seg("add", "queue_wait", 4, 5),
        seg("add", "handler", 5, 505),
        seg("xsum", "chord_join", 505, 600),
        seg("xsum", "publish", 600, 601),
        seg("xsum", "queue_wait", 601, 603),
        seg("xsum", "handler", 603, 610),
    ]


def test_a_group_s_path_takes_the_branch_that_ended_last() -> None:
    spans = [
        user(1, None, "start group", 0, 10),
        send(2, 1, "thumb.small", 1, 2),
        send(3, 1, "thumb.large", 3, 4),
        send(4, 1, "thumb.medium", 5, 6),
        process(5, 2, "thumb.small", 3, 50),
        process(6, 3, "thumb.large", 6, 300),
        process(7, 4, "thumb.medium", 7, 100),
    ]
    assert critical_path(spans) == [
        seg("?", "handler", 0, 3),
        seg("thumb.large", "publish", 3, 4),
        seg("thumb.large", "queue_wait", 4, 6),
        seg("thumb.large", "handler", 6, 300),
    ]


def test_a_missing_parent_goes_on_at_the_span_that_ended_last_before() -> None:
    spans = [
        send(1, None, "validate", 0, 1),
        process(2, 1, "validate", 2, 50),
        process(4, 3, "charge", 60, 100),  # its publish (span 3) never arrived
    ]
    assert critical_path(spans) == [
        seg("validate", "publish", 0, 1),
        seg("validate", "queue_wait", 1, 2),
        seg("validate", "handler", 2, 50),
        seg("charge", "queue_wait", 50, 60),
        seg("charge", "handler", 60, 100),
    ]


def test_clock_skew_never_makes_a_segment_negative() -> None:
    spans = [
        send(1, None, "a", 0, 10),
        process(2, 1, "a", 7, 20),  # its host's clock is 3 ms behind: it starts before its publish ended
        send(3, 2, "b", 6, 8),  # and a child of it starts before it
        process(4, 3, "b", 9, 30),
    ]
    path = critical_path(spans)
    assert path == [seg("a", "publish", 0, 6), seg("b", "publish", 6, 8), seg("b", "queue_wait", 8, 9), seg("b", "handler", 9, 30)]
    tiles(spans, path)


def test_a_stage_consuming_with_links_is_joined_to_its_publish() -> None:
    spans = [
        send(1, None, "a", 0, 1),
        process(2, 1, "a", 2, 10),
        send(3, 2, "b", 5, 6),
        process(4, 77, "b", 8, 30, links=(3,)),  # a new root in its own trace (parent 77 is not here), linked to its publish
    ]
    assert critical_path(spans) == [
        seg("a", "publish", 0, 1),
        seg("a", "queue_wait", 1, 2),
        seg("a", "handler", 2, 5),
        seg("b", "publish", 5, 6),
        seg("b", "queue_wait", 6, 8),
        seg("b", "handler", 8, 30),
    ]


def test_a_stock_producer_s_span_is_the_publish_of_the_stage_it_feeds() -> None:
    spans = [user(1, None, "orders.placed send", 0, 2, kind="PRODUCER"), process(2, 1, "validate", 5, 9)]
    assert critical_path(spans) == [seg("validate", "publish", 0, 2), seg("validate", "queue_wait", 2, 5), seg("validate", "handler", 5, 9)]


def test_parent_loops_and_other_traces_end() -> None:
    spans = [
        user(1, 2, "a", 0, 10),
        user(2, 1, "b", 5, 20),  # 1 and 2 are each other's parent
        process(3, 3, "self", 12, 25),  # its own parent
        _span(4, 2, "elsewhere", "INTERNAL", 1 * MS, 8 * MS, trace="cd" * 16),  # another trace's span, with an id of this one as parent
    ]
    path = critical_path(spans)
    assert path == [seg("?", "handler", 0, 10), seg("self", "queue_wait", 10, 12), seg("self", "handler", 12, 25)]
    tiles(spans, path)


def test_user_spans_inside_a_handler_count_for_its_stage() -> None:
    spans = [
        send(1, None, "a", 0, 1),
        process(2, 1, "a", 2, 20),
        user(3, 2, "compute", 4, 18),
        user(4, 3, "redis GET", 5, 6, kind="CLIENT"),
        send(5, 4, "b", 5, 6),  # sent from inside the user's spans
        process(6, 5, "b", 7, 30),
    ]
    assert critical_path(spans) == [
        seg("a", "publish", 0, 1),
        seg("a", "queue_wait", 1, 2),
        seg("a", "handler", 2, 5),
        seg("b", "publish", 5, 6),
        seg("b", "queue_wait", 6, 7),
        seg("b", "handler", 7, 30),
    ]


def test_dominant_takes_the_earliest_of_equals() -> None:
    segments = [seg("a", "handler", 0, 5), seg("b", "queue_wait", 5, 10), seg("b", "handler", 10, 12)]
    assert dominant(segments) == segments[0]


def test_ten_thousand_spans() -> None:
    """A 2,000-hop chain whose last handler fans out to 3,000 messages: 10,000 spans (timing: measured by hand, not asserted)."""
    spans, start = [send(1, None, "hop0", 0, 0.5)], 1.0
    for hop in range(2000):
        spans.append(process(2 * hop + 2, 2 * hop + 1, f"hop{hop}", start, start + 2))
        if hop < 1999:
            spans.append(send(2 * hop + 3, 2 * hop + 2, f"hop{hop + 1}", start + 1, start + 1.5))
        start += 3
    last_handler = 2 * 1999 + 2
    for branch in range(3000):
        sent = start - 3 + branch * 0.0005
        spans.append(send(10_000 + 2 * branch, last_handler, f"fan{branch}", sent, sent + 0.0002))
        spans.append(process(10_001 + 2 * branch, 10_000 + 2 * branch, f"fan{branch}", sent + 1, sent + 5 + (branch == 1234)))
    assert len(spans) == 10_000
    path = critical_path(spans)
    tiles(spans, path)
    assert path[-1].stage == "fan1234"
    assert {segment.stage for segment in path} == {f"hop{hop}" for hop in range(2000)} | {"fan1234"}


# Generated jobs: chains, fan-outs, chords, in-place and Celery retries, countdowns, hosts whose clocks are up to 5 ms apart.


@dataclass
class _Job:
    """A job being generated: spans with true times (ns after T0), each on a host whose clock is off by SKEWS[host]."""

    skews: tuple[int, ...]
    spans: list[ReceivedSpan] = field(default_factory=list)
    true: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """Span id -> true start, true end, host."""

    def add(self, parent: ReceivedSpan | None, name: str, kind: str, start: int, end: int, host: int, **fields: Any) -> ReceivedSpan:
        skew = self.skews[host]
        span = _span(len(self.spans) + 1, None, name, kind, start + skew, end + skew, **fields)
        if parent is not None:
            span = replace(span, parent_span_id=parent.span_id)
        self.spans.append(span)
        self.true[span.span_id] = (start, end, host)
        return span

    def send(self, parent: ReceivedSpan | None, stage: str, at: int, host: int) -> ReceivedSpan:
        attributes = {"hoptrace.stage": stage, "messaging.destination.name": stage}
        return self.add(parent, f"send {stage}", "PRODUCER", at, at + MS, host, attributes=attributes)


@st.composite
def _delivery(draw: st.DrawFn, job: _Job, publish: ReceivedSpan, stage: str, links: tuple[int, ...] = ()) -> ReceivedSpan:
    """PUBLISH's message taken by a worker: maybe held by a countdown, maybe retried (in place or by task.retry); its last attempt."""
    host, attempt = draw(st.integers(0, len(job.skews) - 1)), 1
    ready = job.true[publish.span_id][1]
    eta = ready + draw(st.integers(1, 50)) * MS if draw(st.booleans()) else None
    start = max(ready, eta or 0) + draw(st.integers(0, 30)) * MS
    while True:
        end = start + draw(st.integers(3, 40)) * MS  # room for a publish from inside, 1 ms after the start
        retry = draw(st.sampled_from([None, None, None, "in place", "task.retry"])) if attempt < 4 else None
        attributes: dict[str, Any] = {"hoptrace.stage": stage, "hoptrace.attempt": attempt, "hoptrace.outcome": "retried" if retry else "processed"}
        if eta is not None:
            attributes["hoptrace.eta"] = T0 + eta + job.skews[host]
        fields: dict[str, Any] = {"attributes": attributes, "status": "ERROR" if retry else "UNSET"}
        span = job.add(publish, f"process {stage}", "CONSUMER", start, end, host, links=links, **fields)
        if retry is None:
            return span
        attempt += 1
        if retry == "in place":
            start = end + draw(st.integers(1, 50)) * MS
        else:
            publish = job.send(span, stage, end - 2 * MS, host)
            eta = end - MS + draw(st.integers(1, 50)) * MS
            start = eta + draw(st.integers(0, 10)) * MS
            host = draw(st.integers(0, len(job.skews) - 1))


@st.composite
def jobs(draw: st.DrawFn, skewed: bool) -> list[ReceivedSpan]:
    """One generated job's spans, in shuffled order."""
    job = _Job(tuple(draw(st.integers(-5 * MS, 5 * MS)) if skewed else 0 for _ in range(3)))
    root = job.add(None, "start job", "INTERNAL", 0, 2 * MS, 0) if draw(st.booleans()) else None
    handlers = [draw(_delivery(job, job.send(root, "s0", MS if root else 0, 0), "s0"))]
    for number in range(1, draw(st.integers(0, 6)) + 1):
        parent = draw(st.sampled_from(handlers))
        start, end, host = job.true[parent.span_id]

        def sent(stage: str, parent: ReceivedSpan = parent, start: int = start, end: int = end, host: int = host) -> ReceivedSpan:
            return job.send(parent, stage, start + draw(st.integers(0, (end - start) // MS - 1)) * MS, host)

        shape = draw(st.sampled_from(["chain", "fan-out", "chord"]))
        if shape == "chain":
            handlers.append(draw(_delivery(job, sent(f"s{number}"), f"s{number}")))
        elif shape == "fan-out":
            handlers += [draw(_delivery(job, sent(f"s{number}.{branch}"), f"s{number}.{branch}")) for branch in range(draw(st.integers(2, 4)))]
        else:
            headers = [draw(_delivery(job, sent(f"s{number}.header"), f"s{number}.header")) for _ in range(draw(st.integers(2, 5)))]
            last = max(headers, key=lambda header: job.true[header.span_id][1])
            _, last_end, last_host = job.true[last.span_id]
            body = job.send(last, f"s{number}.body", last_end - MS, last_host)  # sent by the header that finished last
            member_numbers = tuple(int(header.span_id, 16) for header in headers)
            handlers += [*headers, draw(_delivery(job, body, f"s{number}.body", links=member_numbers))]
    return draw(st.permutations(job.spans))


def _ancestor_stages(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> set[str]:
    """The stages of SPAN and its ancestors (``?`` for a span without one)."""
    stages = set()
    current: ReceivedSpan | None = span
    while current is not None:
        stages.add(current.attributes.get("hoptrace.stage", "?"))
        current = by_id.get(current.parent_span_id or "")
    return stages


@fuzz_settings(200)
@given(spans=jobs(skewed=False))
def test_without_skew_the_path_runs_through_the_hops_the_last_span_descends_from(spans: list[ReceivedSpan]) -> None:
    path = critical_path(spans)
    tiles(spans, path)
    by_id = {span.span_id: span for span in spans}
    last_end = max(span.end_ns for span in spans)
    stages = {segment.stage for segment in path}
    assert any(stages - {"?"} == _ancestor_stages(span, by_id) - {"?"} for span in spans if span.end_ns == last_end)
    for segment in path:  # each handler and publish segment lies inside a span of its stage and kind
        kind = {"handler": "CONSUMER", "publish": "PRODUCER"}.get(segment.cause)
        if kind is not None and segment.stage != "?":
            assert any(
                span.kind == kind
                and span.attributes["hoptrace.stage"] == segment.stage
                and span.start_ns <= segment.start_ns <= segment.end_ns <= span.end_ns
                for span in spans
            )
    assert not {segment.cause for segment in path} & {"chord_join"}


@fuzz_settings(200)
@given(spans=jobs(skewed=True))
def test_with_skew_the_path_still_tiles_the_trace(spans: list[ReceivedSpan]) -> None:
    path = critical_path(spans)
    tiles(spans, path)
    last_end = max(span.end_ns for span in spans)
    assert path[-1].stage in {span.attributes.get("hoptrace.stage", "?") for span in spans if span.end_ns == last_end}
    assert dominant(path) in path


@fuzz_settings(200)
@given(spans=jobs(skewed=True), data=st.data())
def test_missing_parents_loops_and_other_traces_still_tile(spans: list[ReceivedSpan], data: st.DataObject) -> None:
    ids = [span.span_id for span in spans]
    broken = []
    for span in spans:
        change = data.draw(st.sampled_from(["keep", "keep", "keep", "missing", "loop", "other trace"]))
        if change == "missing":
            span = replace(span, parent_span_id="f" * 16)
        elif change == "loop":  # any span, itself included, as the parent
            span = replace(span, parent_span_id=data.draw(st.sampled_from(ids)))
        elif change == "other trace":
            span = replace(span, trace_id="cd" * 16)
        broken.append(span)
    path = critical_path(broken)
    tiles(broken, path)
