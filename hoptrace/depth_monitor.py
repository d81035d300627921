"""The gauges of a pipeline's stages, as ``hoptrace monitor`` reports them.

From Redis (every Celery stage's queue): ``hoptrace.queue.depth`` and
``hoptrace.queue.oldest_age``; from Kafka (every Kafka stage's topic and group, per
partition): ``hoptrace.kafka.consumer.lag`` and ``hoptrace.kafka.consumer.lag_seconds``; from the
job ledger: ``hoptrace.jobs.stuck``.
One thread per broker keeps them current (see ``hoptrace.gauges.refresher``)::

    monitor = DepthMonitor(pipeline, settings, meter_provider=provider)
    monitor.start()
    ...
    monitor.stop()
"""

from __future__ import annotations

from opentelemetry.metrics import MeterProvider

from hoptrace.clients.celery.queue_depth import RedisQueueDepth
from hoptrace.clients.kafka_python.group_lag import KafkaConsumerLag
from hoptrace.clients.kafka_python.options import kafka_client_options
from hoptrace.clients.redis.job_ledger import key_prefix
from hoptrace.clients.redis.stuck_jobs import StuckJobs
from hoptrace.gauges.refresher import GaugeRefresher, GaugeSource
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import Pipeline


class DepthMonitor(GaugeRefresher):
    """The queue and consumer-group gauges of one pipeline, and the threads (``redis``, ``kafka``) that keep them current."""

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        meter_provider: MeterProvider | None = None,
        interval_s: float = 2.0,
        redis_key_prefix: str = "",
        *,
        redis: GaugeSource | None = None,
        kafka: GaugeSource | None = None,
        jobs: GaugeSource | None = None,
    ) -> None:
        """Create the four gauges on METER_PROVIDER (default: the global one); refresh every INTERVAL_S once started.

        REDIS_KEY_PREFIX is kombu's ``global_keyprefix`` transport option, when the Celery app sets one.
        REDIS, KAFKA and JOBS replace the sources built from PIPELINE and SETTINGS.
        """
        if redis is None:
            redis = RedisQueueDepth.of_pipeline(pipeline, settings.redis_url, redis_key_prefix)
        if kafka is None:
            kafka = KafkaConsumerLag.of_pipeline(pipeline, settings.kafka_servers, options=kafka_client_options(settings))
        if jobs is None:
            jobs = StuckJobs(settings.redis_url, pipeline.name, settings.stuck_after_s, prefix=key_prefix(settings.namespace))
        super().__init__({"redis": redis, "kafka": kafka, "job ledger": jobs}, meter_provider, interval_s)
