"""One folder per messaging client: everything hoptrace knows of that client, and the only place its library is imported.

- ``kafka_python``, ``confluent``, ``aiokafka``: the Kafka clients. Each implements the client-neutral sides it
  supports: the drop-in (``hoptrace.instrumentation``: ``dropin``, ``kafka_loop``, ``kafka_records``,
  ``kafka_producer``), ``hoptrace worker``'s stage consumer (``workers.stage_consumer``) and the publisher's
  sender (``producers.publisher.Sender``).

A client folder builds on the ground floor and that client-neutral machinery; nothing but the command line
(``hoptrace.kafka_clients``, ``hoptrace.depth_monitor``, ``services``, ``demo``) and the drop-in registry
(``instrumentation.LIBRARIES``, by name) reaches into one.
"""
