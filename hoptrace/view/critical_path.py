"""The critical path of one job across its queue hops, split by cause: where the end-to-end time went (pure, no I/O).

The path is found the way a profiler finds a critical path, walking back in time from the span
that ends last, generalised across queues: a process span waited for the message it took, so
before its start the walk goes to that message's publish (``hops.group_hops`` says which), and
before the publish's start into the span that published it (the previous stage's handler), and
so on back to the first span of the job. The segments tile ``[origin, end]`` exactly: origin is
the earliest start of the trace, end its latest end. Adjacent segments of the same stage and
cause are merged. A segment's stage is the ``hoptrace.stage`` of the hop it belongs to.

Causes:

- ``handler``: time inside a span on the path: a process span, for its stage (the whole span,
  children and all, except a publish on the path); any other span (a user's, a stock
  instrumentation's), for the stage whose process span encloses it, ``?`` outside any (the client
  code before the job's first publish, a canvas's ``start ...`` span).
- ``publish``: a publish (PRODUCER) span on the path, for the stage its message goes to.
- ``queue_wait``: from the end of a message's publish to the start of the process span that took
  it, less an eta hold; and every gap the walk cannot explain otherwise (see below), for the stage
  being walked.
- ``eta_hold``: the part of that wait before the process span's ``hoptrace.eta`` (a Celery
  ``countdown``/``eta``), when the delivery is no retry.
- ``retry_backoff``: the pause before a retry: in place (a pipeline stage's retry policy), from
  the end of the previous attempt of the same message to the start of the next; for a Celery
  ``task.retry`` (a new message published from inside an attempt that ended as ``retried``, taken
  by attempt > 1), the part of the wait before ``hoptrace.eta``.
- ``chord_join``: for a fan-in (a process span linked to spans of the trace that are no publishes,
  such as a chord's body linked to its header tasks), from the end of the last-ending linked span
  to the start of the body's publish (to the body's start when its publish is missing), when that
  is positive and the body's process span is its first attempt: what the join took after its last member finished (a result backend's count, a
  ``chord_unlock`` poll). The walk then continues in that member. A body published from inside
  its last header (Celery with Redis) has no such gap: the path runs through that header.

Traces as they arrive: a process span's publish is its hop's, else a PRODUCER parent (a stock
producer), else, when its parent is not in the trace, the latest-ending PRODUCER span it links
to (a stage consuming with span links). A span whose predecessor is unknown (a root, a missing
parent, a parent loop) continues at the span that ended last by then, or at the earliest-started
one still running then, the gap between being ``queue_wait``. Clock skew between hosts (a process
span starting before its publish ended, a child before its parent) is absorbed by clamping every
time into the walk's window, which only moves back: no segment is negative or overlaps another.
Each span is walked at most once, so parent loops end; the cost is O(n log n) in the spans.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from hoptrace.pipeline import semconv
from hoptrace.view.hops import Hop, group_hops, span_integer, span_text
from hoptrace.view.otlp_decode import ReceivedSpan

Cause = Literal["queue_wait", "eta_hold", "handler", "retry_backoff", "chord_join", "publish"]
"""Why a stretch of the critical path took its time (see the module's docstring)."""
UNKNOWN_STAGE = "?"
"""The stage of a segment outside every hop (e.g. the client code before the first publish)."""


@dataclass(frozen=True)
class Segment:
    """One stretch of the critical path: ``[start_ns, end_ns)`` spent for CAUSE in STAGE."""

    stage: str
    cause: Cause
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        """How long the segment is, in nanoseconds."""
        return self.end_ns - self.start_ns

    @property
    def duration_s(self) -> float:
        """How long the segment is, in seconds."""
        return self.duration_ns / 1e9


def critical_path(spans: Sequence[ReceivedSpan]) -> list[Segment]:
    """The critical path of the job whose spans are SPANS: time-ordered segments tiling its first start to its last end; [] for no spans."""
    if not spans:
        return []
    return _Walk(spans).run()


def dominant(segments: Sequence[Segment]) -> Segment | None:
    """The longest of SEGMENTS (the earliest of equals); None for none."""
    return max(segments, key=lambda segment: segment.duration_ns, default=None)


def total_ns(segments: Sequence[Segment]) -> int:
    """The end-to-end time SEGMENTS (time-ordered, contiguous) tile."""
    return segments[-1].end_ns - segments[0].start_ns if segments else 0


def share(segment: Segment, total: int) -> float:
    """SEGMENT's part of TOTAL nanoseconds, 0..1 (0 for a job that took no time)."""
    return segment.duration_ns / total if total > 0 else 0.0


def dominant_phrase(segments: Sequence[Segment]) -> str | None:
    """The longest segment in a few words, ``charge handler 62%`` (stage, cause, share of the whole); None without segments."""
    longest = dominant(segments)
    if longest is None:
        return None
    return f"{longest.stage} {longest.cause} {share(longest, total_ns(segments)):.0%}"


def _merged(segments: Iterable[Segment]) -> list[Segment]:
    """SEGMENTS (time-ordered, contiguous) with neighbours of the same stage and cause made one."""
    merged: list[Segment] = []
    for segment in segments:
        if merged and (merged[-1].stage, merged[-1].cause) == (segment.stage, segment.cause):
            merged[-1] = Segment(segment.stage, segment.cause, merged[-1].start_ns, segment.end_ns)
        else:
            merged.append(segment)
    return merged


class _Walk:
    """One walk back through a trace's spans, from the last end to the first start, emitting segments as it goes."""

    def __init__(self, spans: Sequence[ReceivedSpan]) -> None:
        self.by_id = {span.span_id: span for span in spans}
        self.by_start = sorted(spans, key=lambda span: span.start_ns)
        self.by_end = sorted(spans, key=lambda span: (span.end_ns, span.start_ns))
        self.hop_of: dict[str, tuple[Hop, int]] = {}
        """Process span id -> its hop and its index among the hop's attempts."""
        for hop in group_hops(self.by_start, self.by_id):
            for index, attempt in enumerate(hop.attempts):
                self.hop_of[attempt.span_id] = (hop, index)
        self.origin = self.by_start[0].start_ns
        self.cursor = self.by_end[-1].end_ns
        """Where the walk is: everything after it is covered; it never moves forward."""
        self.visited: set[str] = set()
        self.owners: dict[str, ReceivedSpan | None] = {}
        self.backwards: list[Segment] = []
        self.ended = len(self.by_end) - 1
        """Next candidate (going down) in ``by_end`` for a jump to the span that ended last."""
        self.started = 0
        """Next candidate (going up) in ``by_start`` for a jump to the earliest-started span."""

    def run(self) -> list[Segment]:
        """The segments, time-ordered and merged."""
        span: ReceivedSpan | None = self.by_end[-1]
        while span is not None and self.cursor > self.origin:
            span = self._step(span)
        return _merged(reversed(self.backwards))

    def _emit(self, stage: str, cause: Cause, start_ns: int) -> None:
        """Cover from START_NS (clamped into the walk's window) to the cursor with CAUSE, and move the cursor there."""
        start_ns = min(max(start_ns, self.origin), self.cursor)
        if start_ns < self.cursor:
            self.backwards.append(Segment(stage, cause, start_ns, self.cursor))
            self.cursor = start_ns

    def _parent(self, span: ReceivedSpan) -> ReceivedSpan | None:
        """SPAN's parent when it is in the trace (whether walked or not)."""
        parent = self.by_id.get(span.parent_span_id or "")
        return parent if parent is not None and parent.trace_id == span.trace_id else None

    def _unwalked(self, span: ReceivedSpan | None) -> ReceivedSpan | None:
        """SPAN unless the walk has been through it already (a loop)."""
        return span if span is not None and span.span_id not in self.visited else None

    def _linked(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        """The spans of the trace SPAN links to, not walked yet."""
        linked = ((trace_id, self.by_id.get(span_id)) for trace_id, span_id, _ in span.links)
        return [other for trace_id, other in linked if other is not None and other.trace_id == trace_id and other.span_id not in self.visited]

    def _owner(self, span: ReceivedSpan) -> ReceivedSpan | None:
        """The process span SPAN is part of: itself or its nearest process ancestor; None outside every hop."""
        chain: dict[str, None] = {}
        current, owner = span, None
        while True:
            if current.span_id in self.owners:
                owner = self.owners[current.span_id]
                break
            if current.span_id in self.hop_of:
                owner = current
                break
            if current.span_id in chain:
                break
            chain[current.span_id] = None
            parent = self._parent(current)
            if parent is None:
                break
            current = parent
        self.owners.update(dict.fromkeys(chain, owner))
        return owner

    def _stage(self, span: ReceivedSpan) -> str:
        """The stage SPAN's time counts for: its own, else that of the process span it is part of."""
        stage = span_text(span, semconv.STAGE)
        if stage is None and (owner := self._owner(span)) is not None:
            stage = span_text(owner, semconv.STAGE)
        return stage or UNKNOWN_STAGE

    def _step(self, span: ReceivedSpan) -> ReceivedSpan | None:
        """Cover SPAN from its start to the cursor, then the time before it; the span the walk goes on in, None at the end."""
        self.visited.add(span.span_id)
        stage = self._stage(span)
        if span.span_id in self.hop_of:
            self._emit(stage, "handler", span.start_ns)
            return self._before_process(span, stage)
        self._emit(stage, "publish" if span.kind == "PRODUCER" else "handler", span.start_ns)
        return self._before(span, stage)

    def _before(self, span: ReceivedSpan, stage: str) -> ReceivedSpan | None:
        """Go on in SPAN's parent (``queue_wait`` of STAGE when it ended before); jump when it has none."""
        parent = self._unwalked(self._parent(span))
        if parent is None:
            return self._jump(stage)
        self._emit(stage, "queue_wait", parent.end_ns)
        return parent

    def _before_process(self, process: ReceivedSpan, stage: str) -> ReceivedSpan | None:
        """The time before the attempt PROCESS: an earlier attempt, the message's wait and publish, a chord's join."""
        hop, index = self.hop_of[process.span_id]
        attempt = span_integer(process, semconv.ATTEMPT) or 1
        previous = hop.attempts[index - 1] if index else None
        if previous is not None and previous.span_id not in self.visited and previous.end_ns <= process.start_ns:
            if (span_integer(previous, semconv.ATTEMPT) or 1) < attempt:  # an in-place retry
                self._emit(stage, "retry_backoff", previous.end_ns)
                return previous
        publish = self._publish_of(process, hop)
        if publish is not None:
            if attempt > 1 and previous is None:
                previous = self._owner(publish)  # a Celery retry is published from inside the failed attempt
            retry = attempt > 1 and previous is not None and span_text(previous, semconv.OUTCOME) == "retried"
            eta = span_integer(process, semconv.ETA)
            self._emit(stage, "queue_wait", max(eta or 0, publish.end_ns))
            self._emit(stage, "retry_backoff" if retry else "eta_hold", publish.end_ns)
            self.visited.add(publish.span_id)
            self._emit(stage, "publish", publish.start_ns)
        members = [span for span in self._linked(process) if span.kind != "PRODUCER"] if attempt == 1 else []  # a retry's wait is no join
        last = max(members, key=lambda span: span.end_ns, default=None)
        if last is not None and last.end_ns < self.cursor:
            self._emit(stage, "chord_join", last.end_ns)
            return last
        return self._before(process if publish is None else publish, stage)

    def _publish_of(self, process: ReceivedSpan, hop: Hop) -> ReceivedSpan | None:
        """The span that published PROCESS's message: its hop's publish, a PRODUCER parent, or a linked PRODUCER when it has no parent here."""
        if self._unwalked(hop.publish) is not None:
            return hop.publish
        parent = self._parent(process)
        if parent is not None:
            return self._unwalked(parent) if parent.kind == "PRODUCER" else None
        producers = [span for span in self._linked(process) if span.kind == "PRODUCER"]
        return max(producers, key=lambda span: span.end_ns, default=None)

    def _jump(self, stage: str) -> ReceivedSpan | None:
        """Where to go on when the way back is unknown: the span that ended last by the cursor (``queue_wait`` of STAGE between),
        else the earliest-started one still running at it; None when no span is left before the cursor."""
        if self.cursor <= self.origin:
            return None
        self.ended = min(self.ended, bisect_right(self.by_end, self.cursor, key=lambda span: span.end_ns) - 1)  # the cursor never moves forward
        while self.ended >= 0:
            candidate = self.by_end[self.ended]
            self.ended -= 1
            if candidate.span_id not in self.visited:
                self._emit(stage, "queue_wait", candidate.end_ns)
                return candidate
        while self.started < len(self.by_start) and self.by_start[self.started].span_id in self.visited:
            self.started += 1
        if self.started < len(self.by_start) and self.by_start[self.started].start_ns < self.cursor:
            return self.by_start[self.started]
        return None
