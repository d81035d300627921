"""Attribute and header names: the OpenTelemetry messaging conventions plus hoptrace's own."""

from __future__ import annotations

# OpenTelemetry messaging semantic conventions.
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

# hoptrace's own.
PIPELINE = "hoptrace.pipeline"
STAGE = "hoptrace.stage"
JOB_ID = "hoptrace.job.id"
ATTEMPT = "hoptrace.attempt"
OUTCOME = "hoptrace.outcome"

# Baggage members that carry the job's identity and start time (epoch seconds) across hops.
BAGGAGE_JOB_ID = "hoptrace.job.id"
BAGGAGE_JOB_STARTED_AT = "hoptrace.job.started_at"

# Message header with the publish time (epoch seconds, decimal text), for time-in-queue.
HEADER_SENT_AT = "hoptrace-sent-at"
