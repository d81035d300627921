"""What ``hoptrace watch``, ``traces``, ``trace`` and ``demo`` print: rich renderables made from store records.

Pure functions: they read the records they are given (the spans of one trace, trace summaries,
stage numbers) and return ``rich`` renderables; nothing here opens a store, a terminal or reads
the clock. ``to_text`` renders one as plain text (no ANSI codes) for pipes and logs.

A trace is drawn as one job: a line for the job, then one node per *hop* in time order. A hop
is one message: hoptrace's PRODUCER ``send <destination>`` span and the CONSUMER
``process <destination>`` spans (one per attempt) of the worker that took it, found by walking
up from each process span to its nearest hoptrace publish (stock instrumentation spans may sit
in between). A dead-letter publish (``<destination>.dead-letter``) is shown inside the hop that
gave up, as where the message was parked. Every other span is kept, dimmed, under its parent.

Tree lines and tables fit the width they are rendered at: a hop's numbers move to a line of
their own, and tables leave out their least important columns (in a fixed order) rather than
fold every column; ``width=`` narrows a table further.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from pipeline import semconv
from pipeline.otlp_decode import Attributes, ReceivedSpan
from pipeline.stages import DEAD_LETTER_SUFFIX
from pipeline.trace_queries import StageStats, TraceSummary, int_attribute, text_attribute, to_json

NONE = "—"
"""What a value that is not known is shown as."""
SHORT_ID = 8
"""How many leading characters of a job id are shown."""

HopStatus = Literal["ok", "retried", "retrying", "failed", "dead-lettered", "queued"]
JobStatus = Literal["ok", "retried", "failed", "dead-lettered", "in flight"]
_STATUS_STYLES = {
    "ok": "green",
    "retried": "yellow",
    "retrying": "yellow",
    "failed": "red",
    "dead-lettered": "red",
    "queued": "cyan",
    "in flight": "cyan",
}
_HOP_STYLES = {"failed": "red", "dead-lettered": "red", "retried": "yellow", "retrying": "yellow"}
_COLUMN_GAP = 2
"""Cells between two table columns: one of padding, one of the (blank) vertical line."""


# --- formatting ------------------------------------------------------------------------------


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


def _format_rate(per_s: float) -> str:
    """Messages per second: ``0``, ``<0.1``, ``2.5``, ``340``."""
    if per_s == 0:
        return "0"
    if per_s < 0.05:
        return "<0.1"
    return f"{per_s:.1f}" if per_s < 100 else f"{per_s:.0f}"


def _format_number(value: float | None) -> str:
    """A gauge value: whole numbers without a fraction; ``—`` for None."""
    if value is None:
        return NONE
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _short(job_id: str | None) -> str:
    """The first characters of a job id, or ``—``."""
    return job_id[:SHORT_ID] if job_id else NONE


# --- one trace as a tree of hops -------------------------------------------------------------


def _text(span: ReceivedSpan, key: str) -> str | None:
    return text_attribute(span.attributes, key)


def _integer(span: ReceivedSpan, key: str) -> int | None:
    return int_attribute(span.attributes, key)


def _is_publish(span: ReceivedSpan) -> bool:
    """A hoptrace ``send`` span: PRODUCER with a stage."""
    return span.kind == "PRODUCER" and _text(span, semconv.STAGE) is not None


def _is_process(span: ReceivedSpan) -> bool:
    """A hoptrace ``process`` span (one attempt): CONSUMER with a stage."""
    return span.kind == "CONSUMER" and _text(span, semconv.STAGE) is not None


def _is_dead_letter(span: ReceivedSpan) -> bool:
    """A hoptrace publish to a ``.dead-letter`` destination."""
    return _is_publish(span) and (_text(span, semconv.MESSAGING_DESTINATION) or "").endswith(DEAD_LETTER_SUFFIX)


def _duration(span: ReceivedSpan) -> int:
    return span.end_ns - span.start_ns


def _nearest_hoptrace_ancestor(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> ReceivedSpan | None:
    """The closest ancestor of SPAN that is a hoptrace publish or process span; None at a missing parent, a root or a loop."""
    seen = {span.span_id}
    parent_id = span.parent_span_id
    while parent_id is not None and parent_id not in seen:
        seen.add(parent_id)
        parent = by_id.get(parent_id)
        if parent is None:
            return None
        if _is_publish(parent) or _is_process(parent):
            return parent
        parent_id = parent.parent_span_id
    return None


@dataclass
class _Hop:
    """One message of the job: its publish (when received), its process attempts, and where it was parked."""

    publish: ReceivedSpan | None = None
    attempts: list[ReceivedSpan] = field(default_factory=list)
    parked: list[ReceivedSpan] = field(default_factory=list)
    sent_ns: int | None = None
    """Start of the span that published the message: hoptrace's publish, or another PRODUCER parent (a stock producer)."""

    @property
    def anchor(self) -> ReceivedSpan:
        """The span that places the hop in the trace: its publish, else its first attempt, else its parking."""
        return self.publish or (self.attempts or self.parked)[0]

    def attribute(self, key: str) -> str | None:
        """A string attribute from the attempts first (where the worker is), then the publish."""
        for span in (*self.attempts, *([self.publish] if self.publish else [])):
            if (value := _text(span, key)) is not None:
                return value
        return None

    @property
    def destination(self) -> tuple[str, str]:
        """``(system, destination)`` of the message; for a parked-only hop, the destination it was parked from."""
        if self.attempts or self.publish:
            return self.attribute(semconv.MESSAGING_SYSTEM) or "?", self.attribute(semconv.MESSAGING_DESTINATION) or "?"
        parked = self.parked[0]
        destination = _text(parked, semconv.MESSAGING_DESTINATION) or "?"
        return _text(parked, semconv.MESSAGING_SYSTEM) or "?", destination.removesuffix(DEAD_LETTER_SUFFIX)

    @property
    def status(self) -> HopStatus:
        """dead-lettered, failed, retrying (an attempt failed, the next is due), retried, ok, or queued (not taken yet)."""
        if self.parked or any(_text(span, semconv.OUTCOME) == "dead_lettered" for span in self.attempts):
            return "dead-lettered"
        if not self.attempts:
            return "failed" if self.publish is not None and self.publish.status_code == "ERROR" else "queued"
        last = self.attempts[-1]
        if last.status_code == "ERROR":
            return "retrying" if _text(last, semconv.OUTCOME) == "retried" else "failed"
        if len(self.attempts) > 1 or any(_text(span, semconv.OUTCOME) == "retried" for span in self.attempts):
            return "retried"
        return "ok"

    @property
    def queue_wait_ns(self) -> int | None:
        """First attempt's start minus the start of the span that published the message; None without both."""
        if self.sent_ns is None or not self.attempts:
            return None
        return self.attempts[0].start_ns - self.sent_ns

    @property
    def shows_attempts(self) -> bool:
        """Whether each attempt gets a line of its own: more than one, or one that failed."""
        return len(self.attempts) > 1 or any(span.status_code == "ERROR" for span in self.attempts)


