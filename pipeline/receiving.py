"""Taking a message in: its trace context, job, publish time and pathway from its (untrusted) headers.

The first step of every consumer, hoptrace's own stages and drop-in instrumentation alike: what
comes back is the ``Incoming`` record the middleware hooks then work on.
"""

from __future__ import annotations

import time

from hoptrace.pipeline import jobs, propagation
from hoptrace.pipeline.messages import Delivery, Incoming
from hoptrace.pipeline.semconv import BAGGAGE_JOB_ID, BAGGAGE_JOB_STARTED_AT
from hoptrace.pipeline.stages import Stage


def receive(stage: Stage, delivery: Delivery, baggage_allowlist: tuple[str, ...] = ()) -> Incoming:
    """DELIVERY of STAGE as an ``Incoming``: the parent context and baggage (BAGGAGE_ALLOWLIST kept), the job, the publish time, the pathway.

    A message published outside hoptrace has no job yet: its job starts here.
    """
    received = time.time()
    extracted = propagation.extract(delivery.headers, baggage_allowlist)
    members = extracted.baggage
    context, job = extracted.context, members.get(BAGGAGE_JOB_ID)
    if job is None:
        context, job, _ = jobs.job_of(context)
        started = jobs.job_started_at(context)
    else:
        text = members.get(BAGGAGE_JOB_STARTED_AT)
        started = None if text is None else jobs.parse_epoch_seconds(str(text))
    return Incoming(
        stage, delivery, context, str(job), extracted.parent, started, received, extracted.sent_at, extracted.fallbacks, extracted.pathway
    )
