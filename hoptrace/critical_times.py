"""``hoptrace.stage.critical.time``: where finished jobs spent their end-to-end time, per stage and cause, read from Jaeger.

No worker can know a job's critical path: it takes every span of the job. ``hoptrace monitor``
with ``HOPTRACE_JAEGER_URL`` asks that Jaeger, every interval, for the pipeline's newest traces
(``LIMIT`` per service, of the last ``LOOKBACK_S``), takes each job once it is finished (its
last span ended ``SETTLE_S`` ago: the exporters' batches have arrived), computes its critical
path (``view.critical_path``) and adds each segment's seconds to an observable counter with
``hoptrace.pipeline``, ``hoptrace.stage`` (a declared stage, else ``?``) and ``hoptrace.cause``.
So ``rate()`` of a series over the rate of their sum is that stage's and cause's share of the
critical path of the jobs finished meanwhile.

Bounded: at most ``LIMIT`` jobs per service and read, so above ``LIMIT / interval`` jobs per
second the counter is a sample of the jobs (the shares hold; the seconds count fewer jobs);
``SEEN`` job ids are remembered (oldest forgotten first). A Jaeger that does not answer is said
once in the log, and reading goes on when it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from hoptrace.pipeline import semconv
from hoptrace.pipeline.stages import Pipeline
from hoptrace.view.critical_path import UNKNOWN_STAGE, critical_path
from hoptrace.view.hops import span_text
from hoptrace.view.jaeger import JaegerError, JaegerQuery
from hoptrace.view.otlp_decode import ReceivedSpan

logger = logging.getLogger(__name__)

LIMIT = 200
"""Traces asked of Jaeger per service and read."""
LOOKBACK_S = 600.0
"""How far back a read looks: a job is counted when it finished within this window (and is still held by Jaeger)."""
SETTLE_S = 10.0
"""A job is counted once its last span ended this long ago."""
SEEN = 100_000
"""Job (trace) ids remembered as counted."""


class CriticalTimes:
    """The critical-path seconds of one pipeline's finished jobs, per stage and cause; a thread reads Jaeger every interval."""

    def __init__(self, jaeger: JaegerQuery, pipeline: Pipeline, meter_provider: MeterProvider | None = None, interval_s: float = 15.0) -> None:
        """Count PIPELINE's jobs found in JAEGER into a counter on METER_PROVIDER (default: the global one), reading every INTERVAL_S."""
        self._jaeger = jaeger
        self._pipeline = pipeline.name
        self._stages = {stage.name for stage in pipeline}
        self._interval_s = interval_s
        self._totals: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._failing = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        meter = metrics.get_meter("hoptrace", meter_provider=meter_provider)
        description = "Seconds of finished jobs' critical paths spent in this stage for this cause (read from Jaeger by the monitor)."
        meter.create_observable_counter(semconv.STAGE_CRITICAL_TIME, [self._observe], "s", description)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            totals = dict(self._totals)
        base = {semconv.PIPELINE: self._pipeline}
        return [Observation(seconds, {**base, semconv.STAGE: stage, semconv.CAUSE: cause}) for (stage, cause), seconds in totals.items()]

    def count(self, traces: dict[str, list[ReceivedSpan]], now_ns: int | None = None) -> int:
        """Add the critical paths of the finished, not yet counted jobs of this pipeline among TRACES; how many were added."""
        settled_before = (now_ns if now_ns is not None else time.time_ns()) - round(SETTLE_S * 1e9)
        added = 0
        for trace_id, spans in traces.items():
            if trace_id in self._seen or not spans or max(span.end_ns for span in spans) > settled_before:
                continue
            if not any(span_text(span, semconv.PIPELINE) == self._pipeline for span in spans):
                continue
            self._remember(trace_id)
            with self._lock:
                for segment in critical_path(spans):
                    key = (segment.stage if segment.stage in self._stages else UNKNOWN_STAGE, segment.cause)
                    self._totals[key] = self._totals.get(key, 0.0) + segment.duration_s
            added += 1
        return added

    def _remember(self, trace_id: str) -> None:
        self._seen[trace_id] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)

    def read_once(self) -> bool:
        """Ask Jaeger once and count what finished; False when it did not answer (said once per outage)."""
        try:
            traces = self._jaeger.recent_spans(LIMIT, lookback_s=LOOKBACK_S)
        except JaegerError as error:
            if not self._failing:
                self._failing = True
                logger.warning("critical path times: %s; they are read again when it answers", error)
            return False
        if self._failing:
            self._failing = False
            logger.info("critical path times: Jaeger answers again")
        self.count(traces)
        return True

    def start(self) -> None:
        """Read every interval on a daemon thread until ``stop()``."""
        self._thread = threading.Thread(target=self._read_until_stopped, name="hoptrace-critical-times", daemon=True)
        self._thread.start()

    def _read_until_stopped(self) -> None:
        while not self._stopping.is_set():
            self.read_once()
            self._stopping.wait(self._interval_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading; waits at most TIMEOUT_S for a read under way."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