@dataclass
class _Node:
    """A line of the tree before it becomes a ``rich`` node; children are ordered by start."""

    label: Text | _Label
    start_ns: int
    children: list[_Node] = field(default_factory=list)


@dataclass(frozen=True)
class _Label:
    """A tree line that is WIDE when that fits the width it gets, else NARROW (which may still wrap)."""

    wide: Text
    narrow: Text

    @classmethod
    def split(cls, head: Text, tail: Text) -> _Label:
        """HEAD and TAIL on one line two spaces apart, or on two lines."""
        return cls(Text.assemble(head, "  ", tail), Text.assemble(head, "\n", tail))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The wide text when it fits, else the narrow one."""
        yield self.wide if self.wide.cell_len <= options.max_width else self.narrow

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """As narrow as the narrow text can get, as wide as the wide one."""
        return Measurement(Measurement.get(console, options, self.narrow).minimum, self.wide.cell_len)


def _group_hops(spans: list[ReceivedSpan], by_id: dict[str, ReceivedSpan]) -> list[_Hop]:
    """The hops of SPANS (ordered by start), in time order."""
    hops: dict[object, _Hop] = {}
    hop_of: dict[str, _Hop] = {}  # span id of a hop's publish or attempt -> the hop
    for span in spans:
        if _is_publish(span) and not _is_dead_letter(span):
            hop_of[span.span_id] = hops[span.span_id] = _Hop(publish=span, sent_ns=span.start_ns)
    for span in spans:
        if not _is_process(span):
            continue
        owner = _nearest_hoptrace_ancestor(span, by_id)
        if owner is not None and owner.span_id in hops:
            hop = hops[owner.span_id]
        else:  # its publish is missing, or is no hoptrace publish: one hop per parent and stage
            key = ("no publish", span.parent_span_id, _text(span, semconv.STAGE), _text(span, semconv.MESSAGING_DESTINATION))
            hop = hops.setdefault(key, _Hop())
            producer = by_id.get(span.parent_span_id or "")
            if producer is not None and producer.kind == "PRODUCER":  # e.g. a plain KafkaProducer's stock span
                hop.sent_ns = producer.start_ns
        hop.attempts.append(span)
        hop_of[span.span_id] = hop
    for span in spans:
        if not _is_dead_letter(span):
            continue
        owner = _nearest_hoptrace_ancestor(span, by_id)
        if owner is not None and owner.span_id in hop_of:
            hop_of[owner.span_id].parked.append(span)
        else:
            hops[span.span_id] = _Hop(parked=[span])
    for hop in hops.values():
        hop.attempts.sort(key=lambda span: (_integer(span, semconv.ATTEMPT) or 0, span.start_ns))
    return sorted(hops.values(), key=lambda hop: hop.anchor.start_ns)


def _status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def _hop_label(hop: _Hop, orphan: bool) -> _Label:
    """``charge  celery payments  queue 3.0ms  handler 12ms  ok``, styled by the hop's status (numbers on a line of their own when narrow)."""
    status = hop.status
    system, destination = hop.destination
    style = _HOP_STYLES.get(status, "")
    where = Text(style=style)
    where.append(hop.attribute(semconv.STAGE) or _text(hop.anchor, semconv.STAGE) or "?", style="bold")
    where.append(f"  {system} {destination}")
    numbers = Text(f"queue {format_ns(hop.queue_wait_ns)}  ", style=style)
    if hop.shows_attempts:
        numbers.append(f"{len(hop.attempts)} attempt{'s' if len(hop.attempts) != 1 else ''}  ")
    else:
        numbers.append(f"handler {format_ns(_duration(hop.attempts[0])) if hop.attempts else NONE}  ")
    numbers.append_text(_status_text(status))
    if orphan:
        numbers.append("  (parent not received)", style="italic")
    return _Label.split(where, numbers)


