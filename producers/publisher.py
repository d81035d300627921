"""Publishing into a pipeline: trace context and job in the headers, middleware around every message.

The job baggage and the propagation headers are the publisher's own work, the same for every
transport; spans and metrics are middleware (``pipeline.middleware``); a ``Sender`` per
messaging system only turns the payload and headers into that system's message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry.trace import TracerProvider

from hoptrace.pipeline import propagation, semconv
from hoptrace.pipeline.carriers import FRESH_DICT_SETTER
from hoptrace.pipeline.defaults import default_middleware
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.messages import Outgoing, Owned
from hoptrace.pipeline.middleware import Hooks, Middleware
from hoptrace.pipeline.outages import BrokerAway, is_outage
from hoptrace.pipeline.stage_context import Published
from hoptrace.pipeline.stages import Payload, Pipeline, Stage, Transport, dead_letter_transport

Done = Callable[[Mapping[str, Any], "BaseException | None"], None]
"""Called once a message was accepted (with attributes the broker told, e.g. partition) or failed."""


class Pending(Protocol):
    """A message handed to a client that the broker has yet to accept."""

    def wait(self, timeout_s: float) -> None:
        """Block until the broker accepted the message; raise its error, or a timeout, when it did not."""
        ...


class Sender(Protocol):
    """Sends one payload with text headers over one messaging system."""

    def send(self, transport: Transport, payload: Payload, headers: Mapping[str, str], done: Done) -> Pending | None:
        """Send PAYLOAD to TRANSPORT's destination and call DONE exactly once, now or later.

        Returns what to wait on when the broker's answer comes later, None when it came already.
        """
        ...


class ClosingSender(Sender, Protocol):
    """A sender that holds a client of its own (a Kafka producer), which closes when the process is done with it."""

    def close(self, timeout_s: float) -> None:
        """Send what is buffered, waiting at most TIMEOUT_S, and close."""
        ...


class ConnectFailed(Exception):
    """A sender's client could not reach its broker, or authenticate, within the connect timeout; the client's own error is the cause."""


class PublishFailed(RuntimeError):
    """Messages a broker did not accept; ``errors`` holds each failure."""

    def __init__(self, errors: list[BaseException], total: int) -> None:
        """Report ERRORS out of TOTAL messages waited for."""
        first = errors[0]
        super().__init__(f"{len(errors)} of {total} messages were not accepted by the broker; first: {type(first).__name__}: {first}")
        self.errors = errors

    @classmethod
    def of(cls, errors: list[BaseException], total: int) -> PublishFailed:
        """The failure of ERRORS out of TOTAL: ``BrokerUnavailable`` when every one of them is the broker being away."""
        return (BrokerUnavailable if all(is_outage(error) for error in errors) else cls)(errors, total)


class BrokerUnavailable(PublishFailed, BrokerAway):
    """Messages not sent because the broker could not be reached or did not answer in time: waited out, never the message's fault."""


class PipelinePublisher:
    """The pipeline's ``Publisher``: routes each stage to the sender of its messaging system, within its middleware."""

    def __init__(
        self,
        pipeline: Pipeline,
        senders: Mapping[str, Sender],
        tracer_provider: TracerProvider | None = None,
        instruments: Instruments | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        """Publish into PIPELINE through SENDERS (keyed by messaging system: ``kafka``, ``celery``).

        MIDDLEWARE defaults to tracing (on TRACER_PROVIDER), metrics (on INSTRUMENTS, default: the global
        meter provider's) and retries.
        """
        missing = {stage.transport.system for stage in pipeline} - senders.keys()
        if missing:
            raise ValueError(f"pipeline {pipeline.name!r} has {', '.join(sorted(missing))} stages but no sender for them")
        self._senders = senders
        if middleware is None:
            middleware = default_middleware(pipeline, instruments or Instruments.of(), tracer_provider)
        self._hooks = Hooks(middleware)
        self._pending = threading.local()

    def publish(self, stage: Stage, payload: Payload, headers: Mapping[str, str] | None = None) -> Published:
        """Send PAYLOAD to STAGE, starting a job unless the current context carries one.

        HEADERS are the caller's own; they are kept, except keys of the propagators and
        hoptrace (in any letter case), which only this publish may set.
        """
        owned = propagation.fields()
        return self._send(stage, stage.transport, payload, {k: v for k, v in (headers or {}).items() if k.lower() not in owned})

    def dead_letter(self, stage: Stage, payload: Payload, error: BaseException) -> None:
        """Park PAYLOAD on ``<destination>.dead-letter``, with the error and the stage in its headers."""
        headers = {semconv.HEADER_ERROR: f"{type(error).__name__}: {error}"[:1000], semconv.HEADER_FAILED_STAGE: stage.name}
        self._send(stage, dead_letter_transport(stage.transport), payload, headers)

    def confirm(self, timeout_s: float) -> None:
        """Wait until the broker accepted every message this thread sent since the last ``confirm``.

        Raises ``PublishFailed`` naming what was refused or not answered within TIMEOUT_S.
        """
        pending: list[Pending] = self._pending.__dict__.pop("items", [])
        deadline = time.monotonic() + timeout_s
        errors: list[BaseException] = []
        for item in pending:
            try:
                item.wait(max(0.0, deadline - time.monotonic()))
            except Exception as error:  # every kind of broker refusal is the caller's to handle
                errors.append(error)
        if errors:
            raise PublishFailed.of(errors, len(pending))

    def _send(self, stage: Stage, transport: Transport, payload: Payload, headers: dict[str, str]) -> Published:
        message = Outgoing.published_in(otel_context.get_current(), stage, transport, payload, headers)
        hooks = self._hooks.bound(stage, transport)
        hooks.before_publish(message)
        sending = message.sending_context or message.context
        propagation.inject(message.headers, FRESH_DICT_SETTER, sending)
        answered = False

        def done(answer: Mapping[str, Any], error: BaseException | None) -> None:
            nonlocal answered
            if answered:  # a sender that reported and then raised: the first word counts
                return
            answered = True
            message.answer, message.error = answer, error
            hooks.after_publish(message)

        # Current while sending, so a stock instrumentation's own span nests under ours; owned, so
        # hoptrace's drop-in instrumentation of the client does not trace the same message again.
        token = otel_context.attach(sending)
        try:
            with Owned():
                pending = self._senders[transport.system].send(transport, payload, message.headers, done)
        except BaseException as error:
            done({}, error)
            if is_outage(error):  # sent without waiting and refused at once: the broker is away
                raise BrokerUnavailable([error], 1) from error
            raise
        finally:
            otel_context.detach(token)
        message.handed_over()
        if pending is not None:
            self._pending.__dict__.setdefault("items", []).append(pending)
        return Published("%032x" % message.trace_id, message.job_id)  # noqa: UP031 - the fastest formatting of the hot path
