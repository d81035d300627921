"""When a failed attempt runs again: the stage's ``RetryPolicy``, as middleware.

A failed attempt is retried in place after a pause (``backoff_s``, doubled each time) until the
policy's ``max_attempts``; an undecodable body is never retried. A message no attempt is left
for is dead-lettered by the processor (so is every failure, should this middleware itself fail).
"""

from __future__ import annotations

from hoptrace.pipeline.messages import Incoming
from hoptrace.pipeline.middleware import Middleware


class RetryMiddleware(Middleware):
    """Sets ``retry_after_s`` on a failed attempt while the stage's retry policy allows another."""

    def after_attempt(self, message: Incoming) -> None:
        """Decide whether the attempt that just failed runs again, and after what pause."""
        policy = message.stage.retry
        if message.error is None or message.delivery.decode_error is not None or message.attempt >= policy.max_attempts:
            return
        message.retry_after_s = policy.backoff_s * 2 ** (message.attempt - 1)
