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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from hoptrace.pipeline.messages import Incoming, Outgoing

logger = logging.getLogger(__name__)

MessageT = TypeVar("MessageT", Incoming, Outgoing)


class Middleware:
    """Hooks around messages; override the ones you need (every hook here does nothing)."""

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


class Hooks:
    """The hooks of a middleware sequence, ready to run: before-hooks in order, after-hooks reversed, failures contained."""

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        """Bind the hooks each middleware overrides (the base class's no-ops are left out, so they cost nothing)."""
        self.middleware = tuple(middleware)

        def bound(name: str, reverse: bool) -> tuple[Callable[..., None], ...]:
            chosen = [getattr(each, name) for each in self.middleware if getattr(type(each), name) is not getattr(Middleware, name)]
            return tuple(reversed(chosen)) if reverse else tuple(chosen)

        self._before_message = bound("before_message", False)
        self._before_attempt = bound("before_attempt", False)
        self._after_attempt = bound("after_attempt", True)
        self._after_message = bound("after_message", True)
        self._before_publish = bound("before_publish", False)
        self._after_publish = bound("after_publish", True)

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


def _run(hooks: tuple[Callable[..., None], ...], message: Incoming | Outgoing) -> None:
    for hook in hooks:
        try:
            hook(message)
        except Exception:  # noqa: BLE001 - a hook's failure is logged, never the message's
            logger.exception("middleware hook %s failed for a message of stage %s; the message goes on", _name(hook), message.stage.name)


def _name(hook: Callable[..., None]) -> str:
    owner = getattr(hook, "__self__", None)
    return f"{type(owner).__name__}.{hook.__name__}" if owner is not None else getattr(hook, "__qualname__", repr(hook))
