"""Taking a message in: its trace context, job and publish time from its (untrusted) headers.

The first step of every consumer, hoptrace's own stages and drop-in instrumentation alike: what
comes back is the ``Incoming`` record the middleware hooks then work on.
"""

from __future__ import annotations

from hoptrace.pipeline import jobs, propagation
from hoptrace.pipeline.messages import Delivery, Incoming
from hoptrace.pipeline.stages import Stage


def receive(stage: Stage, delivery: Delivery, baggage_allowlist: tuple[str, ...] = ()) -> Incoming:
    """DELIVERY of STAGE as an ``Incoming``: the parent context and baggage (BAGGAGE_ALLOWLIST kept), the job, the publish time.

    A message published outside hoptrace has no job yet: its job starts here.
    """
    message = Incoming(stage, delivery)
    extracted = propagation.extract(delivery.headers, baggage_allowlist)
    message.context = extracted.context if jobs.job_id(extracted.context) is not None else jobs.ensure_job(extracted.context)
    message.sent_at, message.fallbacks = extracted.sent_at, extracted.fallbacks
    return message
