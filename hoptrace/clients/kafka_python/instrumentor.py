"""hoptrace for kafka-python code that never imports it: ``HoptraceKafkaInstrumentor``, and ``processing(record)``.

Instrumented (``opentelemetry-instrument python app.py``, ``hoptrace.instrument()`` or
``HoptraceKafkaInstrumentor().instrument()``), on the global providers:

- ``KafkaProducer.send``: a PRODUCER ``send {topic}`` span; ``traceparent``, ``tracestate``,
  ``baggage`` and ``hoptrace-sent-at`` written into a copy of the record's headers, replacing
  any already there (``kafka_producer``);
- ``for record in consumer:`` and the lists of ``consumer.poll()``: a CONSUMER ``process
  {topic}`` span per record, the child of the span that sent it and current while the user's
  code handles the record, ended when the next record is asked for, at ``poll()``,
  ``commit()``, ``commit_async()`` or ``close()`` (``traced_consumer``); with hoptrace's stage
  metrics (stage = the consumer group, else the topic) and ``hoptrace.kafka.consumer.lag``
  (``kafka_lag``);
- ``with processing(record):`` for handlers that run elsewhere (threads, asyncio).

Headers are untrusted: broken ones are counted and the record is processed as a new root; no
exception from hoptrace ever reaches the user's code (``kafka_guard``). Calls made by hoptrace's
own publisher and stage workers pass through untouched. The stock ``KafkaInstrumentor`` is
silenced while this one is instrumented, so each record gets one span and one ``traceparent``.
"""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer

from hoptrace.clients.kafka_python.traced_consumer import wrap_close, wrap_commit, wrap_next, wrap_poll
from hoptrace.clients.kafka_python.traced_producer import wrap_send
from hoptrace.instrumentation import dropin
from hoptrace.instrumentation.kafka_records import processing

__all__ = ["HoptraceKafkaInstrumentor", "processing"]


PATCHES: tuple[dropin.Patch, ...] = (
    (KafkaProducer, "send", wrap_send),
    (KafkaConsumer, "__next__", wrap_next),
    (KafkaConsumer, "poll", wrap_poll),
    (KafkaConsumer, "commit", wrap_commit),
    (KafkaConsumer, "commit_async", wrap_commit),
    (KafkaConsumer, "close", wrap_close),
)
"""(class, method, wrapper) of every method the instrumentor wraps."""


class HoptraceKafkaInstrumentor(dropin.PatchingInstrumentor):
    """Instruments kafka-python's ``KafkaProducer`` and ``KafkaConsumer`` (see the module's docstring); twice is a no-op."""

    library = "kafka"
    patches = PATCHES
    dependencies = ("kafka-python >= 2.2, < 4",)
