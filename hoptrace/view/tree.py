"""What ``hoptrace watch``, ``trace`` and ``demo`` draw for one trace: a ``rich`` tree of the job's hops.

A trace is drawn as one job: a line for the job, then one node per hop (``hops``) in
time order; a dead-letter publish is shown inside the hop that gave up, as where the message
was parked. Every other span is kept, dimmed, under its parent. Tree lines fit the width they
are rendered at: a line's numbers move to a line of their own when the whole does not fit.
Pure functions: they read the spans they are given and open no store or terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text
from rich.tree import Tree

from hoptrace.pipeline import semconv
from hoptrace.view.formatting import NONE, format_ns, short_id, shown, status_text
from hoptrace.view.hops import Hop, duration_ns, group_hops, job_status, kept_as, span_integer, span_text
from hoptrace.view.otlp_decode import ReceivedSpan

_HOP_STYLES = {"failed": "red", "dead-lettered": "red", "retried": "yellow", "retrying": "yellow"}


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


def _hop_label(hop: Hop, orphan: bool) -> _Label:
    """``charge  celery payments  queue 3.0ms  handler 12ms  ok``, styled by the hop's status (numbers on a line of their own when narrow)."""
    status = hop.status
    system, destination = hop.destination
    style = _HOP_STYLES.get(status, "")
    where = Text(style=style)
    where.append(hop.attribute(semconv.STAGE) or span_text(hop.anchor, semconv.STAGE) or "?", style="bold")
    where.append(f"  {system} {destination}")
    numbers = Text(f"queue {format_ns(hop.queue_wait_ns)}  ", style=style)
    if hop.shows_attempts:
        numbers.append(f"{len(hop.attempts)} attempt{'s' if len(hop.attempts) != 1 else ''}  ")
    else:
        numbers.append(f"handler {format_ns(duration_ns(hop.attempts[0])) if hop.attempts else NONE}  ")
    numbers.append_text(status_text(status))
    if orphan:
        numbers.append("  (parent not received)", style="italic")
    return _Label.split(shown(where), shown(numbers))


def _attempt_label(span: ReceivedSpan, number: int) -> Text:
    """``attempt 1 12ms ERROR OrderRejected`` or ``attempt 2 3.0ms ok``."""
    label = Text(f"attempt {span_integer(span, semconv.ATTEMPT) or number} {format_ns(duration_ns(span))} ")
    if span.status_code == "ERROR":
        label.append(" ".join(filter(None, ("ERROR", span_text(span, semconv.ERROR_TYPE) or span.status_message))))
        label.stylize("red")
    else:
        label.append_text(status_text("ok"))
    return shown(label)


def _parked_label(span: ReceivedSpan) -> Text:
    """``parked on kafka orders.placed.dead-letter``, red."""
    system, destination = span_text(span, semconv.MESSAGING_SYSTEM) or "?", span_text(span, semconv.MESSAGING_DESTINATION) or "?"
    label = Text(f"parked on {system} {destination}", style="red")
    if span.status_code == "ERROR":
        label.append(f"  ERROR {span.status_message}".rstrip())
    return shown(label)


def _other_label(span: ReceivedSpan, orphan: bool) -> Text:
    """A span that is not one of hoptrace's hops: its name and duration, dimmed."""
    label = Text(f"{span.name}  {format_ns(duration_ns(span))}", style="dim")
    if span.status_code == "ERROR":
        label.append(f"  ERROR {span.status_message}".rstrip(), style="red")
    if orphan:
        label.append("  (parent not received)", style="italic")
    return shown(label)


def _in_loops(others: dict[str, ReceivedSpan]) -> set[str]:
    """The ids of the spans of OTHERS that are their own ancestors through other spans of OTHERS (malformed input).

    Each span's parent chain is walked once in all: a walk stops at a span an earlier walk
    settled, so a deep chain costs its length, not its length squared.
    """
    looping: set[str] = set()
    settled: set[str] = set()
    for span_id in others:
        path: list[str] = []
        on_path: dict[str, int] = {}
        current: str | None = span_id
        while current in others and current not in settled and current not in on_path:
            on_path[current] = len(path)
            path.append(current)
            current = others[current].parent_span_id
        if current in on_path:  # the walk came back to itself: from there on, the path is a loop
            looping.update(path[on_path[current] :])
        settled.update(path)
    return looping


def _to_rich(root: _Node) -> Tree:
    """The ``rich`` tree of ROOT, built without recursion (traces may nest deeply)."""
    tree = Tree(root.label, guide_style="dim")
    stack: list[tuple[Tree, _Node]] = [(tree, root)]
    while stack:
        parent, node = stack.pop()
        for child in sorted(node.children, key=lambda each: each.start_ns):
            stack.append((parent.add(child.label), child))
    return tree


def trace_tree(spans: Sequence[ReceivedSpan], stuck_before_ns: int | None = None) -> Tree:
    """One job as a tree across queues: a job line, then its hops in time order, other spans under their parents.

    The job line: short job id, trace id, end-to-end time (latest end minus earliest start),
    why a flight recorder kept it (when one did) and status: ok, retried, failed, dead-lettered, in flight (a message not taken yet), or stuck (in
    flight with nothing new since STUCK_BEFORE_NS). A hop line:
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
    hops = group_hops(ordered, by_id)
    start, end = ordered[0].start_ns, max(span.end_ns for span in ordered)
    job_id = next((value for span in ordered if (value := span_text(span, semconv.JOB_ID))), None)
    job = Text.assemble(("job ", "dim"), shown(Text(short_id(job_id), style="bold")))
    trace = Text.assemble(("trace ", "dim"), ordered[0].trace_id)
    outcome = Text.assemble(format_ns(end - start), "  ", status_text(job_status(hops, ordered, stuck_before_ns)))
    if (kept := kept_as(ordered)) is not None:
        outcome.append_text(Text.assemble("  ", ("kept: ", "dim"), shown(Text(kept, style="yellow"))))
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
    looping = _in_loops(others)
    for span in others.values():
        parent_id = span.parent_span_id
        if parent_id is None or parent_id not in owners or span.span_id in looping:
            root.children.append(owners[span.span_id])
        else:
            owners[parent_id].children.append(owners[span.span_id])
    return _to_rich(root)
