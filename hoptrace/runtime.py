"""Wiring one process: telemetry, the Kafka sender (of the chosen client), the Celery app, publisher and processors.

The composition root is the only place that knows every layer. A ``Runtime`` is made per
process on first use, so prefork children build their own after the fork.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from functools import cached_property

from opentelemetry.sdk.trace import SpanProcessor

from hoptrace.clients.celery.app import CeleryApp
from hoptrace.clients.celery.sender import CelerySender
from hoptrace.clients.redis.job_ledger import JobLedger, JobLedgerMiddleware, key_prefix
from hoptrace.clients.redis.keep_channel import start_flight_recorder
from hoptrace.kafka_clients import kafka_sender
from hoptrace.pipeline.defaults import default_middleware
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import KafkaTransport, Pipeline, Stage
from hoptrace.pipeline.telemetry import providers
from hoptrace.producers.publisher import ClosingSender, PipelinePublisher, Sender
from hoptrace.workers.processing import StageProcessor

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 5.0
PRODUCER_CLOSE_TIMEOUT_S = 2.0
LEDGER_CLOSE_TIMEOUT_S = 0.5


def configure_logging() -> None:
    """Log lines of a worker or monitor process: INFO and up, with the current trace and span ids; kafka-python's chatter only from WARNING."""
    providers.install_log_correlation()
    logging.basicConfig(level=logging.INFO, format=providers.LOG_FORMAT)
    logging.getLogger("kafka").setLevel(logging.WARNING)


class Runtime:
    """Everything one process needs to publish into and process a pipeline."""

    def __init__(self, pipeline: Pipeline, settings: Settings, role: str, app: CeleryApp, span_processors: Sequence[SpanProcessor] = ()) -> None:
        """Configure telemetry for service ``<pipeline>-<role>`` and the publishers."""
        self.pipeline = pipeline
        self.settings = settings
        self.telemetry = providers.configure(f"{pipeline.name}-{role}", span_processors=span_processors, spool=settings.spool_root)
        self.instruments = Instruments.of(self.telemetry.meter_provider)
        # This process's unsampled spans, exported whole when any process of the pipeline keeps their job.
        start_flight_recorder(self.telemetry.tracer_provider, self.telemetry.meter_provider, settings)
        # The job ledger lets hoptrace monitor find jobs that reach no final outcome (hoptrace.jobs.stuck).
        self._ledger = JobLedger(settings.redis_url, key_prefix(settings.namespace))
        self.middleware = [
            *default_middleware(pipeline, self.instruments, self.telemetry.tracer_provider, settings.slow_after_s, settings.pathway_depth),
            JobLedgerMiddleware(pipeline.name, self._ledger),
        ]
        self._app = app
        self._processors: dict[str, StageProcessor] = {}

    @cached_property
    def _kafka_sender(self) -> ClosingSender:
        return kafka_sender(self.settings, f"hoptrace-{self.pipeline.name}")

    @cached_property
    def publisher(self) -> PipelinePublisher:
        """Publishes into the pipeline over Kafka and Celery."""
        senders: dict[str, Sender] = {"celery": CelerySender(self._app)}
        if any(isinstance(stage.transport, KafkaTransport) for stage in self.pipeline):
            senders["kafka"] = self._kafka_sender
        return PipelinePublisher(self.pipeline, senders, middleware=self.middleware)

    def processor(self, stage: Stage) -> StageProcessor:
        """The processor of STAGE (one per stage and process)."""
        if stage.name not in self._processors:
            self._processors[stage.name] = StageProcessor(
                self.pipeline, stage, self.publisher, middleware=self.middleware, time_limits=self.settings.time_limits
            )
        return self._processors[stage.name]

    def shutdown(self) -> None:
        """Send what is buffered and flush telemetry, never longer than SHUTDOWN_TIMEOUT_S in all."""
        if "_kafka_sender" in self.__dict__:
            try:
                self._kafka_sender.close(PRODUCER_CLOSE_TIMEOUT_S)
            except Exception as error:  # closing must never keep the process from exiting
                logger.warning("kafka producer did not close cleanly: %s", error)
        self._ledger.close(LEDGER_CLOSE_TIMEOUT_S)
        self.telemetry.shutdown(SHUTDOWN_TIMEOUT_S - PRODUCER_CLOSE_TIMEOUT_S - LEDGER_CLOSE_TIMEOUT_S)


class ProcessRuntime:
    """The ``Runtime`` of the current process, made on first use and remade after a fork."""

    def __init__(self, pipeline: Pipeline, settings: Settings, role: str, app: CeleryApp) -> None:
        """Make runtimes for PIPELINE in role ROLE (``worker``, ``publisher``) on demand."""
        self._args = (pipeline, settings, role, app)
        self._runtime: Runtime | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        """This process's runtime."""
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                self._runtime, self._pid = Runtime(*self._args), os.getpid()
            return self._runtime

    def processor(self, stage: Stage) -> StageProcessor:
        """The processor of STAGE in this process."""
        return self.get().processor(stage)

    def shutdown(self) -> None:
        """Shut down this process's runtime, when it made one."""
        with self._lock:
            runtime, self._runtime = (self._runtime, None) if self._pid == os.getpid() else (None, None)
        if runtime is not None:
            runtime.shutdown()
