"""One folder per messaging client: everything hoptrace knows of that client, and the only place its library is imported.

- ``kafka_python``, ``confluent``, ``aiokafka``: the Kafka clients. Each implements the client-neutral sides it
  supports: the drop-in (``hoptrace.instrumentation``: ``dropin``, ``kafka_loop``, ``kafka_records``,
  ``kafka_producer``), ``hoptrace worker``'s stage consumer (``workers.stage_consumer``) and the publisher's
  sender (``producers.publisher.Sender``); kafka-python's also reads consumer-group lag for ``hoptrace monitor``.
- ``celery``: Celery and kombu on the Redis broker: the app, the worker's tasks, the sender, the drop-in, queue depth.
- ``redis``: hoptrace's own state on Redis (the job ledger, the flight recorder's keep channel) and the command
  line's Redis requests.

A client folder builds on the ground floor and that client-neutral machinery. The command line wires them in
(``runtime``, ``stage_runner``, ``kafka_clients``, ``depth_monitor``, ``publish``, ``services``, ``demo``, ``errors``),
the drop-in registry names the instrumentors (``instrumentation.LIBRARIES``, imported by name), and the drop-in
starts the flight recorder's keep channel (``redis.keep_channel``); nothing else reaches into one.
"""
