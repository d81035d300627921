"""Queue depth and consumer lag as observable gauges that never block metric collection.

``hoptrace.queue.depth`` counts the messages of every Celery stage's queue (Redis lists,
priority lists included, and unacknowledged deliveries); ``hoptrace.kafka.consumer.lag``
counts the records every Kafka stage's group has yet to read, per partition. Asking a
broker can take seconds when it is slow or gone, so the gauge callbacks never do: a
background thread per broker refreshes the values every interval, and the callbacks hand
out the last values it got. While a broker does not answer, its gauge keeps reporting the
last known values, and one warning per outage says so.

    monitor = DepthMonitor(pipeline, settings, meter_provider=provider)
    monitor.start()
    ...
    monitor.stop()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from opentelemetry import metrics
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from hoptrace.gauges.kafka_lag import KafkaConsumerLag
from hoptrace.gauges.redis_depth import RedisQueueDepth
from hoptrace.pipeline.semconv import CONSUMER_LAG, QUEUE_DEPTH
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import Pipeline

logger = logging.getLogger(__name__)


class DepthSource(Protocol):
    """Where the values of one gauge come from."""

    def read(self) -> Sequence[Observation]:
        """Ask the broker for the current values; blocks at most the source's own timeouts, raises when it gets no answer."""

    def close(self) -> None:
        """Release the broker connections (a later read opens new ones)."""


class _LastKnown:
    """The last values a source gave: refreshed by one caller at a time, read by gauge callbacks without waiting."""

    def __init__(self, broker: str, source: DepthSource) -> None:
        """Keep the values of SOURCE, which reads from BROKER (a name for log messages)."""
        self.broker = broker
        self.source = source
        self._values: tuple[Observation, ...] = ()
        self._values_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._failing = False

    @property
    def values(self) -> tuple[Observation, ...]:
        """The values of the last successful refresh; empty before the first."""
        with self._values_lock:
            return self._values

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        """Gauge callback: the last values, at once (OPTIONS' timeout is never needed)."""
        return self.values

    def refresh(self) -> bool:
        """Read the source and keep what it gives; on failure keep the old values. Return whether the broker answered."""
        with self._refresh_lock:
            try:
                values = tuple(self.source.read())
            except Exception as error:  # whatever a broker client raises, the refresher lives on
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "%s does not answer (%s: %.200s); its gauge keeps the last known values until it does",
                        self.broker,
                        type(error).__name__,
                        error,
                    )
                return False
            with self._values_lock:
                self._values = values
            if self._failing:
                self._failing = False
                logger.info("%s answers again; its gauge is current", self.broker)
            return True


class DepthMonitor:
    """The queue depth and consumer lag gauges of one pipeline, and the threads that keep them current."""

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        meter_provider: MeterProvider | None = None,
        interval_s: float = 2.0,
        redis_key_prefix: str = "",
        *,
        queue_depth: DepthSource | None = None,
        consumer_lag: DepthSource | None = None,
    ) -> None:
        """Create both gauges on METER_PROVIDER (default: the global one); refresh every INTERVAL_S once started.

        REDIS_KEY_PREFIX is kombu's ``global_keyprefix`` transport option, when the Celery app sets one.
        QUEUE_DEPTH and CONSUMER_LAG replace the sources built from SETTINGS.
        """
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self._interval_s = interval_s
        if queue_depth is None:
            queue_depth = RedisQueueDepth(pipeline, settings.redis_url, redis_key_prefix)
        if consumer_lag is None:
            consumer_lag = KafkaConsumerLag(pipeline, settings.kafka_servers)
        self._queue_depth = _LastKnown("redis", queue_depth)
        self._consumer_lag = _LastKnown("kafka", consumer_lag)
        meter = metrics.get_meter("hoptrace", meter_provider=meter_provider)
        meter.create_observable_gauge(
            QUEUE_DEPTH, [self._queue_depth.observe], "{message}", "Messages in a Celery queue, ready (priority lists included) or unacked."
        )
        meter.create_observable_gauge(
            CONSUMER_LAG, [self._consumer_lag.observe], "{message}", "Records a consumer group has yet to read, per partition."
        )
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def queue_depth(self) -> tuple[Observation, ...]:
        """What ``hoptrace.queue.depth`` reports now."""
        return self._queue_depth.values

    @property
    def consumer_lag(self) -> tuple[Observation, ...]:
        """What ``hoptrace.kafka.consumer.lag`` reports now."""
        return self._consumer_lag.values

    def refresh_once(self) -> None:
        """Refresh both gauges now, in the calling thread."""
        with suppress_instrumentation():  # our own broker reads are not the user's traffic
            for last in (self._queue_depth, self._consumer_lag):
                last.refresh()

    def start(self) -> None:
        """Start refreshing in the background: one daemon thread per broker, so a slow one does not hold up the other."""
        if self._threads:
            raise RuntimeError("DepthMonitor already started")
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._refresh_until_stopped, args=(last,), name=f"hoptrace-depth-{last.broker}", daemon=True)
            for last in (self._queue_depth, self._consumer_lag)
        ]
        for thread in self._threads:
            thread.start()

    def _refresh_until_stopped(self, last: _LastKnown) -> None:
        # A stock Redis or Kafka instrumentation would make every read a new root trace.
        with suppress_instrumentation():
            while True:
                last.refresh()
                if self._stopping.wait(self._interval_s):
                    return

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the threads (waiting at most TIMEOUT_S for a refresh under way) and close the broker connections.

        The gauges keep reporting the last values.
        """
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []
        for last in (self._queue_depth, self._consumer_lag):
            last.source.close()
