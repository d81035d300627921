"""What ``hoptrace watch``, ``traces`` and ``trace`` print: trees of jobs, stage and trace tables, JSON (no broker needed)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from hoptrace.view.formatting import format_duration, to_text, trace_json
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.queries import StageStats, TraceSummary, summarize
from hoptrace.view.tables import stage_table, traces_table
from hoptrace.view.tree import trace_tree
from tests.test_fuzz_headers import fuzz_settings

S = 1_000_000_000
MS = 1_000_000
US = 1_000
T0 = 1_700_000_000 * S
WIDTHS = (40, 60, 100)
HOPS = {
    "validate": ("kafka", "orders.placed"),
    "charge": ("celery", "payments"),
    "ship": ("kafka", "orders.charged"),
    "notify": ("celery", "notifications"),
}
RESOURCE = {"service.name": "orders-worker"}


def _span(
    trace: int, span: int, parent: int | None, name: str, kind: str, start: int, end: int, scope: str = "hoptrace", **fields: Any
) -> ReceivedSpan:
    """A span of trace number TRACE, START and END in ns after T0; FIELDS override any other ReceivedSpan field."""
    base = ReceivedSpan(
        trace_id=f"{trace:032x}",
        span_id=f"{span:016x}",
        parent_span_id=None if parent is None else f"{parent:016x}",
        name=name,
        kind=kind,
        start_ns=T0 + start,
        end_ns=T0 + end,
        attributes={},
        status_code="UNSET",
        status_message="",
        events=(),
        links=(),
        resource=RESOURCE,
        scope_name=scope,
    )
    return replace(base, **fields)


def _hop_attributes(stage: str, job: str, operation: str) -> dict[str, Any]:
    system, destination = HOPS[stage]
    return {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
        "hoptrace.pipeline": "orders",
        "hoptrace.stage": stage,
        "hoptrace.job.id": job,
    }


def _send(trace: int, span: int, parent: int | None, stage: str, job: str, start: int, end: int, dead_letter: bool = False) -> ReceivedSpan:
    """hoptrace's PRODUCER span publishing to STAGE (to its dead-letter twin when DEAD_LETTER)."""
    attributes = _hop_attributes(stage, job, "send")
    if dead_letter:
        attributes["messaging.destination.name"] += ".dead-letter"
    return _span(trace, span, parent, f"send {attributes['messaging.destination.name']}", "PRODUCER", start, end, attributes=attributes)


def _process(
    trace: int,
    span: int,
    parent: int | None,
    stage: str,
    job: str,
    start: int,
    end: int,
    attempt: int = 1,
    outcome: str = "processed",
    error: str | None = None,
) -> ReceivedSpan:
    """hoptrace's CONSUMER span of one attempt of STAGE; ERROR with ERROR as ``error.type`` when given."""
    attributes = _hop_attributes(stage, job, "process") | {"hoptrace.attempt": attempt, "hoptrace.outcome": outcome}
    fields: dict[str, Any] = {"attributes": attributes}
    if error is not None:
        attributes["error.type"] = error
        fields |= {"status_code": "ERROR", "status_message": f"{error}: order asked to fail"}
    return _span(trace, span, parent, f"process {HOPS[stage][1]}", "CONSUMER", start, end, **fields)


