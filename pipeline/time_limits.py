"""Handler time limits: a soft limit tells the handler, a hard limit ends its attempt.

A stage may set ``soft_time_limit_s`` and ``time_limit_s`` (``Pipeline.stage``), or take them from
``HOPTRACE_SOFT_TIME_LIMIT_S`` and ``HOPTRACE_TIME_LIMIT_S`` when it sets neither. While its
handler runs:

- at the soft limit, ``SoftTimeLimitExceeded`` is raised inside the handler, wherever it is
  (a ``time.sleep``, a socket read, a Python loop): it may catch it to clean up or to give a
  partial answer; uncaught, the attempt fails with it;
- at the hard limit, ``TimeLimitExceeded`` ends the attempt, and is raised again every second for
  as long as the handler keeps swallowing it (a bare ``except:``). The attempt fails with it and goes
  through the stage's retry policy like any failure: a message that hangs at every attempt is
  dead-lettered, and a Kafka partition moves on.

The limits are SIGALRM timers, as Celery's prefork pool raises its own soft limit with a signal:
the handler must run in its process's main thread (a ``hoptrace worker`` Kafka stage, a Celery
prefork or solo pool child). Elsewhere (a threads pool) they are not enforced, which the log says
once. A handler stuck in C code that neither returns to Python nor lets a system call be
interrupted is beyond them: its worker's liveness check is the last resort.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

HARD_REPEAT_S = 1.0
"""Pause before the hard limit is raised again in a handler that swallowed it."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a handler that ran past its stage's soft time limit: finish up, or let it fail the attempt."""


class TimeLimitExceeded(Exception):
    """A handler ran past its stage's hard time limit; its attempt failed with this (the retry policy decides what follows)."""


class _HardLimit(BaseException):
    """Raised inside the handler at the hard limit: a BaseException, so ``except Exception`` in the handler lets it through."""


@dataclass(frozen=True)
class TimeLimits:
    """A stage's handler limits in seconds; None: no such limit."""

    soft_s: float | None = None
    hard_s: float | None = None

    def __post_init__(self) -> None:
        """Refuse a limit that is not positive, or a soft limit not below the hard one."""
        for name, value in (("soft time limit", self.soft_s), ("time limit", self.hard_s)):
            if value is not None and not value > 0:
                raise ValueError(f"the {name} must be a positive number of seconds, not {value!r}")
        if self.soft_s is not None and self.hard_s is not None and self.soft_s >= self.hard_s:
            raise ValueError(f"the soft time limit ({self.soft_s} s) must be below the hard one ({self.hard_s} s), or left out")

    @property
    def any(self) -> bool:
        """Whether either limit is set."""
        return self.soft_s is not None or self.hard_s is not None

    def or_else(self, default: TimeLimits) -> TimeLimits:
        """These limits when either is set, else DEFAULT (a stage's limits go together: never half from a setting)."""
        return self if self.any else default


class _Alarm:
    """The SIGALRM handler of one limited run: soft first (when set), then hard, repeated until the run ends."""

    def __init__(self, limits: TimeLimits, stage: str) -> None:
        self.limits = limits
        self.stage = stage
        self.armed = True
        self.soft_pending = limits.soft_s is not None

    def first_delay(self) -> float:
        """Seconds until the first alarm."""
        first = self.limits.soft_s if self.limits.soft_s is not None else self.limits.hard_s
        assert first is not None
        return first

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed:  # the run ended just as the timer fired
            return
        if self.soft_pending:
            self.soft_pending = False
            soft, hard = self.limits.soft_s, self.limits.hard_s
            if hard is not None:
                assert soft is not None
                signal.setitimer(signal.ITIMER_REAL, hard - soft, HARD_REPEAT_S)
            raise SoftTimeLimitExceeded(f"stage {self.stage}: the handler ran past its soft time limit of {soft} s")
        raise _HardLimit


_warned_threads: set[str] = set()
_UNLIMITED = nullcontext()


class _Limited:
    """One run of a handler under its limits: the alarm armed on entry, disarmed (and the previous SIGALRM handler back) on exit."""

    def __init__(self, limits: TimeLimits, stage: str) -> None:
        self._alarm = _Alarm(limits, stage)
        self._previous: Any = None

    def __enter__(self) -> None:
        alarm = self._alarm
        self._previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, alarm.first_delay(), HARD_REPEAT_S if alarm.limits.soft_s is None else 0.0)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        alarm = self._alarm
        alarm.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        if isinstance(error, _HardLimit):
            message = f"stage {alarm.stage}: the handler ran past its time limit of {alarm.limits.hard_s} s and was stopped"
            raise TimeLimitExceeded(message) from None


def limited(limits: TimeLimits, stage: str) -> AbstractContextManager[None]:
    """What runs a handler under LIMITS (see the module), STAGE naming it in errors; without limits, or off the main thread, a plain block."""
    if not limits.any:
        return _UNLIMITED
    if threading.current_thread() is not threading.main_thread():
        if stage not in _warned_threads:
            _warned_threads.add(stage)
            logger.warning("stage %s: its time limits are not enforced: its handler runs outside the main thread (%s)", stage, limits)
        return _UNLIMITED
    return _Limited(limits, stage)
