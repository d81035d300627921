"""When the flight recorder keeps a job whole: the triggers, as middleware on every stage.

- ``redelivered``: the transport hands out a message it had handed out before (a worker died with it);
- ``slow``: the message reaches the stage, or its attempt ends, later after its job began than the
  stage's objective (``Stage.slow_after_s``, else ``Pipeline.slow_after_s``, else ``HOPTRACE_SLOW_AFTER_S``);
- ``retried``, ``dead_lettered``, ``failed``: an attempt failed, and another follows, or the
  message is dead-lettered, or given up to the framework's own failure handling.

The first two are checked before the attempt's span starts, so that span is sampled from the
start and says why (``Incoming.kept``); the others once the attempt ended (its span, held by the recorder, is exported with the
rest). A trace the sampler kept anyway needs nothing. User code adds its own reasons with
``hoptrace.keep``.
"""

from __future__ import annotations

import time

from hoptrace.pipeline import recorder
from hoptrace.pipeline.messages import Incoming
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.stages import Pipeline, Stage, Transport

REDELIVERED = "redelivered"
SLOW = "slow"
RETRIED = "retried"


class KeepMiddleware(Middleware):
    """Keeps whole the jobs that go wrong in PIPELINE's stages, on this process's flight recorder (none: nothing to do)."""

    def __init__(self, pipeline: Pipeline, slow_after_s: float | None = None) -> None:
        """Trigger on PIPELINE's messages; SLOW_AFTER_S is the objective of stages and a pipeline that set none."""
        self._pipeline = pipeline
        self._slow_after_s = slow_after_s

    def bind(self, stage: Stage, transport: Transport) -> StageKeeping:
        """The triggers of STAGE, with its objective resolved."""
        objective = stage.slow_after_s or self._pipeline.slow_after_s or self._slow_after_s
        return StageKeeping(objective)


class StageKeeping(Middleware):
    """The triggers of one stage."""

    def __init__(self, slow_after_s: float | None) -> None:
        """Keep jobs later than SLOW_AFTER_S at this stage (None: no objective), and those whose attempts fail or come again."""
        self._slow_after_s = slow_after_s

    def before_attempt(self, message: Incoming) -> None:
        """Keep a redelivered or late message's job before its span starts."""
        parent = message.parent
        found = recorder.current()
        if found is None or parent is None or parent.trace_flags & 1:
            return
        if message.delivery.redelivered:  # the process that had it before may have died, and its spans of the job with it
            if found.keep(parent.trace_id, REDELIVERED, partial=True):
                message.kept = (REDELIVERED, True)
        elif self._late(message, message.received_at) and found.keep(parent.trace_id, SLOW):
            message.kept = (SLOW, False)

    def after_attempt(self, message: Incoming) -> None:
        """Keep the job of a failed attempt (retried, or given up as the message's fate says), or of one that ended late."""
        span = message.span
        found = recorder.current()
        if found is None or span is None or (message.error is None and self._slow_after_s is None):
            return
        context = span.get_span_context()
        if not context.is_valid or context.trace_flags & 1:
            return
        if message.error is not None:
            found.keep(context.trace_id, RETRIED if message.will_retry else message.gives_up_as.value)
        elif self._late(message, time.time()):
            found.keep(context.trace_id, SLOW)

    def _late(self, message: Incoming, now: float) -> bool:
        """Whether MESSAGE's job is later than the objective at NOW (epoch seconds)."""
        objective, started = self._slow_after_s, message.job_started_at
        return objective is not None and started is not None and now - started > objective