JOB = "4f1c2d3e5a6b7c8d9e0f1a2b3c4d5e6f"
ORDERS = [  # one job through the four hops: queue waits 5 ms, 3 ms, 121 ms, 850 µs; handlers 12 ms, 2.5 ms, 1.2 s, 450 µs
    _send(1, 0x11, None, "validate", JOB, 0, 2 * MS),
    _process(1, 0x12, 0x11, "validate", JOB, 5 * MS, 17 * MS),
    _send(1, 0x13, 0x12, "charge", JOB, 15 * MS, 16 * MS),
    _process(1, 0x14, 0x13, "charge", JOB, 18 * MS, 20 * MS + 500 * US),
    _send(1, 0x15, 0x14, "ship", JOB, 19 * MS, 19 * MS + 500 * US),
    _process(1, 0x16, 0x15, "ship", JOB, 140 * MS, 1340 * MS),
    _send(1, 0x17, 0x16, "notify", JOB, 1300 * MS, 1301 * MS),
    _process(1, 0x18, 0x17, "notify", JOB, 1300 * MS + 850 * US, 1301 * MS + 300 * US),
]
JOB2 = "b2" * 16
RETRIED = [  # validate fails its first attempt (12 ms), passes the second (3 ms)
    _send(2, 0x21, None, "validate", JOB2, 0, 1 * MS),
    _process(2, 0x22, 0x21, "validate", JOB2, 4 * MS, 16 * MS, 1, "retried", "OrderRejected"),
    _process(2, 0x23, 0x21, "validate", JOB2, 120 * MS, 123 * MS, 2),
    _send(2, 0x24, 0x23, "charge", JOB2, 121 * MS, 122 * MS),
    _process(2, 0x25, 0x24, "charge", JOB2, 130 * MS, 135 * MS),
]
JOB3 = "c3" * 16
DEAD = [  # charge fails all three attempts and parks the order on payments.dead-letter
    _send(3, 0x31, None, "validate", JOB3, 0, 1 * MS),
    _process(3, 0x32, 0x31, "validate", JOB3, 2 * MS, 4 * MS),
    _send(3, 0x33, 0x32, "charge", JOB3, 3 * MS, 4 * MS),
    _process(3, 0x34, 0x33, "charge", JOB3, 10 * MS, 11 * MS, 1, "retried", "OrderRejected"),
    _process(3, 0x35, 0x33, "charge", JOB3, 112 * MS, 113 * MS, 2, "retried", "OrderRejected"),
    _process(3, 0x36, 0x33, "charge", JOB3, 314 * MS, 316 * MS, 3, "dead_lettered", "OrderRejected"),
    _send(3, 0x37, 0x36, "charge", JOB3, 315 * MS, 316 * MS, dead_letter=True),
]


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def _plain(renderable: Any, width: int) -> str:
    """Render as plain text; check it has no ANSI code and no line wider than WIDTH."""
    text = to_text(renderable, width)
    assert "\x1b" not in text
    assert all(len(line) <= width for line in text.splitlines()), text
    return text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "—"),
        (0, "0s"),
        (40e-9, "40ns"),
        (999.6e-9, "1.0µs"),
        (850e-6, "850µs"),
        (2.5e-6, "2.5µs"),
        (0.0009996, "1.0ms"),
        (0.0025, "2.5ms"),
        (0.012, "12ms"),
        (0.9996, "1.00s"),
        (1.2, "1.20s"),
        (12.34, "12.3s"),
        (61.0, "1m01s"),
        (3725.0, "1h02m"),
        (-0.003, "-3.0ms"),
    ],
)
def test_one_duration_format(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_four_hop_job_at_full_width() -> None:
    assert _lines(_plain(trace_tree(ORDERS), 100)) == [
        f"job 4f1c2d3e  trace {1:032x}  1.34s  ok",
        "├── validate  kafka orders.placed  queue 5.0ms  handler 12ms  ok",
        "├── charge  celery payments  queue 3.0ms  handler 2.5ms  ok",
        "├── ship  kafka orders.charged  queue 121ms  handler 1.20s  ok",
        "└── notify  celery notifications  queue 850µs  handler 450µs  ok",
    ]
    # The order the spans come in does not matter.
    assert to_text(trace_tree(list(reversed(ORDERS)))) == to_text(trace_tree(ORDERS))


@pytest.mark.parametrize("width", [40, 60])
def test_four_hop_job_narrow_puts_numbers_under_each_hop(width: int) -> None:
    lines = _lines(_plain(trace_tree(ORDERS), width))
    assert lines[:2] == ["job 4f1c2d3e  1.34s  ok", f"trace {1:032x}"]
    assert "├── validate  kafka orders.placed" in lines
    assert "│   queue 5.0ms  handler 12ms  ok" in lines
    assert "├── ship  kafka orders.charged" in lines
    assert "│   queue 121ms  handler 1.20s  ok" in lines
    assert "└── notify  celery notifications" in lines
    assert "    queue 850µs  handler 450µs  ok" in lines
    # The charge hop fits on one line at 60, not at 40.
    if width == 60:
        assert "├── charge  celery payments  queue 3.0ms  handler 2.5ms  ok" in lines
    else:
        assert lines[lines.index("├── charge  celery payments") + 1] == "│   queue 3.0ms  handler 2.5ms  ok"


def test_retried_job_shows_each_attempt() -> None:
    assert _lines(_plain(trace_tree(RETRIED), 100)) == [
        f"job b2b2b2b2  trace {2:032x}  135ms  retried",
        "├── validate  kafka orders.placed  queue 4.0ms  2 attempts  retried",
        "│   ├── attempt 1 12ms ERROR OrderRejected",
        "│   └── attempt 2 3.0ms ok",
        "└── charge  celery payments  queue 9.0ms  handler 5.0ms  ok",
    ]
    assert _lines(_plain(trace_tree(RETRIED), 40)) == [
        "job b2b2b2b2  135ms  retried",
        f"trace {2:032x}",
        "├── validate  kafka orders.placed",
        "│   queue 4.0ms  2 attempts  retried",
        "│   ├── attempt 1 12ms ERROR",
        "│   │   OrderRejected",
        "│   └── attempt 2 3.0ms ok",
        "└── charge  celery payments",
        "    queue 9.0ms  handler 5.0ms  ok",
    ]
    assert "│   ├── attempt 1 12ms ERROR OrderRejected" in _lines(_plain(trace_tree(RETRIED), 60))


def test_dead_lettered_job_shows_where_it_was_parked() -> None:
    assert _lines(_plain(trace_tree(DEAD), 100)) == [
        f"job c3c3c3c3  trace {3:032x}  316ms  dead-lettered",
        "├── validate  kafka orders.placed  queue 2.0ms  handler 2.0ms  ok",
        "└── charge  celery payments  queue 7.0ms  3 attempts  dead-lettered",
        "    ├── attempt 1 1.0ms ERROR OrderRejected",
        "    ├── attempt 2 1.0ms ERROR OrderRejected",
        "    ├── attempt 3 2.0ms ERROR OrderRejected",
        "    └── parked on celery payments.dead-letter",
    ]
    assert _lines(_plain(trace_tree(DEAD), 40)) == [
        "job c3c3c3c3  316ms  dead-lettered",
        f"trace {3:032x}",
        "├── validate  kafka orders.placed",
        "│   queue 2.0ms  handler 2.0ms  ok",
        "└── charge  celery payments",
        "    queue 7.0ms  3 attempts",
        "    dead-lettered",
        "    ├── attempt 1 1.0ms ERROR",
        "    │   OrderRejected",
        "    ├── attempt 2 1.0ms ERROR",
        "    │   OrderRejected",
        "    ├── attempt 3 2.0ms ERROR",
        "    │   OrderRejected",
        "    └── parked on celery",
        "        payments.dead-letter",
    ]
    assert "    └── parked on celery payments.dead-letter" in _lines(_plain(trace_tree(DEAD), 60))


def test_failed_and_retried_hops_are_coloured_in_a_terminal() -> None:
    console = Console(force_terminal=True, color_system="standard", width=100)
    with console.capture() as captured:
        console.print(trace_tree(DEAD))
        console.print(trace_tree(RETRIED))
    output = captured.get()
    assert "\x1b[1;31mcharge\x1b[0m" in output  # the dead-lettered hop, red
    assert "\x1b[31mparked on celery payments.dead-letter\x1b[0m" in output
    assert "\x1b[1;33mvalidate\x1b[0m" in output  # the retried hop, yellow


def test_other_spans_hang_dimmed_under_their_parent_and_orphans_under_the_job() -> None:
    job = "d4" * 16
    celery, redis = "opentelemetry.instrumentation.celery", "opentelemetry.instrumentation.redis"
    spans = [
        _send(4, 0x41, None, "charge", job, 0, 2 * MS),
        _span(4, 0x42, 0x41, "apply_async/hoptrace.orders.charge", "PRODUCER", 500 * US, 1500 * US, celery),
        _span(4, 0x43, 0x42, "run/hoptrace.orders.charge", "CONSUMER", 4 * MS, 10 * MS, celery),
        _process(4, 0x44, 0x43, "charge", job, 5 * MS, 9 * MS),  # its publish is found through the stock spans
        _span(4, 0x45, 0x44, "LPUSH", "CLIENT", 6 * MS, 6 * MS + 200 * US, redis),
        _span(4, 0x46, 0x99, "late child", "INTERNAL", 7 * MS, 8 * MS, "examples", status_code="ERROR", status_message="boom"),
        _process(4, 0x47, 0x98, "notify", job, 20 * MS, 21 * MS, 1, "dead_lettered", "OrderRejected"),
        _send(4, 0x48, 0x47, "notify", job, 20 * MS + 500 * US, 21 * MS, dead_letter=True),
        _send(4, 0x49, 0x44, "ship", job, 8 * MS, 8 * MS + 100 * US),  # not taken yet
    ]
    assert _lines(_plain(trace_tree(spans), 100)) == [
        f"job d4d4d4d4  trace {4:032x}  21ms  dead-lettered",
        "├── charge  celery payments  queue 5.0ms  handler 4.0ms  ok",
        "│   ├── apply_async/hoptrace.orders.charge  1.0ms",
        "│   │   └── run/hoptrace.orders.charge  6.0ms",
        "│   └── LPUSH  200µs",
        "├── late child  1.0ms  ERROR boom  (parent not received)",
        "├── ship  kafka orders.charged  queue —  handler —  queued",
        "└── notify  celery notifications  queue —  1 attempt  dead-lettered  (parent not received)",
        "    ├── attempt 1 1.0ms ERROR OrderRejected",
        "    └── parked on celery notifications.dead-letter",
    ]
    console = Console(force_terminal=True, color_system="standard", width=100)
    with console.capture() as captured:
        console.print(trace_tree(spans))
    assert "\x1b[2mLPUSH  200µs\x1b[0m" in captured.get()


def test_a_message_from_a_stock_producer_waits_from_that_producer() -> None:
    job = "e5" * 16
    spans = [
        _span(6, 0x61, None, "orders.placed send", "PRODUCER", 0, 1 * MS, "opentelemetry.instrumentation.kafka"),
        _process(6, 0x62, 0x61, "validate", job, 7 * MS, 9 * MS),
    ]
    assert _lines(_plain(trace_tree(spans), 100)) == [
        f"job e5e5e5e5  trace {6:032x}  9.0ms  ok",
        "├── orders.placed send  1.0ms",
        "└── validate  kafka orders.placed  queue 7.0ms  handler 2.0ms  ok",
    ]


def test_a_job_still_in_flight_and_malformed_traces_render() -> None:
    in_flight = ORDERS[:3]  # charge's message is still in the queue
    assert _lines(_plain(trace_tree(in_flight), 100))[0] == f"job 4f1c2d3e  trace {1:032x}  17ms  in flight"
    assert "└── charge  celery payments  queue —  handler —  queued" in _lines(to_text(trace_tree(in_flight)))

    loop = [
        _span(5, 1, 2, "a", "INTERNAL", 0, 10),
        _span(5, 2, 1, "b", "INTERNAL", 1, 9),
        _span(5, 3, 3, "self", "INTERNAL", 2, 8),
        _span(5, 3, 3, "self", "INTERNAL", 2, 8),  # received twice
        _process(5, 4, 4, "charge", "", 3, 7),
    ]
    for width in WIDTHS:
        text = _plain(trace_tree(loop), width)
        assert "job —" in text and text.count("self") == 1
    # Spans that are their own ancestors cannot hang under one another: they hang under the job.
    assert _lines(to_text(trace_tree(loop))) == [
        f"job —  trace {5:032x}  10ns  ok",
        "├── a  10ns",
        "├── b  8ns",
        "├── self  6ns",
        "└── charge  celery payments  queue —  handler 4ns  ok",
    ]
    assert _lines(to_text(trace_tree([]))) == ["no spans received for this trace"]


def test_a_span_under_a_loop_hangs_under_its_parent_and_a_deep_chain_keeps_its_depth() -> None:
    """Only the spans on a loop move under the job; one whose parent is on a loop stays under it; a 3,000-deep chain nests whole."""
    spans = [
        _span(6, 1, 2, "a", "INTERNAL", 0, 10),
        _span(6, 2, 1, "b", "INTERNAL", 1, 9),
        _span(6, 3, 1, "under a", "INTERNAL", 2, 8),
        _span(6, 4, 3, "under that", "INTERNAL", 3, 7),
    ]
    assert _lines(to_text(trace_tree(spans))) == [
        f"job —  trace {6:032x}  10ns  ok",
        "├── a  10ns",
        "│   └── under a  6ns",
        "│       └── under that  4ns",
        "└── b  8ns",
    ]
    chain = [_span(7, 1, None, "s1", "INTERNAL", 0, 10_000)]
    chain += [_span(7, number, number - 1, f"s{number}", "INTERNAL", number, 10_000) for number in range(2, 3001)]
    tree = trace_tree(chain)
    depth, node = 0, tree
    while node.children:
        (node,), depth = node.children, depth + 1
    assert depth == 3000 and node.label.plain.startswith("s3000 ")


STATS = [
    StageStats("orders", "validate", "kafka", "orders.placed", 120, 2.0, 0.012, 0.045, 0.120, 0.0051, 0, 0, 3, None, None),
    StageStats("orders", "charge", "celery", "payments", 118, 1.9666, 0.0025, 0.0301, 1.5, 0.003, 3, 2, 12, 9, 3),
    StageStats("orders", "ship", "kafka", "orders.charged", 118, 1.9666, 1.2, 2.5, 61.0, 0.121, 0, 0, None, None, None),
    StageStats("orders", "notify", "celery", "notifications", 0, 0.0, None, None, None, None, 0, 0, 0, 0, 0),
]


def test_stage_table_full_width() -> None:
    assert _lines(_plain(stage_table(STATS), 110)) == [
        "stage     via                   msgs  msg/s    p50    p95    p99  wait p95  errors  retries  depth/lag",
        "─" * 102,
        "validate  kafka orders.placed    120    2.0   12ms   45ms  120ms     5.1ms       0        0          3",
        "charge    celery payments        118    2.0  2.5ms   30ms  1.50s     3.0ms       3        2         12",
        "ship      kafka orders.charged   118    2.0  1.20s  2.50s  1m01s     121ms       0        0          —",
        "notify    celery notifications     0      0      —      —      —         —       0        0          0",
    ]


@pytest.mark.parametrize(
    ("width", "headers"),
    [(60, ["stage", "via", "msgs", "p95", "errors", "depth/lag"]), (40, ["stage", "via", "p95", "errors"])],
)
def test_stage_table_leaves_out_columns_when_narrow(width: int, headers: list[str]) -> None:
    for table in (stage_table(STATS, width=width), stage_table(STATS)):  # told the width, or finding it out when rendered
        lines = _lines(_plain(table, width))
        assert lines[0].split() == headers
        assert lines[2].split() == ["validate", "kafka", "45ms", "0"] if width == 40 else ["validate", "kafka", "2.0", "45ms", "0", "3"]
        assert lines[3].split() == ["orders.placed"]  # the destination wraps under its system, never folds
        assert "celery payments" in lines[4]
    assert _lines(_plain(stage_table(STATS, width=40), 100)) == _lines(_plain(stage_table(STATS), 40))  # WIDTH caps a wider console


def test_stage_table_of_several_pipelines_and_of_none() -> None:
    other = replace(STATS[0], pipeline="refunds", destination="refunds.requested")
    text = _plain(stage_table([STATS[0], other]), 120)
    assert "orders/validate" in text and "refunds/validate  kafka refunds.requested" in text
    for width in WIDTHS:
        assert "no stage has processed a message" in _plain(stage_table([]), width)


SUMMARIES = [  # the slowest parts as test_the_slowest_part_of_a_job_is_its_longest_critical_path_segment computes them
    TraceSummary(
        f"{3:032x}",
        JOB3,
        "send orders.placed",
        T0 + 5 * S,
        T0 + 5 * S + 316 * MS,
        7,
        3,
        ("validate", "charge"),
        "dead-lettered",
        None,
        "charge retry_backoff 64%",
    ),
    TraceSummary(
        f"{2:032x}",
        JOB2,
        "send orders.placed",
        T0 + 4 * S,
        T0 + 4 * S + 135 * MS,
        5,
        1,
        ("validate", "charge"),
        "retried",
        None,
        "validate retry_backoff 77%",
    ),
    TraceSummary(
        f"{1:032x}", JOB, "send orders.placed", T0, T0 + 1340 * MS, 8, 0, ("validate", "charge", "ship", "notify"), "ok", None, "ship handler 90%"
    ),
    TraceSummary(f"{4:032x}", None, "process payments", T0 + 3 * S, T0 + 3 * S + 5 * MS, 2, 1, ("charge",), "failed"),
]


def test_the_slowest_part_of_a_job_is_its_longest_critical_path_segment() -> None:
    """Ship's handler: 1.2 s of 1.34 s; validate's backoff before its retry: 104 of 135 ms; charge's second backoff: 201 of 316 ms."""
    assert [summarize(spans[0].trace_id, spans).dominant for spans in (DEAD, RETRIED, ORDERS)] == [s.dominant for s in SUMMARIES[:3]]
    assert [s.dominant for s in SUMMARIES[:3]] == ["charge retry_backoff 64%", "validate retry_backoff 77%", "ship handler 90%"]


def test_traces_table_full_width() -> None:
    def at(offset_s: int) -> str:
        return time.strftime("%H:%M:%S", time.localtime(T0 // S + offset_s))

    assert _lines(_plain(traces_table(SUMMARIES), 140)) == [
        "trace                             job       start       e2e  slowest part                spans  stages                         status",
        "─" * 140,
        f"{3:032x}  c3c3c3c3  {at(5)}  316ms  charge retry_backoff 64%        7  validate → charge              dead-lettered",
        f"{2:032x}  b2b2b2b2  {at(4)}  135ms  validate retry_backoff 77%      5  validate → charge              retried",
        f"{1:032x}  4f1c2d3e  {at(0)}  1.34s  ship handler 90%                8  validate → charge → ship →     ok",
        "                                                                                                notify",
        f"{4:032x}  —         {at(3)}  5.0ms  —                               2  charge                         failed",
    ]
    # Narrower, the slowest part stays after stages, job and spans have gone.
    assert _lines(_plain(traces_table(SUMMARIES), 100))[:3] == [
        "trace                             start       e2e  slowest part                status",
        "─" * 92,
        f"{3:032x}  {at(5)}  316ms  charge retry_backoff 64%    dead-lettered",
    ]


def test_traces_table_narrow() -> None:
    assert _lines(_plain(traces_table(SUMMARIES), 60)) == [
        "trace                               e2e  status",
        "─" * 54,
        f"{3:032x}  316ms  dead-lettered",
        f"{2:032x}  135ms  retried",
        f"{1:032x}  1.34s  ok",
        f"{4:032x}  5.0ms  failed",
    ]
    narrow = _lines(_plain(traces_table(SUMMARIES, width=40), 40))
    assert narrow[0].split() == ["trace", "e2e", "status"]
    assert narrow[2].endswith("316ms  dead-lettered") and "".join(line.split()[0] for line in narrow[2:4]) == f"{3:032x}"
    assert _lines(_plain(traces_table([]), 40))[-1].strip() == "no traces yet"


def test_status_colours_in_the_traces_table() -> None:
    console = Console(force_terminal=True, color_system="standard", width=120)
    with console.capture() as captured:
        console.print(traces_table(SUMMARIES))
    output = captured.get()
    assert "\x1b[31mdead-lettered\x1b[0m" in output and "\x1b[33mretried" in output and "\x1b[31mfailed" in output


def test_trace_json_round_trips_exactly() -> None:
    raw = b"\x00\xff\x80 not utf-8"
    span = replace(
        DEAD[5],
        attributes={**DEAD[5].attributes, "raw": raw, "list": [b"\x01", "two", 3, 4.5, True, None], "map": {"deep": {"b": b"\xfe"}}},
        events=(("exception", {"exception.type": "OrderRejected", "payload": b"\xff"}),),
        links=((f"{9:032x}", f"{10:016x}", {"why": "batch"}),),
        resource={"service.name": "orders-worker", "host.id": b"\x01\x02"},
    )
    document = trace_json([DEAD[0], span])
    assert json.loads(json.dumps(document)) == document
    assert list(document[1]) == [
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "kind",
        "start_ns",
        "end_ns",
        "attributes",
        "status_code",
        "status_message",
        "events",
        "links",
        "resource",
        "scope_name",
    ]
    assert document[0] == {
        "trace_id": f"{3:032x}",
        "span_id": f"{0x31:016x}",
        "parent_span_id": None,
        "name": "send orders.placed",
        "kind": "PRODUCER",
        "start_ns": T0,
        "end_ns": T0 + MS,
        "attributes": _hop_attributes("validate", JOB3, "send"),
        "status_code": "UNSET",
        "status_message": "",
        "events": [],
        "links": [],
        "resource": {"service.name": "orders-worker"},
        "scope_name": "hoptrace",
    }
    second = document[1]
    assert (second["parent_span_id"], second["start_ns"], second["end_ns"]) == (f"{0x33:016x}", T0 + 314 * MS, T0 + 316 * MS)
    assert isinstance(second["start_ns"], int) and isinstance(second["end_ns"], int)
    assert second["attributes"]["raw"] == {"$bytes": base64.b64encode(raw).decode()}
    assert second["attributes"]["list"] == [{"$bytes": "AQ=="}, "two", 3, 4.5, True, None]
    assert second["attributes"]["map"] == {"deep": {"b": {"$bytes": "/g=="}}}
    assert second["attributes"]["hoptrace.attempt"] == 3 and second["attributes"]["error.type"] == "OrderRejected"
    assert (second["status_code"], second["status_message"]) == ("ERROR", "OrderRejected: order asked to fail")
    assert second["events"] == [{"name": "exception", "attributes": {"exception.type": "OrderRejected", "payload": {"$bytes": "/w=="}}}]
    assert second["links"] == [{"trace_id": f"{9:032x}", "span_id": f"{10:016x}", "attributes": {"why": "batch"}}]
    assert second["resource"] == {"service.name": "orders-worker", "host.id": {"$bytes": "AQI="}}


HOSTILE = "\x1b]0;owned\x07\x1b[2J\r\nforged line\u202e\x9b31m"
"""A window title, a screen clear, a forged line, a right-to-left override and a C1 CSI: what a sender can put in a span."""


def test_control_characters_from_spans_are_shown_not_obeyed_and_forge_no_line() -> None:
    """Span names, stage and destination attributes, status messages and error types reach the terminal as visible stand-ins."""
    hostile = [
        replace(span, attributes={**span.attributes, "hoptrace.stage": span.attributes["hoptrace.stage"] + HOSTILE})
        if span.kind == "CONSUMER"
        else span
        for span in DEAD
    ]
    hostile[-1] = replace(hostile[-1], status_code="ERROR", status_message=HOSTILE)
    hostile.append(_span(3, 0x38, 0x32, "db" + HOSTILE, "INTERNAL", 3 * MS, 4 * MS, status_code="ERROR", status_message=HOSTILE))
    hostile[3] = replace(hostile[3], attributes={**hostile[3].attributes, "error.type": HOSTILE})
    clean = [*DEAD, _span(3, 0x38, 0x32, "db", "INTERNAL", 3 * MS, 4 * MS, status_code="ERROR", status_message="x")]
    summary = TraceSummary(
        f"{3:032x}",
        JOB3 + HOSTILE,
        "send",
        T0,
        T0 + 316 * MS,
        8,
        3,
        ("validate" + HOSTILE, "charge"),
        "dead-lettered",
        None,
        f"charge{HOSTILE} handler 62%",
    )
    clean_summary = replace(summary, job_id=JOB3, stages=("validate", "charge"), dominant="charge handler 62%")
    stats = StageStats("orders", "charge" + HOSTILE, "celery", "payments" + HOSTILE, 5, 1.0, 1.0, 2.0, 3.0, 1.0, 1, 1, 0, None, None)
    console = Console(force_terminal=True, color_system="standard", width=400)
    for renderable, clean_renderable in (
        (trace_tree(hostile), trace_tree(clean)),
        (traces_table([summary], width=400), traces_table([clean_summary], width=400)),
        (stage_table([stats], width=400), stage_table([replace(stats, stage="charge", destination="payments")], width=400)),
    ):
        with console.capture() as captured:
            console.print(renderable)
        output = captured.get()
        styles_removed = "".join(part.split("m", 1)[-1] for part in output.split("\x1b["))  # Rich's own style codes are ESC [ ... m
        assert not [char for char in styles_removed if char != "\n" and (ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0)], repr(output)
        assert "\u202e" not in output and "␛]0;owned" in output, repr(output)  # (Rich itself drops BEL and CR)
        assert len(to_text(renderable, 400).splitlines()) == len(to_text(clean_renderable, 400).splitlines())


def test_a_job_a_flight_recorder_kept_says_why_in_the_tree_and_the_traces_table() -> None:
    kept = [replace(span, attributes={**span.attributes, "hoptrace.keep.reason": "retried"}) for span in DEAD]
    assert _lines(_plain(trace_tree(kept), 120))[0] == f"job c3c3c3c3  trace {3:032x}  316ms  dead-lettered  kept: retried"
    partial = [*kept[:-1], replace(kept[-1], attributes={**kept[-1].attributes, "hoptrace.keep.partial": True})]
    assert _lines(_plain(trace_tree(partial), 120))[0].endswith("dead-lettered  kept: retried, partial")

    summaries = [replace(SUMMARIES[0], kept="retried, partial"), SUMMARIES[2]]
    lines = _lines(_plain(traces_table(summaries), 150))
    assert lines[0].split() == ["trace", "job", "start", "e2e", "slowest", "part", "spans", "stages", "status", "kept"]
    assert lines[2].endswith("dead-lettered  retried, partial")
    assert "kept" not in _lines(_plain(traces_table(SUMMARIES), 120))[0]  # no column while no job was kept


_ANY_TEXT = st.text(max_size=40)
_SPAN_FIELDS = st.fixed_dictionaries(
    {
        "name": _ANY_TEXT,
        "kind": st.sampled_from(["PRODUCER", "CONSUMER", "INTERNAL", "SERVER", "CLIENT", ""]),
        "start": st.integers(-(2**40), 2**40),
        "length": st.integers(-(2**30), 2**40),
        "status_code": st.sampled_from(["UNSET", "OK", "ERROR"]),
        "status_message": _ANY_TEXT,
        "attributes": st.dictionaries(
            st.sampled_from(
                ["hoptrace.stage", "hoptrace.job.id", "hoptrace.outcome", "hoptrace.attempt", "hoptrace.keep.reason", "error.type"]
                + ["messaging.system", "messaging.destination.name", "messaging.operation.type", "hoptrace.pipeline", "other"]
            ),
            st.one_of(_ANY_TEXT, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(), st.lists(_ANY_TEXT, max_size=3)),
        ),
    }
)


def _visible(output: str) -> list[str]:
    """The control characters in OUTPUT once Rich's own style codes (ESC [ ... m) are taken out; newlines aside."""
    styles_removed = "".join(part.split("m", 1)[-1] for part in output.split("\x1b["))
    return [char for char in styles_removed if char != "\n" and (ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0)]


@fuzz_settings(150)
@given(
    fields=st.lists(_SPAN_FIELDS, min_size=1, max_size=8), parents=st.lists(st.integers(-1, 7), min_size=8, max_size=8), width=st.integers(20, 200)
)
def test_any_span_data_renders_as_a_tree_a_table_and_json_without_obeying_it(fields: list[dict[str, Any]], parents: list[int], width: int) -> None:
    """Arbitrary names, attributes, statuses, times and parent links (loops, orphans, the span its own parent): no crash, no control character out."""
    spans = [
        _span(9, n + 1, None if parents[n] < 0 else parents[n] + 1, each["name"], each["kind"], each["start"], each["start"] + each["length"])
        for n, each in enumerate(fields)
    ]
    spans = [
        replace(span, status_code=each["status_code"], status_message=each["status_message"], attributes=each["attributes"])
        for span, each in zip(spans, fields, strict=True)
    ]
    first = fields[0]["attributes"]
    summary = TraceSummary(f"{9:032x}", str(first.get("hoptrace.job.id")), fields[0]["name"], T0, T0 + S, len(spans), 1, (fields[0]["name"],), "x")
    stats = StageStats(
        "p" + fields[0]["name"], fields[-1]["name"], "celery", fields[0]["status_message"], 1, 1.0, 1.0, 2.0, 3.0, 1.0, 1, 1, 0, None, None
    )
    console = Console(force_terminal=True, color_system="standard", width=width)
    for renderable in (trace_tree(spans), traces_table([summary], width=width), stage_table([stats], width=width)):
        with console.capture() as captured:
            console.print(renderable)
        assert _visible(captured.get()) == []
    assert len(json.loads(json.dumps(trace_json(spans), allow_nan=False))) == len(spans)  # strict JSON, whatever the numbers
