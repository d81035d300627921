"""A broker that is away: what publishers raise for it, and how long a stage waits before it tries again.

Publishers (``producers``) raise a ``BrokerAway`` when a broker could not be reached or did not
answer in time. Such an attempt failed through no fault of the message: the retry middleware
lets it run again after a pause that grows with each wait (jittered, capped), without counting
it against the stage's retry policy, until the policy's ``outage_deadline_s`` has passed since
the first wait; only then do its attempts count again. A worker processes one message at a time,
so while it waits it takes no new ones.
"""

from __future__ import annotations

import random

FIRST_WAIT_S = 0.25
LONGEST_WAIT_S = 5.0


class BrokerAway(Exception):  # noqa: N818 - a state of the broker, not an error of the message
    """Raised by a publisher when the broker could not be reached or did not answer in time (mixed into its own error type)."""


def wait_s(waits: int) -> float:
    """The pause before the attempt that follows WAITS earlier waits for a broker: doubling from 0.25 s, at most 5 s, jittered down by up to half."""
    return min(LONGEST_WAIT_S, FIRST_WAIT_S * 2**waits) * random.uniform(0.5, 1.0)  # noqa: S311 - spreads retries, no secret
