"""Processing one message of a stage, the same for every transport.

The processor's own job is the message's fate: take its trace context and job from the
headers, run the handler (attempt after attempt while the retry middleware asks for one),
and end with the message processed or dead-lettered, never lost. Everything around it —
spans, metrics, the retry policy — is middleware (``pipeline.middleware``), whose hooks it
calls; a failing hook never fails the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry.trace import TracerProvider

from hoptrace.pipeline.defaults import default_middleware
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.messages import Delivery, Incoming, Outcome
from hoptrace.pipeline.middleware import Hooks, Middleware
from hoptrace.pipeline.outages import BrokerAway, HandlerLostConnection, OutageLog, is_outage
from hoptrace.pipeline.receiving import receive
from hoptrace.pipeline.stage_context import Publisher, StageContext
from hoptrace.pipeline.stages import Payload, Pipeline, Stage, check_time_limits
from hoptrace.pipeline.time_limits import TimeLimits, limited

logger = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 30.0
"""Longest wait for the brokers to accept a message's forwards before the attempt counts as failed."""


class UndecodableMessage(ValueError):
    """A message body that is not the JSON object a handler expects."""


UNDECODABLE_KEPT = 10_000
"""How many characters of a body that cannot be read its dead letter keeps."""


def undecodable_payload(text: str) -> Payload:
    """What stands for an unreadable body of TEXT in its delivery, and so in its dead letter: ``{"undecodable": <its start>}``."""
    return {"undecodable": text[:UNDECODABLE_KEPT]}


def _waited_out(error: Exception) -> Exception:
    """ERROR as the attempt's failure: a ``HandlerLostConnection`` (caused by it) when it is the handler meeting an outage."""
    if isinstance(error, BrokerAway) or not is_outage(error):
        return error
    lost = HandlerLostConnection(f"the handler could not reach a broker or server: {type(error).__name__}: {error}")
    lost.__cause__ = error
    return lost


class StageProcessor:
    """Runs one stage's handler on deliveries, within its middleware, until each is processed or dead-lettered."""

    def __init__(
        self,
        pipeline: Pipeline,
        stage: Stage,
        publisher: Publisher,
        instruments: Instruments | None = None,
        tracer_provider: TracerProvider | None = None,
        middleware: Sequence[Middleware] | None = None,
        time_limits: TimeLimits = TimeLimits(),
    ) -> None:
        """Process messages of STAGE, forwarding and dead-lettering through PUBLISHER.

        MIDDLEWARE defaults to tracing (on TRACER_PROVIDER), metrics (on INSTRUMENTS, default: the global
        meter provider's) and retries. TIME_LIMITS bound the handler's attempts when the stage sets no limits of its own.
        """
        self.pipeline = pipeline
        self.stage = stage
        self._publisher = publisher
        if middleware is None:
            middleware = default_middleware(pipeline, instruments or Instruments.of(), tracer_provider)
        self._hooks = Hooks(middleware).bound(stage)  # the stage's constant work, done once
        self._stages = {each.name: each for each in pipeline}
        self._limits = stage.time_limits.or_else(time_limits)
        check_time_limits(stage, self._limits)
        self._outage = OutageLog(
            logger,
            "stage %s: a broker is away (%s); waiting for it, taking no new messages, dead-lettering nothing",
            "stage %s: the broker answers again after %.1f s",
        )
        """Attempts failing because a broker is away, said once per outage, not once per attempt."""

    def process(self, delivery: Delivery) -> Outcome:
        """Run the handler until it succeeds or no attempt is left, then dead-letter; the message's outcome.

        Raises only when dead-lettering failed: the worker must keep the message and take it again.
        """
        message = receive(self.stage, delivery, self.pipeline.baggage_allowlist)
        self._hooks.before_message(message)
        try:
            while message.outcome is None:
                self._attempt(message)
                if message.outcome is None and message.retry_after_s is not None:
                    time.sleep(message.retry_after_s)
            return message.outcome
        finally:
            self._hooks.after_message(message)

    def _attempt(self, message: Incoming) -> None:
        """One run of the handler; sets the outcome unless the retry middleware asked for another attempt."""
        message.attempt += 1
        message.error, message.retry_after_s, message.attempt_context = None, None, None
        self._hooks.before_attempt(message)
        token = otel_context.attach(message.attempt_context or message.context)  # the span, and the message's baggage
        try:
            self._run_handler(message)
        except Exception as error:  # the handler's failure is the message's, never the worker's
            message.error = _waited_out(error)
            self._discard_unconfirmed()
        finally:
            otel_context.detach(token)
        self._hooks.after_attempt(message)
        error = message.error
        if error is None:
            self._outage.back(self.stage.name)
            message.outcome = Outcome.PROCESSED
            return
        if isinstance(error, BrokerAway) and message.retry_after_s is not None:
            self._outage.away(self.stage.name, error)
            return
        logger.warning("stage %s attempt %d failed: %s: %s", self.stage.name, message.attempt, type(error).__name__, error)
        if message.retry_after_s is None:
            self._dead_letter(message, error)

    def _run_handler(self, message: Incoming) -> None:
        delivery = message.delivery
        if delivery.decode_error is not None:
            raise UndecodableMessage(delivery.decode_error)
        with limited(self._limits, self.stage.name):
            self.stage.handler(delivery.payload, StageContext(self.stage, self._publisher, self._stages, message.attempt))
        # Only forwards the brokers accepted make the message done; a refused one fails the attempt.
        self._publisher.confirm(CONFIRM_TIMEOUT_S)

    def _dead_letter(self, message: Incoming, error: Exception) -> None:
        """Park the message, in its last attempt's context; raise when the broker does not take it."""
        token = otel_context.attach(message.attempt_context or message.context)
        try:
            self._publisher.dead_letter(self.stage, message.delivery.payload, error)
            self._publisher.confirm(CONFIRM_TIMEOUT_S)
        finally:
            otel_context.detach(token)
        message.outcome = Outcome.DEAD_LETTERED

    def _discard_unconfirmed(self) -> None:
        """Forget forwards of a failed attempt (the next attempt sends them again: at least once)."""
        try:
            self._publisher.confirm(CONFIRM_TIMEOUT_S)
        except Exception as error:  # already failing; the attempt's own error is what counts
            logger.debug("stage %s: forwards of a failed attempt were refused too: %s", self.stage.name, error)
