"""When a failed attempt runs again: the stage's ``RetryPolicy``, as middleware.

A failed attempt is retried in place after a pause (``backoff_s``, doubled each time) until the
policy's ``max_attempts``; an undecodable body is never retried. A message no attempt is left
for is dead-lettered by the processor (so is every failure, should this middleware itself fail).
An attempt that failed because a broker was away (``outages.BrokerAway``) does not count: it runs
again after a growing pause, until the policy's ``outage_deadline_s`` has passed since the first.
"""

from __future__ import annotations

import time

from hoptrace.pipeline.messages import Incoming
from hoptrace.pipeline.middleware import Middleware
from hoptrace.pipeline.outages import BrokerAway, wait_s


class RetryMiddleware(Middleware):
    """Sets ``retry_after_s`` on a failed attempt while the stage's retry policy allows another."""

    def after_attempt(self, message: Incoming) -> None:
        """Decide whether the attempt that just failed runs again, and after what pause."""
        policy = message.stage.retry
        error = message.error
        if error is None or message.delivery.decode_error is not None:
            return
        if isinstance(error, BrokerAway):
            now = time.monotonic()
            if message.away_since is None:
                message.away_since = now
            if now - message.away_since < policy.outage_deadline_s:
                message.retry_after_s = wait_s(message.broker_waits)
                message.broker_waits += 1
                return
        counted = message.attempt - message.broker_waits
        if counted < policy.max_attempts:
            message.retry_after_s = policy.backoff_s * 2 ** (counted - 1)
