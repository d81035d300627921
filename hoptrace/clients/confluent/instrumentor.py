"""hoptrace for confluent-kafka code that never imports it: ``HoptraceConfluentKafkaInstrumentor``.

Instrumented (``opentelemetry-instrument python app.py`` with confluent-kafka installed,
``hoptrace.instrument()`` or ``HoptraceConfluentKafkaInstrumentor().instrument()``), on the global
providers, ``confluent_kafka.Producer`` and ``confluent_kafka.Consumer`` (and ``SerializingProducer`` and
``DeserializingConsumer``) are hoptrace's subclasses (``traced_clients``): a send span per ``produce`` with the trace context in the record's
headers, a process span per record that ``poll()`` or ``consume()`` hands out, current while the
user's code handles it, the stage metrics and ``hoptrace.kafka.consumer.lag``, as for kafka-python
(``clients.kafka_python.instrumentor``); ``hoptrace.kafka.processing(message)`` takes confluent-kafka's records
too. Bad headers are counted, never raised into the user's loop. The stock
``ConfluentKafkaInstrumentor`` is silenced while this one is instrumented, so each record gets one
span and one ``traceparent``.

Not covered: classes imported before the instrumentation (``from confluent_kafka import Producer``
ahead of ``instrument()``; ``opentelemetry-instrument`` instruments first), other subclasses of the
plain clients, ``Producer.produce_batch`` (confluent-kafka sends no headers in a batch, so no trace context can go with
its records: no span, no headers) and a transaction's
``send_offsets_to_transaction`` (it does not end the open record's span; the next ``poll()``,
``consume()``, ``commit()``, ``store_offsets()`` or ``close()`` does).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import confluent_kafka
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from hoptrace.clients.confluent import traced_clients
from hoptrace.instrumentation import dropin

__all__ = ["HoptraceConfluentKafkaInstrumentor"]

CLASSES = ("Producer", "Consumer", "SerializingProducer", "DeserializingConsumer")
"""The client classes of ``confluent_kafka`` whose names hoptrace's subclasses (``traced_clients``) take while instrumented."""


class HoptraceConfluentKafkaInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments confluent-kafka's clients, ``CLASSES`` (see the module's docstring); twice is a no-op."""

    _plain: tuple[type, ...] | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """The confluent-kafka versions this instrumentor supports."""
        return ("confluent-kafka >= 2.6, < 3",)

    def _instrument(self, **kwargs: Any) -> None:
        dropin.step_aside("confluent_kafka", type(self).__name__)
        self._plain = tuple(getattr(confluent_kafka, name) for name in CLASSES)
        for name in CLASSES:
            setattr(confluent_kafka, name, getattr(traced_clients, name))
        traced_clients.activate(True)

    def _uninstrument(self, **kwargs: Any) -> None:
        traced_clients.activate(False)
        if self._plain is not None:
            for name, plain in zip(CLASSES, self._plain, strict=True):
                setattr(confluent_kafka, name, plain)
        dropin.step_back("confluent_kafka")
