"""The critical path of big jobs: milliseconds to compute it for 10,000 spans, against summarizing the same job.

``python -m benchmarks.critical`` prints the medians. Three jobs of 10,000 spans each: a chain of
5,000 hops (publish + process), a chain of 2,000 hops whose last stage fans out to 3,000 messages,
and the same fan-out with every parent missing (the walk then jumps by time). Each round times
``critical_path`` and, right after it, ``hops.group_hops`` of the same spans (what the tree and a
job's status are built on, and a part of the path's own work), so the ratio says what the walk adds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Run
from benchmarks.modes import Mode
from benchmarks.report import Scenario
from hoptrace.pipeline import semconv
from hoptrace.view.critical_path import critical_path
from hoptrace.view.hops import group_hops
from hoptrace.view.otlp_decode import ReceivedSpan

SECTION = "critical-path"
SPANS = 10_000
TRACE_ID = "0" * 31 + "1"


def _span(number: int, parent: int | None, kind: str, stage: str, start_ms: float, end_ms: float) -> ReceivedSpan:
    """One hoptrace span of stage STAGE: a publish (PRODUCER) or a process (CONSUMER) span, times in ms from 0."""
    operation = "send" if kind == "PRODUCER" else "process"
    attributes = {semconv.STAGE: stage, semconv.MESSAGING_DESTINATION: stage, semconv.MESSAGING_OPERATION_TYPE: operation}
    if kind == "CONSUMER":
        attributes[semconv.ATTEMPT] = 1
    parent_id = None if parent is None else f"{parent:016x}"
    start, end = round(start_ms * 1e6), round(end_ms * 1e6)
    return ReceivedSpan(TRACE_ID, f"{number:016x}", parent_id, f"{operation} {stage}", kind, start, end, attributes, "UNSET", "", (), (), {}, "b")


def _chain(hops: int, first: int = 1) -> tuple[list[ReceivedSpan], float]:
    """HOPS hops, each published inside the previous handler; the spans, and when the last handler ends (ms)."""
    spans, parent, at = [], None, 0.0
    for hop in range(hops):
        publish, process = first + 2 * hop, first + 2 * hop + 1
        spans += [_span(publish, parent, "PRODUCER", f"s{hop % 50}", at, at + 1), _span(process, publish, "CONSUMER", f"s{hop % 50}", at + 2, at + 5)]
        parent, at = process, at + 4
    return spans, at + 1


def jobs() -> dict[str, list[ReceivedSpan]]:
    """The three jobs of 10,000 spans, by name."""
    chain, _ = _chain(SPANS // 2)
    head, end = _chain(2_000)  # its last process span is number 4,000
    fan = list(head)
    for member in range(3_000):  # each published by the chain's last handler
        publish, process = len(fan) + 1, len(fan) + 2
        last = end + 2 + member % 97
        fan += [_span(publish, 2 * 2_000, "PRODUCER", "fan", end - 1, end), _span(process, publish, "CONSUMER", "fan", end + 1, last)]
    orphans = [dataclasses.replace(span, parent_span_id=None) for span in fan]
    return {"chain of 5,000 hops": chain, "chain + fan-out of 3,000": fan, "fan-out, parents missing": orphans}


def _ms(function: Callable[[], object]) -> float:
    """Wall milliseconds of one call."""
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1e3


def _hops(spans: list[ReceivedSpan]) -> object:
    """The job's hops, as the tree builds them: spans by start, and by id."""
    ordered = sorted(spans, key=lambda span: span.start_ns)
    return group_hops(ordered, {span.span_id: span for span in ordered})


def measure(rounds: int) -> dict[str, Any]:
    """Per job: the milliseconds of ``critical_path`` and of grouping its hops in each of ROUNDS alternated rounds."""
    results: dict[str, Any] = {}
    for name, spans in jobs().items():
        assert len(spans) == SPANS, (name, len(spans))
        path_ms, hops_ms = [], []
        for _ in range(rounds):
            path_ms.append(_ms(lambda spans=spans: critical_path(spans)))
            hops_ms.append(_ms(lambda spans=spans: _hops(spans)))
        results[name] = {"critical_path_ms": path_ms, "hops_ms": hops_ms}
    return results


def measure_section(run: Run, mode: Mode, progress: Callable[[str], None]) -> list[Scenario]:
    """Run ``measure`` in a fresh process; per job, a scenario of the path (baseline: grouping the same job's hops)."""
    result = run.file("critical.json")
    child = run.start("critical", ["python", "-m", "benchmarks.critical", "--rounds", str(mode.encode_rounds), "--result", str(result)], run.env())
    child.wait(600)
    child.check()
    results: dict[str, Any] = json.loads(result.read_text())
    scenarios = []
    for name, figures in results.items():
        key = f"path: {name}"
        description = f"ms to compute the critical path of a {SPANS:,}-span job ({name}), one call per round"
        scenarios.append(Scenario(SECTION, f"hops: {name}", f"group hops: {name}", "ms", figures["hops_ms"], description=description))
        scenarios.append(Scenario(SECTION, key, f"critical path: {name}", "ms", figures["critical_path_ms"], f"hops: {name}", description))
        progress(f"{SECTION} {name}: {scenarios[-1].median:.0f} ms")
    return scenarios


def main() -> None:
    """Measure, print the medians; with ``--result``, write every round's figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.critical", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args()
    results = measure(args.rounds)
    if args.result:
        args.result.write_text(json.dumps(results))
    for name, figures in results.items():
        path, hops = statistics.median(figures["critical_path_ms"]), statistics.median(figures["hops_ms"])
        print(f"{name:28s} critical path {path:6.1f} ms   group hops {hops:6.1f} ms")


if __name__ == "__main__":
    main()
