"""hoptrace for aiokafka code that never imports it: ``HoptraceAIOKafkaInstrumentor``.

Instrumented (``opentelemetry-instrument python app.py`` with aiokafka installed,
``hoptrace.instrument()`` or ``HoptraceAIOKafkaInstrumentor().instrument()``), on the global
providers: a send span per ``AIOKafkaProducer.send`` (and ``send_and_wait``) with the trace
context in the record's headers; a process span per record that ``getone()`` (``async for``) or
``getmany()`` hands out, current in the user's task while it handles the record; the stage metrics
and ``hoptrace.kafka.consumer.lag``, as for kafka-python (``clients.kafka_python.instrumentor``; the wrappers:
``traced_clients``). ``async with hoptrace.kafka.processing(record):`` gives a handler task a span
of its own. Bad headers are counted, never raised into the user's loop. The stock
``AIOKafkaInstrumentor`` is silenced while this one is instrumented.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hoptrace.clients.aiokafka.traced_clients import wrap_commit, wrap_getmany, wrap_getone, wrap_send, wrap_stop
from hoptrace.instrumentation import dropin

__all__ = ["HoptraceAIOKafkaInstrumentor"]

PATCHES: tuple[dropin.Patch, ...] = (
    (AIOKafkaProducer, "send", wrap_send),
    (AIOKafkaConsumer, "getone", wrap_getone),
    (AIOKafkaConsumer, "getmany", wrap_getmany),
    (AIOKafkaConsumer, "commit", wrap_commit),
    (AIOKafkaConsumer, "stop", wrap_stop),
)
"""(class, method, wrapper) of every coroutine method the instrumentor wraps (``__anext__`` and ``send_and_wait`` go through them)."""


class HoptraceAIOKafkaInstrumentor(dropin.PatchingInstrumentor):
    """Instruments aiokafka's ``AIOKafkaProducer`` and ``AIOKafkaConsumer`` (see the module's docstring); twice is a no-op."""

    library = "aiokafka"
    patches = PATCHES
    dependencies = ("aiokafka >= 0.11, < 1",)
