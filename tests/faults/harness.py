"""One fault scenario: workers of the orders pipeline, 300 jobs, a fault about 2 s in, and what came out of it.

A ``Scenario`` gets a namespace of its own on the suite's brokers and an OTLP receiver of its
own, starts worker processes as a process manager would (``hoptrace worker``, whose supervisor
restarts a child that dies), publishes with ``hoptrace publish`` (all at once, or streamed over a few
seconds so that every stage is busy when the fault comes), lets the test inject its fault,
then waits for every job in the outbox (180 s at most) and for the outbox to stay still for 3 s.
Its ``Row`` is one line of the fault table (``table``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from hoptrace.clients.celery.visibility import RecoverySettings
from hoptrace.view.receiver import OtlpReceiver
from tests.conftest import run_hoptrace
from tests.faults import procs
from tests.faults.brokers import Brokers
from tests.faults.table import ROWS, Row
from tests.memory_store import TelemetryStore
from tests.processes import Process
from tests.traces import PublishedJob, latest_totals, published_jobs

ORDERS = "hoptrace.examples.orders:pipeline"
JOBS = 1500
"""Jobs a scenario publishes: enough that every stage has work in flight when the fault strikes, 2 s in."""
RECOVERY_JOBS = 300
"""Jobs of the scenarios that hold a recovery time to a target: few enough that the last job measures the recovery, not the backlog."""
FAULT_AFTER_S = 2.0
ALLOWED_S = 180.0
QUIET_S = 3.0
STREAM_CHUNKS = 4
"""A streamed publish runs ``hoptrace publish`` this many times in a row (about 1.3 s each)."""
SPANS_PER_JOB = 8
READY_TIMEOUT_S = 90.0
KAFKA_STAGES = {"validate": "orders.placed", "ship": "orders.charged"}
CELERY_QUEUES = ("payments", "notifications")
JOB_IN_BAGGAGE = re.compile(rb"hoptrace\.job\.id=([0-9a-f]{32})")


@dataclass
class Scenario:
    """Workers, jobs and a fault on the suite's brokers; use as a context manager (stops everything it started)."""

    brokers: Brokers
    folder: Path
    fault: str
    spec: str = ORDERS
    secured: bool = False
    """hoptrace's processes reach the brokers' secured twins (SASL_SSL Kafka, TLS Redis); the suite reads Kafka plain, Redis as they do."""
    kafka_client: str = "kafka-python"
    """The client library of hoptrace's Kafka stages and publisher (HOPTRACE_KAFKA_CLIENT); the suite reads Kafka with kafka-python."""
    namespace: str = field(default_factory=lambda: f"f{uuid.uuid4().hex[:8]}.")
    store: TelemetryStore = field(default_factory=TelemetryStore)
    jobs: list[PublishedJob] = field(default_factory=list)
    started: float = 0.0
    fault_at: float | None = None
    restart_at: float | None = None
    last_job_at: float | None = None
    parked: set[str] = field(default_factory=set)
    """Jobs the scenario expects dead-lettered (a handler hung at every attempt): not waited for in the outbox, not lost when parked."""
    _processes: list[Process] = field(default_factory=list)
    _streaming: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.receiver = OtlpReceiver(self.store)

    @property
    def env(self) -> dict[str, str]:
        """Environment of this scenario's hoptrace processes: the suite's brokers, its namespace, exporting to its receiver."""
        return {
            **(self.brokers.secured_env if self.secured else self.brokers.env),
            "HOPTRACE_NAMESPACE": self.namespace,
            "HOPTRACE_KAFKA_CLIENT": self.kafka_client,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def redis_url(self) -> str:
        """The Redis the scenario's workers use (the TLS twin is another server: its outbox and dead letters are there)."""
        return self.env["HOPTRACE_REDIS_URL"]

    def __enter__(self) -> Scenario:
        self.receiver.start()
        admin = KafkaAdminClient(bootstrap_servers=self.brokers.kafka_bootstrap, client_id="hoptrace-faults")
        try:
            admin.create_topics([NewTopic(self.namespace + topic, 1, 1) for topic in KAFKA_STAGES.values()])
        finally:
            admin.close()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for process in self._processes:
            process.stop(timeout=30)
        self.receiver.stop()
        self._streamed()

    # --- processes ------------------------------------------------------------------------------

    def start_workers(self, *args: str, env: dict[str, str] | None = None, ready: tuple[str, ...] | None = None) -> Process:
        """Start ``hoptrace worker SPEC --no-monitor ARGS`` and wait until each stage it runs is consuming."""
        log = self.folder / f"workers-{len(self._processes)}.log"
        command = [sys.executable, "-m", "hoptrace", "worker", self.spec, "--no-monitor", *args]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env, **(env or {})}, start_new_session=True
            )
        process = Process(popen, log)
        self._processes.append(process)
        stages = [value for flag, value in zip(args, args[1:], strict=False) if flag == "--stage"] or [*KAFKA_STAGES, "charge"]
        if ready is None:
            ready = tuple(f"assigned partitions {self.namespace}{KAFKA_STAGES[stage]}[" for stage in stages if stage in KAFKA_STAGES)
            ready += ("ready.",) if {"charge", "notify"} & set(stages) else ()
        for text in ready:
            process.wait_for_output(text, READY_TIMEOUT_S)
        return process

    def child(self, supervisor: Process, stage: str) -> int:
        """The pid of the SUPERVISOR's worker process that runs STAGE."""
        pid = procs.child_running(supervisor.popen.pid, stage)
        assert pid is not None, f"no worker process of stage {stage}:\n{supervisor.output()}"
        return pid

    def wait_for_restart(self, supervisor: Process, stage: str, old_pid: int, timeout_s: float = 60.0) -> int:
        """Wait until the SUPERVISOR runs STAGE in a process other than OLD_PID; note the restart; its pid."""
        deadline = time.monotonic() + timeout_s
        while (pid := procs.child_running(supervisor.popen.pid, stage)) in (None, old_pid):
            assert time.monotonic() < deadline, f"stage {stage} was not restarted within {timeout_s} s:\n{supervisor.output()}"
            time.sleep(0.05)
        self.restarted()
        assert pid is not None
        return pid

    # --- the run --------------------------------------------------------------------------------

    def publish(self, count: int = JOBS, payload: dict[str, object] | None = None) -> None:
        """Publish COUNT jobs at the pipeline's first stage with ``hoptrace publish``; the first publish starts the clock."""
        if not self.started:
            self.started = time.monotonic()
        args = ["publish", self.spec, "validate", "--count", str(count)]
        if payload is not None:
            args += ["--payload", json.dumps(payload)]
        result = run_hoptrace(self.env, *args)
        jobs = published_jobs(result.stdout)
        assert len(jobs) == count, result.stdout
        self.jobs += jobs

    def stream(self, count: int = JOBS) -> None:
        """Publish COUNT jobs in the background, in STREAM_CHUNKS runs of ``hoptrace publish`` one after the other."""
        self.started = self.started or time.monotonic()
        sizes = [count // STREAM_CHUNKS + (1 if index < count % STREAM_CHUNKS else 0) for index in range(STREAM_CHUNKS)]
        self._streaming = threading.Thread(target=lambda: [self.publish(size) for size in sizes], name="fault-publish", daemon=True)
        self._streaming.start()

    def _streamed(self) -> None:
        if self._streaming is not None:
            self._streaming.join(ALLOWED_S)
            assert not self._streaming.is_alive(), "hoptrace publish did not finish"

    def wait_until(self, seconds: float) -> None:
        """Sleep until SECONDS after the first publish."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def faulted(self) -> None:
        """Note that the fault is injected now."""
        self.fault_at = time.monotonic()

    def restarted(self) -> None:
        """Note that the failed part is back now (restarted, or the outage is over)."""
        self.restart_at = time.monotonic()

    def delivered(self) -> list[str]:
        """Job ids in the outbox, once per entry; an empty list while Redis does not answer."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            return [json.loads(item)["job_id"] for item in client.lrange(f"{self.namespace}orders:outbox", 0, -1)]
        except redis.RedisError:
            return []
        finally:
            client.close()

    def wait_for_jobs(self, allowed_s: float = ALLOWED_S) -> None:
        """Wait until every published job is in the outbox (noting when, once), at most ALLOWED_S after the first publish."""
        self._streamed()
        if self.last_job_at is not None:
            return
        wanted = {job.job_id for job in self.jobs} - self.parked
        while time.monotonic() < self.started + allowed_s:
            if wanted <= set(self.delivered()):
                self.last_job_at = time.monotonic()
                return
            time.sleep(0.2)

    def finish(self, note: str = "", allowed_s: float = ALLOWED_S) -> Row:
        """Wait for the jobs and for the outbox to stay still, stop the workers (they flush), and make the scenario's row."""
        self.wait_for_jobs(allowed_s)
        settled, count = time.monotonic(), len(self.delivered())
        while time.monotonic() - settled < QUIET_S:
            time.sleep(0.5)
            if (now := len(self.delivered())) != count:
                settled, count = time.monotonic(), now
        for process in self._processes:
            process.popen.send_signal(signal.SIGTERM)
        for process in self._processes:
            process.stop(timeout=30)
        time.sleep(1.0)  # the last exports are on their way
        delivered = Counter(self.delivered())
        published = [job.job_id for job in self.jobs]
        dead_lettered = self.dead_lettered()
        parked = self.parked & set(dead_lettered)
        row = Row(
            fault=self.fault,
            published=len(published),
            lost=[job for job in published if job not in delivered and job not in parked],
            duplicates=sum(count - 1 for count in delivered.values()),
            dead_lettered=dead_lettered,
            from_fault_s=self._after(self.fault_at),
            from_restart_s=self._after(self.restart_at),
            redeliveries=int(latest_totals(self.store.metrics("hoptrace.stage.redeliveries"), {})),
            spans=(self._spans_received(), SPANS_PER_JOB * len(published)),
            note=note,
        )
        ROWS.append(row)
        return row

    def _after(self, moment: float | None) -> float | None:
        if moment is None or self.last_job_at is None:
            return None
        return max(0.0, self.last_job_at - moment)

    def incomplete_traces(self) -> list[str]:
        """Jobs whose traces hold fewer than SPANS_PER_JOB spans: a span that had ended was lost (one that had not is made again)."""
        traces = self.store.traces()
        return [job.job_id for job in self.jobs if len(traces.get(job.trace_id, ())) < SPANS_PER_JOB]

    def _spans_received(self) -> int:
        traces = self.store.traces()
        return sum(len(traces.get(job.trace_id, ())) for job in self.jobs)

    def dead_lettered(self) -> list[str]:
        """Job ids (from the baggage) of the messages parked on the pipeline's dead-letter queues and topics."""
        raw: list[bytes] = []
        client = redis.Redis.from_url(self.redis_url)
        try:
            for queue in CELERY_QUEUES:
                raw += client.lrange(f"{self.namespace}{queue}.dead-letter", 0, -1)
        finally:
            client.close()
        consumer = KafkaConsumer(bootstrap_servers=self.brokers.kafka_bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
        try:
            topics = {f"{self.namespace}{topic}.dead-letter" for topic in KAFKA_STAGES.values()} & consumer.topics()
            if topics:
                consumer.assign([TopicPartition(topic, 0) for topic in topics])
                consumer.seek_to_beginning()
                raw += [value or b"" for record in consumer for _, value in record.headers]
        finally:
            consumer.close()
        return sorted({match.decode() for item in raw for match in JOB_IN_BAGGAGE.findall(item)})


def assert_back_before_the_visibility_timeout(from_restart_s: float | None) -> None:
    """The last job came sooner after the restart than the visibility timeout: what the worker held was put back at once.

    Put back by the worker on reconnecting to Redis, or by the process that replaced a killed one (``clients.celery.visibility``).
    """
    timeout_s = RecoverySettings().visibility_timeout_s
    assert from_restart_s is not None and from_restart_s < timeout_s, (
        f"the last job came {from_restart_s} s after the restart; held messages should be put back at once, not after the {timeout_s} s timeout"
    )
