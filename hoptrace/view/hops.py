"""The hops of one trace: which spans make each message of a job, and the status of each hop and of the job.

A hop is one message: hoptrace's PRODUCER ``send <destination>`` span and the CONSUMER
``process <destination>`` spans (one per attempt) of the worker that took it, found by walking
up from each process span to its nearest hoptrace publish (stock instrumentation spans may sit
in between). A dead-letter publish (``<destination>.dead-letter``) belongs to the hop that gave
up, as where the message was parked. ``tree`` draws the hops; every other span is its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hoptrace.pipeline import semconv
from hoptrace.view.otlp_decode import ReceivedSpan, int_attribute, text_attribute

HopStatus = Literal["ok", "retried", "retrying", "failed", "dead-lettered", "queued"]
"""What became of one message (``Hop.status``)."""
JobStatus = Literal["ok", "retried", "failed", "dead-lettered", "in flight", "stuck"]
"""What became of the whole job (``job_status``)."""


def span_text(span: ReceivedSpan, key: str) -> str | None:
    """The string attribute KEY of SPAN, or None."""
    return text_attribute(span.attributes, key)


def kept_as(spans: Iterable[ReceivedSpan]) -> str | None:
    """Why a flight recorder kept the job of SPANS (``failed``, ``slow``, ...; ``, partial`` when spans of it were gone); None: not kept."""
    reason, partial = None, False
    for span in spans:
        reason = reason or span_text(span, semconv.KEEP_REASON)
        partial = partial or span.attributes.get(semconv.KEEP_PARTIAL) is True
    return None if reason is None else f"{reason}, partial" if partial else reason


def span_integer(span: ReceivedSpan, key: str) -> int | None:
    """The integer attribute KEY of SPAN, or None."""
    return int_attribute(span.attributes, key)


def duration_ns(span: ReceivedSpan) -> int:
    """How long SPAN took, in nanoseconds."""
    return span.end_ns - span.start_ns


def _is_publish(span: ReceivedSpan) -> bool:
    """A hoptrace ``send`` span: PRODUCER with a stage."""
    return span.kind == "PRODUCER" and span_text(span, semconv.STAGE) is not None


def _is_process(span: ReceivedSpan) -> bool:
    """A hoptrace ``process`` span (one attempt): CONSUMER with a stage."""
    return span.kind == "CONSUMER" and span_text(span, semconv.STAGE) is not None


def _is_dead_letter(span: ReceivedSpan) -> bool:
    """A hoptrace publish to a ``.dead-letter`` destination."""
    return _is_publish(span) and (span_text(span, semconv.MESSAGING_DESTINATION) or "").endswith(semconv.DEAD_LETTER_SUFFIX)


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
class Hop:
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
            if (value := span_text(span, key)) is not None:
                return value
        return None

    @property
    def destination(self) -> tuple[str, str]:
        """``(system, destination)`` of the message; for a parked-only hop, the destination it was parked from."""
        if self.attempts or self.publish:
            return self.attribute(semconv.MESSAGING_SYSTEM) or "?", self.attribute(semconv.MESSAGING_DESTINATION) or "?"
        parked = self.parked[0]
        destination = span_text(parked, semconv.MESSAGING_DESTINATION) or "?"
        return span_text(parked, semconv.MESSAGING_SYSTEM) or "?", destination.removesuffix(semconv.DEAD_LETTER_SUFFIX)

    @property
    def status(self) -> HopStatus:
        """dead-lettered, failed, retrying (an attempt failed, the next is due), retried, ok, or queued (not taken yet)."""
        if self.parked or any(span_text(span, semconv.OUTCOME) == "dead_lettered" for span in self.attempts):
            return "dead-lettered"
        if not self.attempts:
            return "failed" if self.publish is not None and self.publish.status_code == "ERROR" else "queued"
        last = self.attempts[-1]
        if last.status_code == "ERROR":
            return "retrying" if span_text(last, semconv.OUTCOME) == "retried" else "failed"
        if len(self.attempts) > 1 or any(span_text(span, semconv.OUTCOME) == "retried" for span in self.attempts):
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


def group_hops(spans: list[ReceivedSpan], by_id: dict[str, ReceivedSpan]) -> list[Hop]:
    """The hops of SPANS (ordered by start; BY_ID maps their span ids to them), in time order."""
    hops: dict[object, Hop] = {}
    hop_of: dict[str, Hop] = {}  # span id of a hop's publish or attempt -> the hop
    for span in spans:
        if _is_publish(span) and not _is_dead_letter(span):
            hop_of[span.span_id] = hops[span.span_id] = Hop(publish=span, sent_ns=span.start_ns)
    for span in spans:
        if not _is_process(span):
            continue
        owner = _nearest_hoptrace_ancestor(span, by_id)
        if owner is not None and owner.span_id in hops:
            hop = hops[owner.span_id]
        else:  # its publish is missing, or is no hoptrace publish: one hop per parent and stage
            key = ("no publish", span.parent_span_id, span_text(span, semconv.STAGE), span_text(span, semconv.MESSAGING_DESTINATION))
            hop = hops.setdefault(key, Hop())
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
            hops[span.span_id] = Hop(parked=[span])
    for hop in hops.values():
        hop.attempts.sort(key=lambda span: (span_integer(span, semconv.ATTEMPT) or 0, span.start_ns))
    return sorted(hops.values(), key=lambda hop: hop.anchor.start_ns)


def job_status(hops: Sequence[Hop], spans: Sequence[ReceivedSpan], stuck_before_ns: int | None = None) -> JobStatus:
    """The job's status from its hops' (from its spans' when it has no hops).

    A job with a message not taken yet is ``in flight``, or ``stuck`` when nothing of it happened
    since STUCK_BEFORE_NS (a message that will never be taken: lost, or its stage is down).
    """
    statuses = {hop.status for hop in hops}
    if "dead-lettered" in statuses:
        return "dead-lettered"
    if "failed" in statuses:
        return "failed"
    if statuses & {"retried", "retrying"}:
        return "retried"
    if "queued" in statuses:
        stuck = stuck_before_ns is not None and max((span.end_ns for span in spans), default=0) < stuck_before_ns
        return "stuck" if stuck else "in flight"
    if not hops and any(span.status_code == "ERROR" for span in spans):
        return "failed"
    return "ok"
