"""The wrapper of ``KafkaProducer.send``: a PRODUCER ``send {topic}`` span, and the trace context in the record's headers.

Driven like hoptrace's own publisher (``producers.publisher``): ``before_publish`` opens the
span, the propagation headers (``traceparent``, ``tracestate``, ``baggage``,
``hoptrace-sent-at``) are written into a copy of the caller's header list (the caller's list
is never changed; a key already there, in any letter case, is replaced, never duplicated),
and ``after_publish`` ends the span when the broker answered (partition and offset) or
refused, or at once when ``send`` itself raised. The span is current only while ``send`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.producer.future import RecordMetadata
from opentelemetry import context as otel_context

from hoptrace.instrumentation import dropin
from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.instrumentation.kafka_records import PIPELINE_DEFAULT
from hoptrace.pipeline import propagation, semconv
from hoptrace.pipeline.carriers import KAFKA_SETTER
from hoptrace.pipeline.messages import Outgoing, is_owned
from hoptrace.pipeline.stages import KafkaTransport

_HEADERS_AT = 3
"""Position of ``headers`` in ``send(topic, value, key, headers, partition, timestamp_ms)``."""


class _Publish:
    """One record being sent: its ``Outgoing`` within the middleware, and the headers to send instead of the caller's."""

    def __init__(self, topic: str, headers: Any) -> None:
        stage = dropin.stage(topic, KafkaTransport(topic, ""))
        self._hooks = dropin.hooks(dropin.pipeline_name(PIPELINE_DEFAULT))
        self.message = Outgoing.published_in(otel_context.get_current(), stage, stage.transport, {}, {})
        self._hooks.before_publish(self.message)
        self.sending = self.message.sending_context or self.message.context
        self.headers = headers  # anything but a list (or None) is the caller's error, for kafka-python to report
        if headers is None or isinstance(headers, list):
            self.headers = list(headers or ())
            propagation.inject(self.headers, KAFKA_SETTER, self.sending)
        self._answered = False

    def done(self, answer: Mapping[str, Any], error: BaseException | None) -> None:
        """End the span with ANSWER or ERROR, once."""
        if self._answered:
            return
        self._answered = True
        self.message.answer, self.message.error = answer, error
        self._hooks.after_publish(self.message)

    def accepted(self, metadata: RecordMetadata) -> None:
        """The future's callback: the broker took the record."""
        self.done({semconv.MESSAGING_PARTITION: str(metadata.partition), semconv.MESSAGING_KAFKA_OFFSET: metadata.offset}, None)

    def refused(self, error: BaseException) -> None:
        """The future's errback: the record was not accepted."""
        self.done({}, error)


def _replace_headers(args: tuple[Any, ...], kwargs: dict[str, Any], headers: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """ARGS and KWARGS of a ``send`` call with HEADERS in place of the caller's, in the form the caller used."""
    if len(args) > _HEADERS_AT:
        return (*args[:_HEADERS_AT], headers, *args[_HEADERS_AT + 1 :]), kwargs
    return args, {**kwargs, "headers": headers}


def wrap_send(wrapped: Any, instance: KafkaProducer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``KafkaProducer.send``: trace the record and propagate its context, unless hoptrace's own publisher sends it."""
    if is_owned():
        return wrapped(*args, **kwargs)
    publish: _Publish | None = None
    with contained("KafkaProducer.send"):
        topic = args[0] if args else kwargs.get("topic")
        if isinstance(topic, str):
            headers = args[_HEADERS_AT] if len(args) > _HEADERS_AT else kwargs.get("headers")
            started = _Publish(topic, headers)
            args, kwargs = _replace_headers(args, kwargs, started.headers)
            publish = started
    if publish is None:
        return wrapped(*args, **kwargs)
    token = otel_context.attach(publish.sending)  # a serializer's or partitioner's spans nest under the send span
    try:
        future = wrapped(*args, **kwargs)
    except BaseException as error:
        publish.done({}, error)
        raise
    finally:
        otel_context.detach(token)
    with contained("KafkaProducer.send"):
        future.add_callback(publish.accepted)
        future.add_errback(publish.refused)
    return future
