"""Everything hoptrace knows of confluent-kafka (librdkafka); the only folder that imports it (``pip install 'hoptrace[confluent]'``).

- ``consumer`` and ``sender``: ``hoptrace worker``'s stage consumer and the publisher's sender (``HOPTRACE_KAFKA_CLIENT=confluent-kafka``);
- ``options``: kafka-python's security and reconnect settings in librdkafka's names;
- ``instrumentor`` and ``traced_clients``: the drop-in (``opentelemetry-instrument``).
"""
