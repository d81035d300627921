"""What hoptrace knows of the messaging clients, shared by the floors that use them: the ground floor knows none.

- ``outage_errors``: which errors of kafka-python, confluent-kafka, kombu (Celery) and redis-py mean a broker
  or server is away rather than that it refused the message (``hoptrace.pipeline.outages`` says what follows from one).
- ``kafka_options``: how every Kafka client of hoptrace, kafka-python's or confluent-kafka's, is configured from
  the settings (security, OAUTHBEARER's token, reconnecting).

It imports the ground floor only; ``workers``, ``producers``, the gauges and the command line import it.
"""
