"""The flight recorder: the memory its buffer takes at the default bound, and how long a keep takes to bring a whole job out.

``memory`` (in a fresh process, ``python -m benchmarks.recorder --hops N --result PATH``): hops of
hoptrace's in-process publisher and processor (``benchmarks.cpu.prepare``, ``always_off`` with the
recorder on; each hop a publish and the consume of the record it wrote, a trace of its own) until
the buffer has been full a while; the memory it holds, traced by ``tracemalloc``
(everything allocated since the hops began and still alive, after a collection), against what the
recorder counts, and how many spans that is: in a worker, a message leaves two spans (its process
span and the send of its forward), so the history at 1,000 messages/s is spans held / 2,000 s.

``keep-latency``: examples/orders under ``hoptrace worker`` on the real brokers at 1 % head
sampling (default batch processor settings: a 5 s schedule), jobs published by a lingering
``hoptrace publish`` with ``"fail_at": "notify"``: each fails its first notify attempt, the keep is
announced, and the spans the four earlier hops' processes (and the publisher) hold come out. Per
job, from the end of the failed attempt's span (the keep follows it at once) to the arrival at the
OTLP receiver of the last span the recorders handed over (those carrying ``hoptrace.keep.reason``).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import signal
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path

from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.processes import ChildFailed, wait_until
from benchmarks.report import Scenario
from hoptrace.view.otlp_decode import ReceivedSpan
from hoptrace.view.receiver import OtlpReceiver
from tests.memory_store import TelemetryStore

SECTION = "recorder"
SPANS_PER_MESSAGE = 2
"""Spans a worker makes per message: its process span and the send span of its one forward."""
RATE = 1000.0
"""Messages per second the history is given at (the issue's figure)."""
ORDERS = "hoptrace.examples.orders:pipeline"
KEEP_REASON = "hoptrace.keep.reason"
HANDED_OVER = 8
"""Spans of a job failing at notify that its processes' recorders hold when it is kept: four sends and four process spans."""


def fill(hops: int) -> dict[str, float]:
    """Run HOPS unsampled hops with the recorder on; what its buffer holds then, counted and traced."""
    from benchmarks.cpu import prepare
    from hoptrace.pipeline.recorder import install

    setup = prepare("always_off", recorded=True)
    recorder = setup.recorder
    assert recorder is not None
    install(recorder)
    hop = setup.fresh_hop
    assert hop is not None
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(hops):
        hop()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    held = recorder.spans_held()
    return {"traced_bytes": traced, "counted_bytes": recorder.size_bytes(), "bound_bytes": recorder.max_bytes, "spans_held": held}


def _memory(run: Run, mode: Mode) -> list[Scenario]:
    result = run.file("recorder-memory.json")
    command = ["python", "-m", "benchmarks.recorder", "--hops", str(mode.recorder_hops), "--result", str(result)]
    child = run.start("recorder-memory", command, run.env())
    child.wait(900)
    child.check()
    found = json.loads(result.read_text())
    history = found["spans_held"] / SPANS_PER_MESSAGE / RATE
    details = {**found, "hops": mode.recorder_hops}
    return [
        Scenario(SECTION, "buffer MB", "buffer memory at the default bound", "MB", [found["traced_bytes"] / 1e6], description=(
            "memory the recorder's buffer holds once full (tracemalloc, after gc), at the default bound of "
            f"{found['bound_bytes'] / 2**20:.0f} MiB counted"), details=details),
        Scenario(SECTION, "history s", "history the buffer holds at 1,000 messages/s", "s", [history], description=(
            f"spans held at the default bound / {SPANS_PER_MESSAGE} spans per message / {RATE:,.0f} messages/s"), details=details),
    ]  # fmt: skip


class ArrivalStore(TelemetryStore):
    """A telemetry store that notes when each span arrived (epoch ns)."""

    def __init__(self) -> None:
        """An empty store."""
        super().__init__()
        self.arrived: dict[str, int] = {}

    def add_spans(self, spans: Iterable[ReceivedSpan]) -> None:
        """Keep SPANS, noting their arrival."""
        spans = list(spans)
        now = time.time_ns()
        for span in spans:
            self.arrived.setdefault(span.span_id, now)
        super().add_spans(spans)


def _latencies(store: ArrivalStore, trace_ids: Iterable[str]) -> list[float]:
    """Per kept trace: seconds from the end of its first failed attempt to the arrival of the last span a recorder handed over."""
    traces = store.traces()
    found = []
    for trace_id in trace_ids:
        handed = [span for span in traces.get(trace_id, []) if KEEP_REASON in span.attributes]
        failed = [span for span in handed if span.status_code == "ERROR" and span.kind == "CONSUMER"]
        if failed:
            trigger = min(span.end_ns for span in failed)
            found.append((max(store.arrived[span.span_id] for span in handed) - trigger) / 1e9)
    return found


def _keep_latency(run: Run, mode: Mode, progress: Callable[[str], None]) -> list[Scenario]:
    store = ArrivalStore()
    with OtlpReceiver(store) as receiver:
        namespace = run.namespace("recorder")
        extra = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
            "PYTHONUNBUFFERED": "1",
        }
        env = run.env(namespace, extra)
        workers = run.start("recorder-workers", ["python", "-m", "hoptrace", "worker", ORDERS, "--no-monitor"], env)
        workers.wait_for_output("ready.", 120)
        jobs = mode.recorder_jobs
        payload = json.dumps({"order_id": "late-{n}", "fail_at": "notify"})
        command = ["python", "-m", "hoptrace", "publish", ORDERS, "validate", "--count", str(jobs), "--payload", payload, "--linger", "600"]
        publisher = run.start("recorder-publisher", command, env)
        publisher.wait_for_output("lingering", 120)
        trace_ids = re.findall(r"^trace ([0-9a-f]{32})  job ", publisher.output(), re.MULTILINE)
        try:
            wait_until(lambda: len(_latencies(store, trace_ids)) >= jobs and _settled(store, trace_ids), 180, "every kept job whole")
            done = True
        except ChildFailed:  # the rows say how many jobs came out whole
            done = False
        publisher.popen.send_signal(signal.SIGINT)
        publisher.wait(60)
        workers.stop()
        seconds = _latencies(store, trace_ids)
    progress(f"recorder keep latency: {len(seconds)} of {jobs} jobs kept whole{'' if done else ' (timed out waiting for the rest)'}")
    details = {"jobs": jobs, "kept": len(seconds), "sampling": 0.01}
    return [
        Scenario(SECTION, f"keep {name}", f"keep to the whole job at the receiver, {name}", "s", [value], description=(
            "per job failing at notify (after Kafka, Celery, Kafka hops): end of the failed attempt's span to the arrival of the "
            "last span the recorders handed over, at the OTLP receiver"), details={**details, "seconds": seconds})
        for name, value in (("p50", _quantile(seconds, 0.5)), ("p95", _quantile(seconds, 0.95)))
    ]  # fmt: skip


def _settled(store: ArrivalStore, trace_ids: list[str]) -> bool:
    """Whether every job's trace holds the spans the recorders handed over: four sends, four process spans (the last one failed)."""
    traces = store.traces()
    return all(sum(KEEP_REASON in span.attributes for span in traces.get(trace_id, [])) >= HANDED_OVER for trace_id in trace_ids)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def measure(run: Run, mode: Mode, progress: Callable[[str], None]) -> list[Scenario]:
    """The recorder's memory at its default bound, and the keep latency across real hops."""
    scenarios = _memory(run, mode)
    for scenario in scenarios:
        progress(f"recorder {scenario.label}: {scenario.median:,.1f} {scenario.unit}")
    return scenarios + _keep_latency(run, mode, progress)


def main() -> None:
    """Parse the command line, fill a recorder, write what it holds as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recorder", description="The flight recorder's buffer at its default bound.")
    parser.add_argument("--hops", type=int, default=60_000)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    args.result.write_text(json.dumps(fill(args.hops)))


if __name__ == "__main__":
    main()
