"""A drop-in send of any Kafka client: a PRODUCER ``send {topic}`` span, and the trace context in the record's headers.

Driven like hoptrace's own publisher (``producers.publisher``): ``before_publish`` opens the
span, the propagation headers (``traceparent``, ``tracestate``, ``baggage``,
``hoptrace-sent-at``) are written into a copy of the caller's header list (the caller's list
is never changed; a key already there, in any letter case, is replaced, never duplicated),
and ``after_publish`` ends the span when the broker answered (partition and offset) or
refused, or at once when ``send`` itself raised. The span is current only while ``send`` runs.
Per record: one ``Outgoing`` and one callback object (``Answer``) on kafka-python's future; the topic's stage and
hooks are looked up once per process (``dropin.lane``).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context

from hoptrace.instrumentation import dropin
from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.instrumentation.kafka_records import PIPELINE_DEFAULT
from hoptrace.pipeline import propagation
from hoptrace.pipeline.attributes import kafka_position
from hoptrace.pipeline.carriers import APPEND_SETTER, KAFKA_SETTER
from hoptrace.pipeline.messages import Outgoing
from hoptrace.pipeline.middleware import BoundHooks
from hoptrace.pipeline.stages import KafkaTransport


def start_publish(topic: str, headers: Any) -> tuple[BoundHooks, Outgoing, Any]:
    """Start the publish of a record to TOPIC: its hooks, its ``Outgoing`` (span open), and the headers to send instead of HEADERS.

    HEADERS is the caller's list of (key, value) pairs, or None; anything else is passed on unchanged, for the client to report.
    Shared by every client's sender (kafka-python's and aiokafka's ``send``, confluent-kafka's ``produce``).
    """
    stage, hooks = dropin.lane(dropin.pipeline_name(PIPELINE_DEFAULT), ("send", topic), lambda: dropin.stage(topic, KafkaTransport(topic, "")))
    message = Outgoing.published_in(otel_context.get_current(), stage, stage.transport, {}, {})
    hooks.before_publish(message)
    if headers is None or isinstance(headers, list):  # anything else is the caller's error, for the client to report
        headers = list(headers or ())
        propagation.inject(headers, KAFKA_SETTER if headers else APPEND_SETTER, message.sending_context or message.context)
    return hooks, message, headers


class Answer:
    """The broker's answer to one record, one small object per record (no ``partial``s): end the span with the partition and offset, or the refusal.

    kafka-python calls it as its future's callback and errback; aiokafka's future's done-callback passes it on.
    It lives, with what it holds, until the broker answers; the fewer objects a record in flight keeps, the
    less the garbage collector walks while thousands wait in the client's accumulator.
    """

    __slots__ = ("hooks", "message")

    def __init__(self, hooks: BoundHooks, message: Outgoing) -> None:
        """For MESSAGE, published through HOOKS."""
        self.hooks = hooks
        self.message = message

    def __call__(self, answer: object) -> None:
        """The broker's ANSWER: the record's metadata (``partition``, ``offset``: either client's), or an error."""
        message = self.message
        if isinstance(answer, BaseException):
            message.error = answer
        elif isinstance(answer, tuple) and hasattr(answer, "partition") and hasattr(answer, "offset"):  # a RecordMetadata named tuple
            message.answer = kafka_position(answer.partition, answer.offset)
        else:
            message.error = RuntimeError(str(answer))
        self.hooks.after_publish(message)


class Handover:
    """``with Handover(hooks, message): <send>``: the client's send call runs in MESSAGE's send span, then has the message.

    A serializer's or partitioner's spans nest under the send span; when the send raises, the span ends
    failed; when it returns, ``message.handed_over()``. For every client's sender, sync (kafka-python,
    confluent-kafka) or awaited inside the block (aiokafka).
    """

    __slots__ = ("hooks", "message", "token")

    def __init__(self, hooks: BoundHooks, message: Outgoing) -> None:
        """For MESSAGE, published through HOOKS."""
        self.hooks = hooks
        self.message = message

    def __enter__(self) -> None:
        """Make the send span's context current."""
        self.token = otel_context.attach(self.message.sending_context or self.message.context)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        """Put the caller's context back; end the span failed when the send raised ERROR (re-raised), else hand the message over."""
        otel_context.detach(self.token)
        with contained("send"):
            if error is not None:
                self.message.error = error
                self.hooks.after_publish(self.message)
            else:
                self.message.handed_over()


def replace_headers(args: tuple[Any, ...], kwargs: dict[str, Any], headers: Any, at: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """ARGS and KWARGS of a send call with HEADERS in place of the caller's (positional at AT, else the ``headers`` keyword), in the same form."""
    if len(args) > at:
        return (*args[:at], headers, *args[at + 1 :]), kwargs
    return args, {**kwargs, "headers": headers}
