"""Queue depth, consumer lag and their ages in seconds: gauges kept current by background refreshers (``hoptrace monitor``).

- ``refresher.GaugeRefresher``: gauges of any sources on any meter provider, one refresher thread per source;
- ``redis_depth.RedisQueueDepth``: depth and oldest age of Celery queues on Redis;
- ``stuck_jobs``: jobs that reached no final outcome, from the job ledger.

The lag of Kafka consumer groups is kafka-python's (``hoptrace.clients.kafka_python.group_lag``);
``hoptrace.depth_monitor`` puts them together for a pipeline's stages.
"""
