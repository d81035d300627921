"""One message on its way through hoptrace: as a worker took it (``Incoming``) or as a publisher sends it (``Outgoing``).

These records are what the middleware hooks (``pipeline.middleware``) see and fill in: the
processor and the publisher create them and decide the message's fate; tracing, metrics and
retries read and add to them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext
from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline import jobs
from hoptrace.pipeline.carriers import RawPairs
from hoptrace.pipeline.stages import Payload, Stage, Transport

_OWNED: ContextVar[bool] = ContextVar("hoptrace_owned", default=False)


class Owned:
    """``with Owned():`` marks what runs inside as hoptrace's own client calls (its publisher sending, its stage workers polling).

    A class rather than a generator context manager: the publisher enters one per message.
    """

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        """Mark the calls that follow as hoptrace's own."""
        self._token = _OWNED.set(True)

    def __exit__(self, *exc_info: object) -> None:
        """Unmark them; an exception goes on."""
        _OWNED.reset(self._token)


def is_owned() -> bool:
    """Whether hoptrace's own publisher or stage worker is driving the client now: drop-in instrumentation leaves such calls alone."""
    return _OWNED.get()


class Outcome(str, Enum):
    """How a message left the worker."""

    PROCESSED = "processed"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"
    """Given up without a dead letter: the broker's or framework's own failure handling took it (drop-in Celery tasks)."""


@dataclass(slots=True)
class Delivery:
    """One message as a worker took it from its transport."""

    payload: Payload
    headers: RawPairs
    """The propagation headers a transport's getter found (``carriers``), raw and untrusted."""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    """What the transport knows: partition, offset, message id."""
    decode_error: str | None = None
    """Why the body could not be read; the message is then dead-lettered without running the handler."""
    redelivered: bool = False
    """The transport handed this message to a consumer before (Celery's ``redelivered`` flag, a Kafka offset this group was given)."""


@dataclass(eq=False, slots=True)
class Incoming:
    """A delivery being processed: filled in by the processor and the middleware, attempt after attempt."""

    stage: Stage
    delivery: Delivery
    context: Context
    """What the message brought: its parent span and baggage, with its job (``receiving.receive``), and its pathway (metrics middleware)."""
    job_id: str
    """The job the message belongs to (from its baggage, or started when it came without one)."""
    parent: SpanContext | None = None
    """The valid span it was published in (the parent span in ``context``); None when it starts a trace."""
    job_started_at: float | None = None
    """When the job began (epoch seconds), from its baggage; None when that was missing or broken."""
    received_at: float = 0.0
    """Epoch seconds when the worker took it."""
    sent_at: float | None = None
    """When it was published (epoch seconds), from its headers."""
    fallbacks: tuple[str, ...] = ()
    """Headers that were broken and ignored (``propagation.Extracted.fallbacks``)."""
    pathway_in: str | None = None
    """The stages its job went through before it (``propagation.Extracted.pathway``); None when none came."""
    pathway: str | None = None
    """Its ``hoptrace.pathway`` attribute (``pathways.Pathway.label``), set by the metrics middleware; None before that."""
    links: tuple[SpanContext, ...] = ()
    """Other spans its processing is linked to (a Celery chord's body: the header tasks it waited for)."""
    attempt: int = 0
    """The attempt under way or last made, from 1."""
    attempt_context: Context | None = None
    """The context the handler runs in: ``context`` with the attempt's span (set by the tracing middleware)."""
    attempt_started: float = 0.0
    """``time.perf_counter()`` at the start of the attempt."""
    span: Span | None = None
    """The last attempt's process span (a ``NonRecordingSpan`` when not sampled); ended once the attempt is over."""
    error: Exception | None = None
    """Why the last attempt failed; None when it succeeded."""
    retry_after_s: float | None = None
    """Set by the retry middleware when the failed attempt is to be tried again after this pause."""
    gives_up_as: Outcome = Outcome.DEAD_LETTERED
    """What becomes of the message when an attempt fails and none follows."""
    outcome: Outcome | None = None
    """Set by the processor once the message is processed or dead-lettered; None while it is not (or could not be parked)."""
    broker_waits: int = 0
    """Attempts that failed because a broker was away, run again without counting against the retry policy."""
    away_since: float | None = None
    """``time.monotonic()`` of the first such failure; None before one."""
    kept: tuple[str, bool] | None = None
    """Why the flight recorder kept its job as it arrived (reason, whether spans of it are gone), for its span to say; None: not then."""

    @property
    def will_retry(self) -> bool:
        """Whether the last attempt failed and another follows."""
        return self.error is not None and self.retry_after_s is not None


@dataclass(eq=False, slots=True)
class Outgoing:
    """A message being published: filled in by the publisher and the middleware, until the broker answered."""

    stage: Stage
    """The stage the message is for (the failed stage, for a dead letter)."""
    transport: Transport
    """Where it goes: the stage's own transport, or its dead-letter twin."""
    payload: Payload
    headers: dict[str, str]
    """The headers to send, in neutral form; the tracing middleware adds the propagation headers."""
    context: Context
    """The context it is published in, with its job in the baggage."""
    sending_context: Context | None = None
    """``context`` with the publish span, current while the sender runs (set by the tracing middleware)."""
    started: float = 0.0
    """``time.perf_counter()`` when it was handed to the publisher."""
    span: Span | None = None
    """The publish span (a ``NonRecordingSpan`` when not sampled); ended once the broker answered."""
    trace_id: int = 0
    """The trace the message belongs to; 0 when it was not traced."""
    job_id: str = ""
    """The job the message belongs to (in ``context``'s baggage)."""
    starts_job: bool = False
    """Whether this publish started the job (its first message) rather than went on with one."""
    answer: Mapping[str, Any] = field(default_factory=dict)
    """What the broker told about the accepted message (partition, offset, message id)."""
    error: BaseException | None = None
    """Why the broker did not accept it; None when it did."""

    @classmethod
    def published_in(cls, current: Context, stage: Stage, transport: Transport, payload: Payload, headers: dict[str, str]) -> Outgoing:
        """A message published while CURRENT is the context: in CURRENT's job, or in a new job that it starts."""
        context, job, new = jobs.job_of(current)
        return cls(stage, transport, payload, headers, context, started=time.perf_counter(), job_id=job, starts_job=new)

    def handed_over(self) -> None:
        """The sender has the message: from now on ``context`` is the one it was sent in (``sending_context``), when there is one.

        A message waits in the client until the broker answers; the context it was published in holds the
        publisher's spans (a handler's, long over by then), which need not live as long.
        """
        if self.sending_context is not None:
            self.context = self.sending_context
