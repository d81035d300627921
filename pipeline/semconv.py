"""Every name hoptrace puts on the wire: span attributes, metric names, baggage keys and headers.

The OpenTelemetry messaging conventions where one exists, hoptrace's own otherwise. Every
module that writes or reads one of these names takes it from here, the viewer included
(this is the only ground-floor module it imports).
"""

from __future__ import annotations

# OpenTelemetry messaging semantic conventions: span and metric attributes.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_PARTITION = "messaging.destination.partition.id"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_CONSUMER_GROUP = "messaging.consumer.group.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_KAFKA_OFFSET = "messaging.kafka.offset"
MESSAGING_KAFKA_KEY = "messaging.kafka.message.key"
ERROR_TYPE = "error.type"

# hoptrace's own attributes.
PIPELINE = "hoptrace.pipeline"
STAGE = "hoptrace.stage"
JOB_ID = "hoptrace.job.id"
ATTEMPT = "hoptrace.attempt"
OUTCOME = "hoptrace.outcome"
"""On a process span: ``processed``, ``retried`` or ``dead_lettered``; on a publish's metrics: ``ok`` or ``error``."""
ETA = "hoptrace.eta"
"""On a process span, the time (ns since the epoch) a Celery ``countdown``/``eta`` held the message until, when it had one."""
REDELIVERED = "hoptrace.redelivered"
"""On a process span, ``true`` when the transport had handed this message to a consumer before (set only then)."""
KEEP_REASON = "hoptrace.keep.reason"
"""Why the flight recorder kept a job whole: ``failed``, ``retried``, ``dead_lettered``, ``redelivered``, ``slow`` or the user's reason."""
KEEP_PARTIAL = "hoptrace.keep.partial"
"""True on the spans of a kept job some of whose spans had already left a flight recorder's buffer."""
CAUSE = "hoptrace.cause"
"""On ``hoptrace.stage.critical.time``: why that stretch of the critical path took its time (``view.critical_path.Cause``)."""
PATHWAY = "hoptrace.pathway"
"""On ``hoptrace.pathway.latency``: the stages the job went through up to this one, e.g. ``validate>charge`` (``pipeline.pathways``)."""
OVERFLOW = "_overflow"
"""The value of a bounded attribute beyond its bound: a drop-in stage beyond ``MAX_STAGES``, a pathway beyond ``MAX_PATHWAYS``."""
QUEUE_STATE = "hoptrace.queue.state"
"""On ``hoptrace.queue.depth``: ``ready`` (waiting in the lists) or ``unacked`` (fetched, not acknowledged)."""

# Metrics (OpenTelemetry messaging conventions where one exists).
SENT_MESSAGES = "messaging.client.sent.messages"
CONSUMED_MESSAGES = "messaging.client.consumed.messages"
OPERATION_DURATION = "messaging.client.operation.duration"
PROCESS_DURATION = "messaging.process.duration"
QUEUE_WAIT = "hoptrace.queue.wait"
JOB_LATENCY = "hoptrace.job.latency"
PATHWAY_LATENCY = "hoptrace.pathway.latency"
RETRIES = "hoptrace.stage.retries"
DEAD_LETTERED = "hoptrace.stage.dead_lettered"
REDELIVERIES = "hoptrace.stage.redeliveries"
PROPAGATION_FALLBACKS = "hoptrace.propagation.fallbacks"
IN_FLIGHT = "hoptrace.stage.in_flight"
QUEUE_DEPTH = "hoptrace.queue.depth"
QUEUE_OLDEST_AGE = "hoptrace.queue.oldest_age"
CONSUMER_LAG = "hoptrace.kafka.consumer.lag"
CONSUMER_LAG_SECONDS = "hoptrace.kafka.consumer.lag_seconds"
JOBS_STUCK = "hoptrace.jobs.stuck"
STAGE_CRITICAL_TIME = "hoptrace.stage.critical.time"
TELEMETRY_DROPPED = "hoptrace.telemetry.dropped"
TELEMETRY_SIGNAL = "hoptrace.telemetry.signal"
"""On ``hoptrace.telemetry.dropped``: ``traces``, ``metrics`` or ``logs``."""

# Baggage members that carry the job's identity and start time (epoch seconds) across hops.
BAGGAGE_JOB_ID = "hoptrace.job.id"
BAGGAGE_JOB_STARTED_AT = "hoptrace.job.started_at"

# Message headers.
HEADER_SENT_AT = "hoptrace-sent-at"
"""The publish time (epoch seconds, decimal text), for time-in-queue."""
HEADER_PATHWAY = "hoptrace-pathway"
"""The pathway of the message whose handler published this one (``validate>charge``); none outside a handler (``pipeline.pathways``)."""
HEADER_ERROR = "hoptrace-error"
"""On a dead-lettered message: the error that made the stage give up."""
HEADER_FAILED_STAGE = "hoptrace-failed-stage"
"""On a dead-lettered message: the stage that gave up."""

CELERY_TASK_PREFIX = "hoptrace."
"""The Celery task of a hoptrace stage is named ``hoptrace.<pipeline>.<stage>`` (drop-in instrumentation leaves those alone)."""

DEAD_LETTER_SUFFIX = ".dead-letter"
"""A stage's dead letters go to its topic or queue name plus this."""
