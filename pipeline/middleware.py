"""Hooks around every message a stage processes or a publisher sends (dramatiq's middleware habit).

A ``Middleware`` overrides the hooks it needs; the base class's hooks do nothing. A
``Hooks`` chain runs every "before" hook in the order the middleware was given and every
"after" hook in reverse, so the first middleware wraps all the others. A hook that raises
is logged and skipped: telemetry never becomes the message's failure.

Processing a message (``workers.processing``)::

    before_message
        before_attempt → handler → after_attempt     (once per attempt)
    after_message

Publishing one (``producers.publisher``)::

    before_publish → sender → after_publish          (after_publish once the broker answered)

What is constant for the messages of one stage (their attribute sets, metric series, span
names) is worked out once: ``Middleware.bind`` gives the middleware for one stage and
destination, and ``Hooks.bound`` the chain of them, which processors and publishers keep and
call for every message. A middleware that needs no such work binds to itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from hoptrace.pipeline.messages import Incoming, Outgoing
from hoptrace.pipeline.stages import Stage, Transport

logger = logging.getLogger(__name__)

MessageT = TypeVar("MessageT", Incoming, Outgoing)


class Middleware:
    """Hooks around messages; override the ones you need (every hook here does nothing)."""

    def bind(self, stage: Stage, transport: Transport) -> Middleware:
        """This middleware for the messages of STAGE going through TRANSPORT (its own, or a publish's destination).

        Override it to work out once what every such message needs; the default is this middleware itself.
        """
        return self

    def before_message(self, message: Incoming) -> None:
        """A worker took MESSAGE from its transport; nothing has run yet."""

    def before_attempt(self, message: Incoming) -> None:
        """The handler is about to run (``message.attempt`` counts from 1)."""

    def after_attempt(self, message: Incoming) -> None:
        """The handler returned (``message.error`` is None) or raised (``message.error``); ``retry_after_s`` says whether it runs again."""

    def after_message(self, message: Incoming) -> None:
        """The worker is done with MESSAGE: ``outcome`` says processed or dead-lettered (None: it could not even be parked)."""

    def before_publish(self, message: Outgoing) -> None:
        """MESSAGE is about to go to its sender; headers may still be added."""

    def after_publish(self, message: Outgoing) -> None:
        """The broker accepted MESSAGE (``error`` is None) or refused it; may run on a client's I/O thread."""


Hook = Callable[[MessageT], None]


_HOOKS = ("before_message", "before_attempt", "after_attempt", "after_message", "before_publish", "after_publish")
_REVERSED = frozenset({"after_attempt", "after_message", "after_publish"})
MAX_BOUND = 4096
"""Stage and destination pairs whose bound hooks a ``Hooks`` keeps (emptied when full: drop-in stages are made on the fly)."""


class BoundHooks:
    """The hooks of a middleware sequence bound to one stage and destination: before-hooks in order, after-hooks reversed, failures contained."""

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        """Keep, per hook, the middleware that override it (the base class's no-ops are left out, so they cost nothing)."""
        self.middleware = tuple(middleware)
        for name in _HOOKS:
            chosen = [getattr(each, name) for each in self.middleware if getattr(type(each), name) is not getattr(Middleware, name)]
            setattr(self, "_" + name, tuple(reversed(chosen)) if name in _REVERSED else tuple(chosen))

    def before_message(self, message: Incoming) -> None:
        """Run every ``before_message`` hook, in order."""
        _run(self._before_message, message)

    def before_attempt(self, message: Incoming) -> None:
        """Run every ``before_attempt`` hook, in order."""
        _run(self._before_attempt, message)

    def after_attempt(self, message: Incoming) -> None:
        """Run every ``after_attempt`` hook, in reverse order."""
        _run(self._after_attempt, message)

    def after_message(self, message: Incoming) -> None:
        """Run every ``after_message`` hook, in reverse order."""
        _run(self._after_message, message)

    def before_publish(self, message: Outgoing) -> None:
        """Run every ``before_publish`` hook, in order."""
        _run(self._before_publish, message)

    def after_publish(self, message: Outgoing) -> None:
        """Run every ``after_publish`` hook, in reverse order."""
        _run(self._after_publish, message)


class Hooks:
    """The hooks of a middleware sequence, bound per stage and destination on first use."""

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        """Run MIDDLEWARE around messages: before-hooks in order, after-hooks reversed, a failing hook logged and skipped."""
        self.middleware = tuple(middleware)
        self._bound: dict[tuple[int, int], tuple[Stage, Transport, BoundHooks]] = {}
        self._lock = threading.Lock()

    def bound(self, stage: Stage, transport: Transport | None = None) -> BoundHooks:
        """The hooks for messages of STAGE through TRANSPORT (default: the stage's own), bound once and kept."""
        transport = transport or stage.transport
        found = self._bound.get((id(stage), id(transport)))  # kept with the objects themselves, so their ids are not reused
        if found is None:
            with self._lock:
                if len(self._bound) >= MAX_BOUND:
                    self._bound.clear()
                chain = BoundHooks([_bind(each, stage, transport) for each in self.middleware])
                found = self._bound[id(stage), id(transport)] = (stage, transport, chain)
        return found[2]

    def before_message(self, message: Incoming) -> None:
        """Run every ``before_message`` hook of the message's stage, in order."""
        self.bound(message.stage).before_message(message)

    def before_attempt(self, message: Incoming) -> None:
        """Run every ``before_attempt`` hook of the message's stage, in order."""
        self.bound(message.stage).before_attempt(message)

    def after_attempt(self, message: Incoming) -> None:
        """Run every ``after_attempt`` hook of the message's stage, in reverse order."""
        self.bound(message.stage).after_attempt(message)

    def after_message(self, message: Incoming) -> None:
        """Run every ``after_message`` hook of the message's stage, in reverse order."""
        self.bound(message.stage).after_message(message)

    def before_publish(self, message: Outgoing) -> None:
        """Run every ``before_publish`` hook of the message's destination, in order."""
        self.bound(message.stage, message.transport).before_publish(message)

    def after_publish(self, message: Outgoing) -> None:
        """Run every ``after_publish`` hook of the message's destination, in reverse order."""
        self.bound(message.stage, message.transport).after_publish(message)


def _bind(middleware: Middleware, stage: Stage, transport: Transport) -> Middleware:
    """MIDDLEWARE bound to STAGE and TRANSPORT; itself, logged, when its ``bind`` fails (telemetry never stops a stage)."""
    try:
        return middleware.bind(stage, transport)
    except Exception:  # noqa: BLE001 - a middleware's failure is logged, never the stage's
        logger.exception("middleware %s could not bind to stage %s; its unbound hooks run instead", type(middleware).__name__, stage.name)
        return middleware


def _run(hooks: tuple[Callable[..., None], ...], message: Incoming | Outgoing) -> None:
    for hook in hooks:
        try:
            hook(message)
        except Exception:  # noqa: BLE001 - a hook's failure is logged, never the message's
            logger.exception("middleware hook %s failed for a message of stage %s; the message goes on", _name(hook), message.stage.name)


def _name(hook: Callable[..., None]) -> str:
    owner = getattr(hook, "__self__", None)
    return f"{type(owner).__name__}.{hook.__name__}" if owner is not None else getattr(hook, "__qualname__", repr(hook))
