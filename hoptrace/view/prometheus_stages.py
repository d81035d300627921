"""The stage table from Prometheus: what ``SqliteTraceStore.stage_stats`` answers, computed from hoptrace's metrics.

The metric names are those Prometheus has when the OpenTelemetry Collector's prometheus exporter
translates hoptrace's metrics (dots become underscores, the unit ``s`` a ``_seconds`` suffix,
counters get ``_total``; ``{message}`` adds nothing): ``tests/test_observability.py`` checks every
one against a real Collector and Prometheus.

Counts in the window are exact, not extrapolated as ``increase()`` would make them: per series,
the latest value in the window minus the value at its start, or the whole value for a series
born in the window (each process exports its own cumulative series, told apart by ``instance``).
Percentiles are ``histogram_quantile`` over the bucket counts of the window, so they are
interpolated inside a bucket (the embedded store gives a measured value, nearest-rank). Depth
and lag are the latest values in the window; when several monitors report the same queue or
partition, the highest value counts once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.table import Table
from rich.text import Text

from hoptrace.pipeline import semconv
from hoptrace.view.formatting import format_duration, shown
from hoptrace.view.prometheus import PrometheusQuery, Sample, finite, label_matcher
from hoptrace.view.queries import StageStats

CONSUMED = "messaging_client_consumed_messages_total"
PROCESS_DURATION = "messaging_process_duration_seconds"
QUEUE_WAIT = "hoptrace_queue_wait_seconds"
JOB_LATENCY = "hoptrace_job_latency_seconds"
RETRIES = "hoptrace_stage_retries_total"
DEAD_LETTERED = "hoptrace_stage_dead_lettered_total"
QUEUE_DEPTH = "hoptrace_queue_depth"
CONSUMER_LAG = "hoptrace_kafka_consumer_lag"
CONSUMER_LAG_SECONDS = "hoptrace_kafka_consumer_lag_seconds"
QUEUE_OLDEST_AGE = "hoptrace_queue_oldest_age_seconds"


def label(attribute: str) -> str:
    """The Prometheus label of a metric attribute: ``hoptrace.stage`` is ``hoptrace_stage``."""
    return attribute.replace(".", "_")


PIPELINE, STAGE = label(semconv.PIPELINE), label(semconv.STAGE)
SYSTEM, DESTINATION = label(semconv.MESSAGING_SYSTEM), label(semconv.MESSAGING_DESTINATION)
ERROR_TYPE, QUEUE_STATE = label(semconv.ERROR_TYPE), label(semconv.QUEUE_STATE)
_STAGE_LABELS = f"{PIPELINE}, {STAGE}, {SYSTEM}, {DESTINATION}"
_LAG_SERIES = f"{_STAGE_LABELS}, {label(semconv.MESSAGING_CONSUMER_GROUP)}, {label(semconv.MESSAGING_PARTITION)}"


@dataclass(frozen=True)
class PrometheusStageStats(StageStats):
    """A stage's numbers from Prometheus: the stage table's, and what only the metrics know.

    ``messages`` counts attempts (``messaging.process.duration`` observations), as the store counts
    process spans; ``errors`` failed attempts (those with ``error.type``).
    """

    consumed: int
    """Messages handed to a worker in the window (retries not counted again)."""
    dead_lettered: int
    """Messages given up on and sent to the dead-letter topic or queue in the window."""
    job_latency_p95_s: float | None
    """p95 of the jobs' end-to-end time up to the end of this stage; None without observations."""
    oldest_waiting_s: float | None
    """Age of the oldest waiting message: Kafka lag in seconds, or the age of a Redis queue's head; None without a gauge."""


def _in_window(series: str, window: str) -> str:
    """PromQL for how much each counter of SERIES grew in the WINDOW up to the query time, exactly (no extrapolation)."""
    return f"((last_over_time({series}[{window}]) - {series} offset {window}) or last_over_time({series}[{window}]))"


