"""Gauges kept current by background refreshers (``hoptrace monitor``).

``refresher.GaugeRefresher`` runs any sources on any meter provider, one refresher thread per source.

The sources are the clients': the depth and oldest age of Celery queues on Redis
(``hoptrace.clients.celery.queue_depth``), the lag of Kafka consumer groups
(``hoptrace.clients.kafka_python.group_lag``), jobs that reached no final outcome in the job ledger
(``hoptrace.clients.redis.stuck_jobs``); ``hoptrace.depth_monitor`` puts them together for a pipeline's stages.
"""