def _attempt_label(span: ReceivedSpan, number: int) -> Text:
    """``attempt 1 12ms ERROR OrderRejected`` or ``attempt 2 3.0ms ok``."""
    label = Text(f"attempt {_integer(span, semconv.ATTEMPT) or number} {format_ns(_duration(span))} ")
    if span.status_code == "ERROR":
        label.append(" ".join(filter(None, ("ERROR", _text(span, semconv.ERROR_TYPE) or span.status_message))))
        label.stylize("red")
    else:
        label.append_text(_status_text("ok"))
    return label


def _parked_label(span: ReceivedSpan) -> Text:
    """``parked on kafka orders.placed.dead-letter``, red."""
    system, destination = _text(span, semconv.MESSAGING_SYSTEM) or "?", _text(span, semconv.MESSAGING_DESTINATION) or "?"
    label = Text(f"parked on {system} {destination}", style="red")
    if span.status_code == "ERROR":
        label.append(f"  ERROR {span.status_message}".rstrip())
    return label


def _other_label(span: ReceivedSpan, orphan: bool) -> Text:
    """A span that is not one of hoptrace's hops: its name and duration, dimmed."""
    label = Text(f"{span.name}  {format_ns(_duration(span))}", style="dim")
    if span.status_code == "ERROR":
        label.append(f"  ERROR {span.status_message}".rstrip(), style="red")
    if orphan:
        label.append("  (parent not received)", style="italic")
    return label