class PrometheusStages:
    """Per-stage numbers of hoptrace's pipelines, read from a Prometheus; stands in for the store in ``hoptrace stages`` and ``watch``."""

    def __init__(self, prometheus: PrometheusQuery, pipeline: str | None = None) -> None:
        """Ask PROMETHEUS about PIPELINE's stages (every pipeline's when None)."""
        self.prometheus = prometheus
        self._selector = label_matcher(PIPELINE, pipeline) if pipeline is not None else label_matcher(PIPELINE, "", "!=")

    def _by_stage(self, promql: str, at_s: float) -> dict[tuple[str, str], list[Sample]]:
        """The samples of PROMQL at AT_S, grouped by (pipeline, stage)."""
        grouped: dict[tuple[str, str], list[Sample]] = {}
        for sample in self.prometheus.query(promql, at_s):
            grouped.setdefault((sample.labels.get(PIPELINE, ""), sample.labels.get(STAGE, "")), []).append(sample)
        return grouped

    def _counts(self, metric: str, window: str, at_s: float, extra: str = "") -> dict[tuple[str, str], list[Sample]]:
        series = f"{metric}{{{self._selector}{extra}}}"
        return self._by_stage(f"sum by ({_STAGE_LABELS}) ({_in_window(series, window)})", at_s)

    def _quantile(self, quantile: float, histogram: str, window: str, at_s: float) -> dict[tuple[str, str], list[Sample]]:
        buckets = _in_window(f"{histogram}_bucket{{{self._selector}}}", window)
        return self._by_stage(f"histogram_quantile({quantile}, sum by ({_STAGE_LABELS}, le) ({buckets}))", at_s)

    def _latest(
        self, gauge: str, series: str, window: str, at_s: float, by: str = _STAGE_LABELS, combine: str = "sum"
    ) -> dict[tuple[str, str], list[Sample]]:
        """Per stage, the latest value of GAUGE in the window: the highest report of each of SERIES, then COMBINE'd per BY."""
        return self._by_stage(f"{combine} by ({by}) (max by ({series}) (last_over_time({gauge}{{{self._selector}}}[{window}])))", at_s)

    def stage_stats(self, window_s: float = 60.0) -> list[PrometheusStageStats]:
        """Per (pipeline, stage), sorted: the numbers of the WINDOW_S seconds up to now. PrometheusError when Prometheus cannot answer."""
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        at_s, window = time.time(), f"{max(1, round(window_s * 1000))}ms"
        found = {
            "messages": self._counts(f"{PROCESS_DURATION}_count", window, at_s),
            "errors": self._counts(f"{PROCESS_DURATION}_count", window, at_s, f", {label_matcher(ERROR_TYPE, '', '!=')}"),
            "retries": self._counts(RETRIES, window, at_s),
            "dead_lettered": self._counts(DEAD_LETTERED, window, at_s),
            "consumed": self._counts(CONSUMED, window, at_s),
            "p50": self._quantile(0.5, PROCESS_DURATION, window, at_s),
            "p95": self._quantile(0.95, PROCESS_DURATION, window, at_s),
            "p99": self._quantile(0.99, PROCESS_DURATION, window, at_s),
            "wait_p95": self._quantile(0.95, QUEUE_WAIT, window, at_s),
            "latency_p95": self._quantile(0.95, JOB_LATENCY, window, at_s),
            "depth": self._latest(QUEUE_DEPTH, f"{_STAGE_LABELS}, {QUEUE_STATE}", window, at_s, f"{_STAGE_LABELS}, {QUEUE_STATE}"),
            "lag": self._latest(CONSUMER_LAG, _LAG_SERIES, window, at_s),
            "oldest": {
                **self._latest(QUEUE_OLDEST_AGE, _STAGE_LABELS, window, at_s, combine="max"),
                **self._latest(CONSUMER_LAG_SECONDS, _LAG_SERIES, window, at_s, combine="max"),
            },
        }
        stages = sorted({key for samples in found.values() for key in samples})
        return [
            _stage(pipeline, stage, {name: samples.get((pipeline, stage), []) for name, samples in found.items()}, window_s)
            for pipeline, stage in stages
        ]


def _stage(pipeline: str, stage: str, found: dict[str, list[Sample]], window_s: float) -> PrometheusStageStats:
    """One stage's record from the samples of each query (NAME -> the stage's samples)."""

    def count(name: str) -> int:
        return round(sum(sample.value for sample in found[name]))

    def seconds(name: str) -> float | None:
        values = [value for sample in found[name] if (value := finite(sample.value)) is not None]
        return max(values) if values else None

    def depth(state: str | None = None) -> float | None:
        samples = [sample for sample in found["depth"] if state is None or sample.labels.get(QUEUE_STATE) == state]
        return sum(sample.value for sample in samples) if samples else None

    labelled = next((sample.labels for samples in found.values() for sample in samples if sample.labels.get(DESTINATION)), {})
    lag = sum(sample.value for sample in found["lag"]) if found["lag"] else None
    messages = count("messages")
    return PrometheusStageStats(
        pipeline=pipeline,
        stage=stage,
        system=labelled.get(SYSTEM),
        destination=labelled.get(DESTINATION),
        messages=messages,
        rate_per_s=messages / window_s,
        handler_p50_s=seconds("p50"),
        handler_p95_s=seconds("p95"),
        handler_p99_s=seconds("p99"),
        queue_wait_p95_s=seconds("wait_p95"),
        errors=count("errors"),
        retries=count("retries"),
        depth=depth() if found["depth"] else lag,
        depth_ready=depth("ready"),
        depth_unacked=depth("unacked"),
        consumed=count("consumed"),
        dead_lettered=count("dead_lettered"),
        job_latency_p95_s=seconds("latency_p95"),
        oldest_waiting_s=seconds("oldest"),
    )


def outcomes_table(stats: Sequence[PrometheusStageStats]) -> Table:
    """What Prometheus adds to the stage table, per stage: messages consumed, dead-lettered, p95 job latency so far, oldest waiting."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    for header in ("stage", "consumed", "dead-lettered", "job p95", "oldest waiting"):
        table.add_column(header, justify="left" if header == "stage" else "right", no_wrap=True)
    several = len({each.pipeline for each in stats}) > 1
    for each in stats:
        table.add_row(
            shown(Text(f"{each.pipeline}/{each.stage}" if several else each.stage)),
            str(each.consumed),
            Text(str(each.dead_lettered), style="red") if each.dead_lettered else "0",
            format_duration(each.job_latency_p95_s),
            format_duration(each.oldest_waiting_s),
        )
    return table
