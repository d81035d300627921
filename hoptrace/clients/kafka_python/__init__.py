"""Everything hoptrace knows of kafka-python, the default Kafka client; the only folder that imports it.

- ``consumer`` and ``sender``: ``hoptrace worker``'s stage consumer (``workers.stage_consumer``) and the publisher's sender;
- ``options``: their security and reconnect settings, from ``HOPTRACE_KAFKA_*``;
- ``instrumentor``, ``traced_consumer``, ``traced_producer``: the drop-in (``opentelemetry-instrument``);
- ``group_lag``, ``record_times``, ``monitor_clients``: consumer-group lag for ``hoptrace monitor``, whatever client the stages run on;
- ``admin``: the command line's cluster requests (``services status``, the demo's topics).
"""