def _in_loop(span: ReceivedSpan, others: dict[str, ReceivedSpan]) -> bool:
    """Whether SPAN is its own ancestor through other non-hop spans (malformed input)."""
    seen: set[str] = set()
    parent_id = span.parent_span_id
    while parent_id in others and parent_id not in seen:
        if parent_id == span.span_id:
            return True
        seen.add(parent_id)
        parent_id = others[parent_id].parent_span_id
    return parent_id == span.span_id


def _job_status(hops: Sequence[_Hop], spans: Sequence[ReceivedSpan]) -> JobStatus:
    """The job's status from its hops' (from its spans' when it has no hops)."""
    statuses = {hop.status for hop in hops}
    if "dead-lettered" in statuses:
        return "dead-lettered"
    if "failed" in statuses:
        return "failed"
    if statuses & {"retried", "retrying"}:
        return "retried"
    if "queued" in statuses:
        return "in flight"
    if not hops and any(span.status_code == "ERROR" for span in spans):
        return "failed"
    return "ok"


def _to_rich(root: _Node) -> Tree:
    """The ``rich`` tree of ROOT, built without recursion (traces may nest deeply)."""
    tree = Tree(root.label, guide_style="dim")
    stack: list[tuple[Tree, _Node]] = [(tree, root)]
    while stack:
        parent, node = stack.pop()
        for child in sorted(node.children, key=lambda each: each.start_ns):
            stack.append((parent.add(child.label), child))
    return tree


def trace_tree(spans: Sequence[ReceivedSpan]) -> Tree:
    """One job as a tree across queues: a job line, then its hops in time order, other spans under their parents.

    The job line: short job id, trace id, end-to-end time (latest end minus earliest start) and
    status: ok, retried, failed, dead-lettered, or in flight (a message not taken yet). A hop line:
    stage, transport and destination, time in the queue (first attempt's start minus its
    publish's start; ``—`` when the publish was not received), handler time (or one line per
    attempt when retried or failed), and status (ok, retried, retrying, failed, dead-lettered,
    queued): red when failed or dead-lettered (with where it was parked), yellow when retried. Spans that are no hop of hoptrace's (stock
    instrumentations, the handler's own) hang dimmed under their parent; a span whose parent was
    not received hangs under the job line, marked so.
    """
    unique = {span.span_id: span for span in spans}  # a span received twice counts once
    ordered = sorted(unique.values(), key=lambda span: span.start_ns)
    if not ordered:
        return Tree(Text("no spans received for this trace", style="dim"))
    by_id = {span.span_id: span for span in ordered}
    hops = _group_hops(ordered, by_id)
    start, end = ordered[0].start_ns, max(span.end_ns for span in ordered)
    job_id = next((value for span in ordered if (value := _text(span, semconv.JOB_ID))), None)
    job = Text.assemble(("job ", "dim"), (_short(job_id), "bold"))
    trace = Text.assemble(("trace ", "dim"), ordered[0].trace_id)
    outcome = Text.assemble(format_ns(end - start), "  ", _status_text(_job_status(hops, ordered)))
    root = _Node(_Label(Text.assemble(job, "  ", trace, "  ", outcome), Text.assemble(job, "  ", outcome, "\n", trace)), start)

    def missing_parent(span: ReceivedSpan) -> bool:
        return span.parent_span_id is not None and span.parent_span_id not in by_id

    owners: dict[str, _Node] = {}  # span id -> the line that stands for it
    for hop in hops:
        node = _Node(_hop_label(hop, missing_parent(hop.anchor)), hop.anchor.start_ns)
        root.children.append(node)
        if hop.publish is not None:
            owners[hop.publish.span_id] = node
        for number, attempt in enumerate(hop.attempts, start=1):
            if hop.shows_attempts:
                owners[attempt.span_id] = _Node(_attempt_label(attempt, number), attempt.start_ns)
                node.children.append(owners[attempt.span_id])
            else:
                owners[attempt.span_id] = node
        for parked in hop.parked:
            owners[parked.span_id] = _Node(_parked_label(parked), parked.start_ns)
            node.children.append(owners[parked.span_id])

    others = {span.span_id: span for span in ordered if span.span_id not in owners}
    for span in others.values():
        owners[span.span_id] = _Node(_other_label(span, missing_parent(span)), span.start_ns)
    for span in others.values():
        parent_id = span.parent_span_id
        if parent_id is None or parent_id not in owners or _in_loop(span, others):
            root.children.append(owners[span.span_id])
        else:
            owners[parent_id].children.append(owners[span.span_id])
    return _to_rich(root)


