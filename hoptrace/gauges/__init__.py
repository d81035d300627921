"""Queue depth, consumer lag and their ages in seconds: gauges kept current by background refreshers (``hoptrace monitor``).

- ``refresher.GaugeRefresher``: gauges of any sources on any meter provider, one refresher thread per source;
- ``redis_depth.RedisQueueDepth``: depth and oldest age of Celery queues on Redis;
- ``kafka_lag.KafkaConsumerLag``: lag of Kafka consumer groups, in records and in seconds;
- ``depth_monitor.DepthMonitor``: all four for a pipeline's stages.
"""
