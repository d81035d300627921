"""``hoptrace monitor``: report queue depth and consumer lag of a pipeline's stages until stopped.

Four gauges: ``hoptrace.queue.depth`` and ``hoptrace.queue.oldest_age`` of every Celery
stage's queue, ``hoptrace.kafka.consumer.lag`` and ``hoptrace.kafka.consumer.lag_seconds``
of every Kafka stage's group. They are reported from one process per deployment (this one),
not from every worker, so each series has one source, and they are reported even when no
worker of a stage runs. With ``HOPTRACE_JAEGER_URL``, also ``hoptrace.stage.critical.time``:
the critical paths of finished jobs read from that Jaeger (``critical_times``).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from hoptrace.critical_times import CriticalTimes
from hoptrace.depth_monitor import DepthMonitor
from hoptrace.loader import load_stages
from hoptrace.pipeline.health import BEAT_EVERY_S, MONITOR, HealthFile
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import Pipeline
from hoptrace.pipeline.telemetry import providers
from hoptrace.runtime import configure_logging
from hoptrace.view.jaeger import JaegerQuery


def run_monitor(pipeline: Pipeline, settings: Settings, interval_s: float) -> None:
    """Export the depth, oldest-age, lag and lag-in-seconds gauges of PIPELINE until SIGTERM/SIGINT."""
    stopped = threading.Event()

    def stop(number: int, frame: FrameType | None) -> None:
        stopped.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    process_telemetry = providers.configure(f"{pipeline.name}-monitor")
    monitor = DepthMonitor(pipeline, settings, process_telemetry.meter_provider, interval_s)
    monitor.start()
    critical = None if settings.jaeger_url is None else CriticalTimes(JaegerQuery(settings.jaeger_url), pipeline, process_telemetry.meter_provider)
    if critical is not None:
        critical.start()
    health = HealthFile(settings.state_dir, [MONITOR])
    health.ready(True)
    try:
        while not stopped.wait(BEAT_EVERY_S):
            health.beat()
    finally:
        monitor.stop()
        if critical is not None:
            critical.stop()
        monitor.refresh_once()  # the last export carries the depth at shutdown, not the last interval's
        process_telemetry.shutdown()


def main(spec: str, stage_names: list[str], interval_s: float) -> None:
    """``hoptrace monitor``: the gauges of the pipeline SPEC's stages STAGE_NAMES (all when empty)."""
    configure_logging()
    settings = Settings()
    pipeline, _ = load_stages(spec, settings.namespace, stage_names)
    run_monitor(pipeline.only(stage_names) if stage_names else pipeline, settings, interval_s)