# --- tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """A table column before it is placed: its cells, how far it may shrink, and how much it matters."""

    header: str
    cells: list[Text]
    priority: int
    """When the width is short, columns are left out highest number first."""
    justify: Literal["left", "right"] = "left"
    shrinks: bool = False
    """Whether it may wrap between words; False: every value stays on one line."""
    fold_to: int | None = None
    """When it shrinks, how narrow a long word may fold; None: words never fold."""

    @property
    def min_width(self) -> int:
        """The fewest cells it needs: its widest value (header included), or its longest word when it shrinks, or ``fold_to``."""
        texts = [self.header, *(cell.plain for cell in self.cells)]
        if not self.shrinks:
            return max(cell_len(line) for text in texts for line in text.splitlines() or [""])
        longest = max((cell_len(word) for text in texts for word in text.split()), default=1)
        return longest if self.fold_to is None else min(longest, max(self.fold_to, cell_len(self.header)))


def _fit(columns: Sequence[_Column], width: int) -> list[_Column]:
    """COLUMNS that fit WIDTH cells, taken by priority until the next one does not fit, in their own order; the first always."""
    kept: set[int] = set()
    used = -_COLUMN_GAP
    for index, column in sorted(enumerate(columns), key=lambda pair: pair[1].priority):
        used += _COLUMN_GAP + column.min_width
        if kept and used > width:
            break
        kept.add(index)
    return [column for index, column in enumerate(columns) if index in kept]


ColumnsFor = Callable[[int], list[_Column]]
"""The columns of a table for a width (a column may be laid out differently when narrow)."""


class _FittingTable(Table):
    """A borderless table that, when rendered, leaves out the columns that do not fit the width it gets (or WIDTH, if narrower)."""

    def __init__(self, columns_for: ColumnsFor, width: int | None, rows: int, empty: str) -> None:
        """Lay the columns out for WIDTH (for unlimited width when None); show EMPTY as the caption when there are no ROWS."""
        super().__init__(
            box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold", caption=None if rows else empty
        )
        self._columns_for = columns_for
        self._width = width
        self._empty = empty
        self._rows_count = rows
        self._place(self._chosen(width))

    def _chosen(self, width: int | None) -> list[_Column]:
        return self._columns_for(sys.maxsize) if width is None else _fit(self._columns_for(width), width)

    def _place(self, columns: Sequence[_Column]) -> None:
        for column in columns:
            overflow: Literal["fold", "ellipsis"] = "fold" if column.fold_to is not None else "ellipsis"
            self.add_column(column.header, justify=column.justify, no_wrap=not column.shrinks, overflow=overflow)
        for row in zip(*(column.cells for column in columns), strict=True):
            self.add_row(*row)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """This table when it was laid out for the width it gets, else a copy laid out for that width."""
        width = options.max_width if self._width is None else min(self._width, options.max_width)
        narrowed = options.update_width(width)
        if width == self._width:
            yield from super().__rich_console__(console, narrowed)
        else:
            yield from Table.__rich_console__(_FittingTable(self._columns_for, width, self._rows_count, self._empty), console, narrowed)


def _count(value: int, style: str) -> Text:
    """A count, styled when it is not zero."""
    return Text(str(value), style=style if value else "")


