"""confluent-kafka's clients with hoptrace's per-message work: what ``HoptraceConfluentKafkaInstrumentor`` puts in their place.

confluent-kafka's clients are C types whose methods cannot be wrapped in place, so, as the stock
instrumentor does, subclasses take their names in the ``confluent_kafka`` module while instrumented;
code that imported the classes before (``from confluent_kafka import Producer`` ahead of the
instrumentation) keeps the plain ones. Instances made while instrumented go back to plain behaviour
when the instrumentation is undone.

- ``Producer.produce``: a PRODUCER ``send {topic}`` span, current while ``produce`` runs; the
  propagation headers written into a copy of the record's headers (a list, or a dict turned into
  one), replacing any already there; the span ends in the delivery report (partition and offset,
  or the error), before the caller's ``on_delivery`` (alias ``callback``; per message, else the
  configuration's), which still gets it. confluent-kafka delivers reports inside ``poll()`` and
  ``flush()``: a span stays open until then. With ``delivery.report.only.error`` the span ends when
  the record is handed over (librdkafka reports failures alone).
- ``Consumer.poll()``: a CONSUMER ``process {topic}`` span for the record it returns, current while
  the user's code handles it, ended at the next ``poll()``, ``consume()``, ``commit()``,
  ``store_offsets()`` or ``close()``; events (``error()`` set) get none.
- ``Consumer.consume()``: a list whose iteration processes each record in turn, as kafka-python's
  ``poll()`` lists (``kafka_loop.TracedRecords``).
- The lag of the consumer's assignment, from librdkafka's local state (``confluent_lags``).
- ``SerializingProducer`` and ``DeserializingConsumer`` (confluent-kafka's own subclasses of the plain
  clients; the latter has no ``consume()``): the same, placed between their serialization and the plain
  client in the method order, so a record is traced as it is handed to librdkafka, serialized (its send
  span starts after the serializers ran) and handed out before it is deserialized (the deserializers run
  inside its process span; a record that does not deserialize ends it failed).

The spans, metrics and stage names are those of kafka-python's drop-in (``kafka_records``,
``kafka_producer``): the same middleware, so a trace crosses clients unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.cimpl import Consumer as PlainConsumer
from confluent_kafka.cimpl import Producer as PlainProducer
from confluent_kafka.deserializing_consumer import DeserializingConsumer as PlainDeserializingConsumer
from confluent_kafka.serializing_producer import SerializingProducer as PlainSerializingProducer

from hoptrace.instrumentation.kafka_guard import contained
from hoptrace.instrumentation.kafka_loop import ConsumerState, TracedRecords
from hoptrace.instrumentation.kafka_producer import Handover, start_publish
from hoptrace.pipeline.attributes import kafka_position
from hoptrace.pipeline.messages import Outgoing, is_owned
from hoptrace.pipeline.middleware import BoundHooks

PRODUCE_PARAMETERS = ("topic", "value", "key", "partition", "on_delivery", "callback", "timestamp", "headers")
"""``Producer.produce``'s parameters in the C method's positional order (``callback`` is ``on_delivery``'s alias)."""
_DELIVERY_CALLBACK_KEYS = ("on_delivery", "callback")
"""Names of the delivery callback, per message (``produce``) or for every message (the configuration)."""

_active = False


def activate(on: bool) -> None:
    """Turn the per-message work of every traced client on or off (the instrumentor's ``instrument`` / ``uninstrument``)."""
    global _active  # noqa: PLW0603 - one switch for every instance, made before or after
    _active = on


class _Delivered:
    """A produced record's delivery report: end its span, then call the caller's own ``on_delivery``, if any."""

    __slots__ = ("callback", "hooks", "message")

    def __init__(self, hooks: BoundHooks, message: Outgoing, callback: Callable[[KafkaError | None, Message], object] | None) -> None:
        """For MESSAGE, published through HOOKS, whose caller asked for CALLBACK."""
        self.hooks = hooks
        self.message = message
        self.callback = callback

    def __call__(self, error: KafkaError | None, record: Message) -> None:
        """librdkafka's report: ERROR, or None and the RECORD as written (partition and offset)."""
        with contained("Producer delivery report"):
            message = self.message
            if error is None:
                message.answer = kafka_position(record.partition(), record.offset())
            else:
                message.error = KafkaException(error)
            self.hooks.after_publish(message)
        if self.callback is not None:
            self.callback(error, record)


def _configuration(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The configuration a client was made with: its dict (ARGS' first), else its keywords (KWARGS)."""
    return args[0] if args and isinstance(args[0], dict) else kwargs


def _keywords(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A ``produce`` call's ARGS and KWARGS as keywords only (confluent-kafka takes every parameter by name)."""
    return {**dict(zip(PRODUCE_PARAMETERS, args, strict=False)), **kwargs}


def _delivery_callback(call: dict[str, Any]) -> Callable[[KafkaError | None, Message], object] | None:
    """The delivery callback CALL names (``on_delivery`` or its alias ``callback``), taken out of it; None when it names none."""
    found = [call.pop(key) for key in _DELIVERY_CALLBACK_KEYS if key in call]
    return found[-1] if found else None


class Producer(PlainProducer):  # type: ignore[misc]
    """confluent-kafka's ``Producer``, tracing each ``produce`` (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """A producer as confluent-kafka makes it (a configuration dict, or keywords).

        Its configuration's own delivery callback is kept: ``produce`` passes a callback of its own
        per message, which librdkafka would otherwise call instead. With ``delivery.report.only.error``,
        librdkafka reports failures alone, so a span ends when its record is handed over.
        """
        super().__init__(*args, **kwargs)
        config = _configuration(args, kwargs)
        self._hoptrace_callback = _delivery_callback(dict(config))
        self._hoptrace_reports = str(config.get("delivery.report.only.error", "false")).lower() not in ("true", "1")

    def produce(self, *args: Any, **kwargs: Any) -> None:
        """Produce a record in its send span, with the trace context in its headers."""
        if not _active or is_owned():
            return super().produce(*args, **kwargs)
        started: tuple[BoundHooks, Outgoing, dict[str, Any]] | None = None
        with contained("Producer.produce"):
            call = _keywords(args, kwargs)
            topic = call.get("topic")
            headers = call.get("headers")
            if isinstance(topic, str) and (headers is None or isinstance(headers, (list, dict))):
                hooks, message, call["headers"] = start_publish(topic, list(headers.items()) if isinstance(headers, dict) else headers)
                if self._hoptrace_reports:
                    call["on_delivery"] = _Delivered(hooks, message, _delivery_callback(call) or self._hoptrace_callback)
                started = hooks, message, call
        if started is None:
            return super().produce(*args, **kwargs)
        hooks, message, call = started
        with Handover(hooks, message):
            super().produce(**call)
        if not self._hoptrace_reports:  # no report will come for a record that gets through
            with contained("Producer.produce"):
                hooks.after_publish(message)
        return None


def confluent_lags(consumer: PlainConsumer) -> Iterable[tuple[str, int, int]]:
    """CONSUMER's lag per partition of its assignment that has a position and a known high watermark, from librdkafka's local state."""
    assigned = consumer.assignment()
    if not assigned:
        return
    for position in consumer.position(assigned):
        if position.offset < 0:  # nothing consumed yet (OFFSET_INVALID)
            continue
        _, high = consumer.get_watermark_offsets(TopicPartition(position.topic, position.partition), cached=True)
        if high >= 0:
            yield position.topic, position.partition, high - position.offset


class Consumer(PlainConsumer):  # type: ignore[misc]
    """confluent-kafka's ``Consumer``, processing each record it hands out in a span (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """A consumer as confluent-kafka makes it (a configuration dict, or keywords); its group names the records' stage."""
        super().__init__(*args, **kwargs)
        self._hoptrace: ConsumerState | None = None
        with contained("Consumer()"):
            self._hoptrace = ConsumerState(_configuration(args, kwargs).get("group.id"), confluent_lags)

    def _state(self) -> ConsumerState | None:
        """The consumer's state, when hoptrace is to trace this call now."""
        return self._hoptrace if _active and not is_owned() else None

    def _settle(self, state: ConsumerState | None, kind: str) -> None:
        """End what STATE has open, within the client call KIND."""
        if state is not None:
            with contained(kind):
                state.settle()

    def _refresh(self, state: ConsumerState, kind: str) -> None:
        """Compute the consumer's lag (at most once a second), within the client call KIND."""
        with contained(kind):
            state.lag.refresh(self)

    def poll(self, *args: Any, **kwargs: Any) -> Message | None:
        """The next record (or event, or None), its processing open and current until the consumer's next call."""
        state = self._state()
        self._settle(state, "Consumer.poll")
        record = super().poll(*args, **kwargs)
        if state is not None:
            if record is not None:
                with contained("Consumer.poll"):
                    state.start(record)
            self._refresh(state, "Consumer.poll")
        return record

    def consume(self, *args: Any, **kwargs: Any) -> list[Message]:
        """A batch of records, each processed as the list is iterated."""
        state = self._state()
        self._settle(state, "Consumer.consume")
        batch = super().consume(*args, **kwargs)
        if state is None:
            return batch
        self._refresh(state, "Consumer.consume")
        return TracedRecords(batch, state)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        """Commit; the record in hand is done."""
        self._settle(self._state(), "Consumer.commit")
        return super().commit(*args, **kwargs)

    def store_offsets(self, *args: Any, **kwargs: Any) -> None:
        """Store offsets to commit (``enable.auto.offset.store`` off): as at a commit, the record in hand is done."""
        self._settle(self._state(), "Consumer.store_offsets")
        return super().store_offsets(*args, **kwargs)  # type: ignore[no-any-return]

    def close(self, *args: Any, **kwargs: Any) -> None:
        """Close; what is open ends (failed, when closing because of an exception) and the lag is no longer reported."""
        state = self._hoptrace
        if state is not None and not is_owned():
            with contained("Consumer.close"):
                state.close()
        return super().close(*args, **kwargs)


class SerializingProducer(PlainSerializingProducer, Producer):  # type: ignore[misc]
    """confluent-kafka's ``SerializingProducer``: its ``produce`` serializes, then hands the record to ``Producer.produce`` above, which traces it."""


class DeserializingConsumer(PlainDeserializingConsumer, Consumer):  # type: ignore[misc]
    """confluent-kafka's ``DeserializingConsumer``: its ``poll`` takes the record from ``Consumer.poll`` above (span open), then deserializes it."""

    def poll(self, *args: Any, **kwargs: Any) -> Message | None:
        """The next record, deserialized; one whose key or value does not deserialize ends its processing failed (the error goes on)."""
        try:
            return super().poll(*args, **kwargs)
        except Exception as error:
            state = self._state()
            if state is not None and state.open is not None:  # started for this record: an event raised before any was
                with contained("DeserializingConsumer.poll"):
                    state.settle(error)
            raise