def stage_table(stats: Sequence[StageStats], width: int | None = None) -> Table:
    """Per stage: transport and destination, msg/s, p50/p95/p99 handler time, p95 queue wait, errors, retries, depth or lag.

    Columns that do not fit the width the table is rendered at (or WIDTH, when narrower) are
    left out, in this order: p99, retries, wait p95, p50, msg/s, depth/lag, errors, p95, via;
    the stage always stays. Stages of several pipelines are named ``pipeline/stage``.
    """
    several = len({each.pipeline for each in stats}) > 1

    def texts(values: Iterable[str]) -> list[Text]:
        return [Text(value) for value in values]

    def columns_for(width: int) -> list[_Column]:
        return [
            _Column("stage", texts(f"{s.pipeline}/{s.stage}" if several else s.stage for s in stats), 1, shrinks=True, fold_to=8),
            _Column("via", texts(f"{s.system or '?'} {s.destination or '?'}" for s in stats), 2, shrinks=True),
            _Column("msgs", texts(str(s.messages) for s in stats), 6, "right"),
            _Column("msg/s", texts(_format_rate(s.rate_per_s) for s in stats), 7, "right"),
            _Column("p50", texts(format_duration(s.handler_p50_s) for s in stats), 8, "right"),
            _Column("p95", texts(format_duration(s.handler_p95_s) for s in stats), 3, "right"),
            _Column("p99", texts(format_duration(s.handler_p99_s) for s in stats), 11, "right"),
            _Column("wait p95", texts(format_duration(s.queue_wait_p95_s) for s in stats), 9, "right"),
            _Column("errors", [_count(s.errors, "red") for s in stats], 4, "right"),
            _Column("retries", [_count(s.retries, "yellow") for s in stats], 10, "right"),
            _Column("depth/lag", texts(_format_number(s.depth) for s in stats), 5, "right"),
        ]

    return _FittingTable(columns_for, width, len(stats), "no stage has processed a message in the window")


def summary_status(summary: TraceSummary) -> str:
    """``dead-lettered``, ``retried``, ``failed`` (an error span, no retry), or ``ok``."""
    if summary.dead_lettered:
        return "dead-lettered"
    if summary.retried:
        return "retried"
    return "failed" if summary.error_count else "ok"


def _local_time(time_ns: int) -> str:
    """HH:MM:SS in the local time zone."""
    return time.strftime("%H:%M:%S", time.localtime(time_ns // 1_000_000_000))


WHOLE_TRACE_ID_WIDTH = 60
"""From this width up, trace ids in ``traces_table`` stay whole on one line; below, they fold."""


def traces_table(summaries: Sequence[TraceSummary], width: int | None = None) -> Table:
    """One line per trace: trace id, job id (short), start (local HH:MM:SS), end-to-end time, spans, stages, status.

    Status: dead-lettered and failed in red, retried in yellow. Columns that do not fit the
    width the table is rendered at (or WIDTH, when narrower) are left out: spans first, then
    job, stages, start and end-to-end time; trace id and status always stay. Below
    ``WHOLE_TRACE_ID_WIDTH`` cells trace ids fold over two lines.
    """

    def columns_for(width: int) -> list[_Column]:
        whole = width >= WHOLE_TRACE_ID_WIDTH
        return [
            _Column("trace", [Text(s.trace_id) for s in summaries], 1, shrinks=not whole, fold_to=None if whole else 16),
            _Column("job", [Text(_short(s.job_id)) for s in summaries], 6),
            _Column("start", [Text(_local_time(s.start_ns)) for s in summaries], 4),
            _Column("e2e", [Text(format_ns(s.end_ns - s.start_ns)) for s in summaries], 3, "right"),
            _Column("spans", [Text(str(s.span_count)) for s in summaries], 7, "right"),
            _Column("stages", [Text(" → ".join(s.stages) or NONE) for s in summaries], 5, shrinks=True),
            _Column("status", [_status_text(summary_status(s)) for s in summaries], 2),
        ]

    return _FittingTable(columns_for, width, len(summaries), "no traces yet")


# --- JSON and plain text ---------------------------------------------------------------------


def _json_ready(value: Attributes) -> Any:
    """VALUE as JSON values, bytes as ``{"$bytes": "<base64>"}`` (the store's own encoding, ``trace_queries.to_json``)."""
    return json.loads(to_json(value))


def trace_json(spans: Iterable[ReceivedSpan]) -> list[dict[str, Any]]:
    """The SPANS (in the order given) as JSON-ready dicts with every ReceivedSpan field, keys in field order.

    Times are integer nanoseconds; events are ``{"name", "attributes"}`` and links
    ``{"trace_id", "span_id", "attributes"}``; a bytes value anywhere in attributes or the
    resource is ``{"$bytes": "<base64>"}`` (a map that would read as such is wrapped in ``{"$map": ...}``).
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
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False, highlight=False, emoji=False)
    console.print(renderable)
    return buffer.getvalue()
