"""Results of a run: scenarios with raw samples, medians, ratios to their baseline, targets; a table and JSON.

A ``Scenario`` holds every sample of one measured thing; its baseline is another scenario of
the same section measured in the same run. Throughput variants run between two baseline runs
(``benchmarks.schedule``): their paired ratios (value over the mean of the baseline runs around
it) cancel the machine's drift, and their median is the ratio shown and checked against the
targets; the plain ratio of the medians is in the JSON too. Other targets are checked on medians.

``TARGETS`` are issue 20's, in its table's order, then issue 21's (the flight recorder), then earlier ones kept; ``targets_table`` shows
them on their own, each with what this run measured (or that it was not measured).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from benchmarks.modes import Mode


@dataclass
class Scenario:
    """Every sample of one measured thing, e.g. Kafka hop throughput with hoptrace at 100 % sampling."""

    section: str
    key: str
    label: str
    unit: str
    samples: list[float]
    baseline: str | None = None
    """Key of the scenario of the same section this one is compared with."""
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        """The median sample (NaN without samples)."""
        return statistics.median(self.samples) if self.samples else math.nan


@dataclass(frozen=True)
class TargetSpec:
    """A target of the issue: a scenario's median at most (or at least) a value, or its ratio to another's at most (at least) one."""

    row: str
    """The issue's name for it."""
    section: str
    key: str
    kind: Literal["max", "min", "ratio_min", "ratio_max"]
    threshold: float
    against: str | None = None
    """For the ratios: the key of the scenario of the same section the ratio is taken to."""
    cost: bool = False
    """For the ratios: the scenarios are costs (e.g. CPU µs), so the ratio is AGAINST's over this one's: higher is better."""

    @property
    def is_ratio(self) -> bool:
        """Whether the target is on a ratio to another scenario."""
        return self.kind in ("ratio_min", "ratio_max")

    def describe(self, unit: str) -> str:
        """E.g. ``>= 0.80 x none``, ``<= 0.50 x otel-span``, ``>= 0.90 none/this``, ``<= 40 µs`` or ``>= 3 x``."""
        sign = "<=" if self.kind in ("max", "ratio_max") else ">="
        if not self.is_ratio:
            return f"{sign} {self.threshold:g} {unit}"
        return f"{sign} {self.threshold:.2f} {f'{self.against}/this' if self.cost else f'x {self.against}'}"

    def passes(self, measured: float) -> bool:
        """Whether MEASURED meets the target."""
        return measured <= self.threshold if self.kind in ("max", "ratio_max") else measured >= self.threshold


@dataclass(frozen=True)
class Checked:
    """A target and what this run measured for it."""

    spec: TargetSpec
    measured: float
    passed: bool


TARGETS: tuple[TargetSpec, ...] = (
    TargetSpec("CPU per hop, not sampled / one bare SDK span", "cpu", "hop-unsampled", "ratio_max", 0.5, "otel-span"),
    TargetSpec("CPU per hop, sampled / one bare SDK span", "cpu", "hop-sampled", "ratio_max", 1.5, "otel-span"),
    TargetSpec("Kafka hop 1 % vs none", "kafka", "hoptrace-1", "ratio_min", 0.90, "none"),
    TargetSpec("Kafka hop 100 % vs stock", "kafka", "hoptrace-100", "ratio_min", 1.10, "stock"),
    TargetSpec("Celery hop 100 % vs stock", "celery", "hoptrace-100", "ratio_min", 1.05, "stock"),
    TargetSpec("Celery hop 1 % vs none", "celery", "hoptrace-1", "ratio_min", 0.97, "none"),
    TargetSpec("relay: hoptrace drop-in 1 % vs none", "relay", "hoptrace-1", "ratio_min", 0.90, "none", cost=True),
    TargetSpec("relay: hoptrace drop-in 100 % vs stock 100 %", "relay", "hoptrace-100", "ratio_min", 1.10, "stock-100", cost=True),
    TargetSpec("confluent relay: hoptrace drop-in 1 % vs none", "relay-confluent", "hoptrace-1", "ratio_min", 0.90, "none", cost=True),
    TargetSpec("confluent relay: drop-in 100 % vs stock 100 %", "relay-confluent", "hoptrace-100", "ratio_min", 1.05, "stock-100", cost=True),
    TargetSpec("aiokafka relay: hoptrace drop-in 1 % vs none", "relay-aiokafka", "hoptrace-1", "ratio_min", 0.90, "none", cost=True),
    TargetSpec("aiokafka relay: drop-in 100 % vs stock 100 %", "relay-aiokafka", "hoptrace-100", "ratio_min", 1.05, "stock-100", cost=True),
    TargetSpec("Celery app: drop-in vs stock at 100 %", "celery-app", "hoptrace-100", "ratio_min", 1.05, "stock-100"),
    TargetSpec("Celery app: drop-in at 1 % vs none", "celery-app", "hoptrace-1", "ratio_min", 0.95, "none"),
    TargetSpec("recorder on vs off: CPU per unsampled hop, in process", "cpu", "hop-unsampled-recorded", "ratio_max", 1.3, "hop-unsampled"),
    TargetSpec(
        "recorder on vs off: consumer CPU per unsampled hop", "kafka-cpu", "hoptrace-1 consumer", "ratio_max", 1.3, "hoptrace-1-unrecorded consumer"
    ),
    TargetSpec(
        "recorder on vs off: producer CPU per unsampled hop", "kafka-cpu", "hoptrace-1 producer", "ratio_max", 1.3, "hoptrace-1-unrecorded producer"
    ),
    TargetSpec("recorder: buffer memory at the default bound", "recorder", "buffer MB", "max", 64.0),
    TargetSpec("recorder: history at 1,000 messages/s", "recorder", "history s", "min", 60.0),
    TargetSpec("recorder: keep to the whole job at the receiver, p95", "recorder", "keep p95", "max", 5.0),
    TargetSpec("encode + serialize per span", "export", "encode hoptrace", "max", 12.0),
    TargetSpec("encode + serialize per span, vs the SDK", "export", "encode speedup", "min", 3.0),
    TargetSpec("shutdown, collector hung", "shutdown", "collector-silent", "max", 5.0),
    TargetSpec("critical path of a 10,000-span job: a chain", "critical-path", "path: chain of 5,000 hops", "max", 100.0),
    TargetSpec("critical path of a 10,000-span job: a fan-out", "critical-path", "path: chain + fan-out of 3,000", "max", 100.0),
    TargetSpec("critical path of a 10,000-span job: parents missing", "critical-path", "path: fan-out, parents missing", "max", 100.0),
    TargetSpec("peak RSS, collector down minus up", "memory", "down-minus-up", "max", 50.0),
)
"""Issue 20's targets in its order (the Kafka rows: the default install's, crc32c; issue 24's confluent-kafka and aiokafka
relays after the kafka-python relay's), then issue 21's, then the earlier ones kept.

The in-process rows are a ``cpu`` hop over the ``otel-span`` row of the same run (lower is
better); the relay rows are ``none``'s (or the stock instrumentor's) CPU per record over
hoptrace's (higher is better); the others are throughput ratios.
"""


@dataclass
class Report:
    """Everything one run measured, with the run's mode and machine."""

    mode: Mode
    run_id: str
    started: datetime
    machine: dict[str, Any]
    scenarios: list[Scenario] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Sections that failed, with the error."""
    notes: list[str] = field(default_factory=list)
    finished: datetime | None = None

    def find(self, section: str, key: str) -> Scenario | None:
        """The scenario SECTION/KEY, if measured."""
        return next((each for each in self.scenarios if each.section == section and each.key == key), None)

    def ratio(self, scenario: Scenario, against: str | None = None) -> float | None:
        """Median of SCENARIO over the median of AGAINST (default: its baseline); None when either is missing."""
        other = self.find(scenario.section, against or scenario.baseline or "")
        if other is None or not other.samples or not scenario.samples or other.median == 0:
            return None
        return scenario.median / other.median

    def paired_ratios(self, scenario: Scenario) -> list[float] | None:
        """Per-run ratios to the baseline: the bracketing baseline runs' (``details["paired_ratios"]``), else per round."""
        if scenario.details.get("paired_ratios"):
            return list(scenario.details["paired_ratios"])
        other = self.find(scenario.section, scenario.baseline or "")
        if other is None or len(other.samples) != len(scenario.samples) or not scenario.samples:
            return None
        return [mine / theirs for mine, theirs in zip(scenario.samples, other.samples, strict=True) if theirs]

    def compare(self, scenario: Scenario, against: str | None = None) -> tuple[float, bool] | None:
        """SCENARIO relative to AGAINST (default: its baseline), and whether the drift-cancelling paired ratios gave it.

        Against its baseline: the median paired ratio. Against another scenario paired with the same
        baseline: the quotient of both median paired ratios. Otherwise the ratio of the medians.
        """
        target = against or scenario.baseline
        other = self.find(scenario.section, target or "")
        mine = self.paired_ratios(scenario)
        if mine and target == scenario.baseline:
            return statistics.median(mine), True
        theirs = self.paired_ratios(other) if other is not None else None
        if mine and theirs and other is not None and other.baseline == scenario.baseline:
            return statistics.median(mine) / statistics.median(theirs), True
        plain = self.ratio(scenario, target)
        return (plain, False) if plain is not None else None

    def checks(self) -> list[Checked]:
        """Every target whose scenarios were measured, checked (ratios: see ``compare``)."""
        found: list[Checked] = []
        for spec in TARGETS:
            scenario = self.find(spec.section, spec.key)
            if scenario is None or not scenario.samples:
                continue
            measured = scenario.median
            if spec.is_ratio:
                compared = self.compare(scenario, spec.against)
                if compared is None or (spec.cost and not compared[0]):
                    continue
                measured = 1 / compared[0] if spec.cost else compared[0]
            found.append(Checked(spec, measured, spec.passes(measured)))
        return found

    def targets(self) -> list[tuple[TargetSpec, Checked | None]]:
        """Every target in the issue's order, with its check (None when not measured in this run)."""
        checked = {check.spec: check for check in self.checks()}
        return [(spec, checked.get(spec)) for spec in TARGETS]

    def unit(self, spec: TargetSpec) -> str:
        """The unit of SPEC's scenario ("" when not measured)."""
        scenario = self.find(spec.section, spec.key)
        return scenario.unit if scenario is not None else ""

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data: raw samples, medians, ratios, targets, machine and mode."""
        checks = self.checks()
        scenarios = []
        for each in self.scenarios:
            paired = self.paired_ratios(each)
            compared = self.compare(each) if each.baseline else None
            scenarios.append(
                {
                    **asdict(each),
                    "median": _finite(each.median),
                    "ratio_to_baseline": _finite(self.ratio(each)),
                    "paired_ratios": paired,
                    "median_paired_ratio": statistics.median(paired) if paired else None,
                    "ratio_shown": {"value": compared[0], "paired": compared[1]} if compared else None,
                    "targets": [
                        {"target": c.spec.describe(each.unit), "measured": _finite(c.measured), "passed": c.passed}
                        for c in checks
                        if (c.spec.section, c.spec.key) == (each.section, each.key)
                    ],
                }
            )
        return {
            "run_id": self.run_id,
            "mode": asdict(self.mode),
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            "duration_s": (self.finished - self.started).total_seconds() if self.finished else None,
            "machine": self.machine,
            "scenarios": scenarios,
            "targets_passed": all(c.passed for c in checks) if checks else None,
            "targets": [
                {
                    "row": spec.row,
                    "scenario": f"{spec.section}/{spec.key}",
                    "target": spec.describe(self.unit(spec)),
                    "measured": _finite(checked.measured) if checked else None,
                    "passed": checked.passed if checked else None,
                }
                for spec, checked in self.targets()
            ],
            "errors": self.errors,
            "notes": self.notes,
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit in ("msg/s", "task/s"):
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:,.0f} {unit}"


def table(report: Report) -> Table:
    """The results as a rich table: scenario, median, spread, ratio to baseline, target, pass/fail."""
    checks = report.checks()
    out = Table(title=f"hoptrace benchmarks ({report.mode.name} mode, run {report.run_id})", show_lines=False)
    for column in ("section", "scenario", "median", "min .. max", "n", "ratio to baseline", "target", "result"):
        out.add_column(column, justify="right" if column in ("median", "min .. max", "n", "ratio to baseline") else "left")
    previous = ""
    for each in report.scenarios:
        compared = report.compare(each) if each.baseline else None
        mine = [c for c in checks if (c.spec.section, c.spec.key) == (each.section, each.key)]
        spread = f"{_number(min(each.samples), '')}.. {_number(max(each.samples), '')}".strip() if each.samples else "-"
        out.add_row(
            each.section if each.section != previous else "",
            each.key,
            _number(each.median, each.unit),
            spread,
            str(len(each.samples)),
            f"{compared[0]:.2f} x {each.baseline}{' (paired)' if compared[1] else ''}" if compared else "",
            "\n".join(c.spec.describe(each.unit) for c in mine),
            "\n".join((f"[green]pass[/green] ({c.measured:.2f})" if c.passed else f"[red]FAIL[/red] ({c.measured:.2f})") for c in mine),
            end_section=False,
        )
        previous = each.section
    return out


def targets_table(report: Report) -> Table:
    """The issue's targets alone, in its order: what was measured for each, and pass, FAIL or not measured."""
    out = Table(title="targets (issues 20 and 21, then earlier ones)")
    for column in ("row", "scenario", "measured", "target", "result"):
        out.add_column(column, justify="right" if column == "measured" else "left")
    for spec, checked in report.targets():
        unit = report.unit(spec)
        measured = "-" if checked is None else (f"{checked.measured:.2f} x" if spec.is_ratio else _number(checked.measured, unit))
        result = "not measured" if checked is None else ("[green]pass[/green]" if checked.passed else "[red]FAIL[/red]")
        out.add_row(spec.row, f"{spec.section}/{spec.key}", measured, spec.describe(unit), result)
    return out


def print_report(report: Report, console: Console) -> None:
    """Print the table, then what the scenarios are (a description shared by a whole section once), errors, notes, the targets."""
    console.print(table(report))
    shown: set[tuple[str, str]] = set()
    for each in report.scenarios:
        if not each.description or (each.section, each.description) in shown:
            continue
        shown.add((each.section, each.description))
        shared = sum(1 for other in report.scenarios if (other.section, other.description) == (each.section, each.description)) > 1
        name = each.section if shared else f"{each.section}/{each.key}"
        console.print(f"[bold]{name}[/bold]: {each.description}", highlight=False)
    for section, error in report.errors.items():
        console.print(f"[red]section {section} failed:[/red] {error}", highlight=False)
    for note in report.notes:
        console.print(f"- {note}", highlight=False)
    console.print(targets_table(report))


def write_report(report: Report, folder: Path) -> Path:
    """Write the report to FOLDER/<timestamp>.json and FOLDER/latest.json; the timestamped path."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.to_json(), indent=2)
    path = folder / f"{report.started.strftime('%Y%m%dT%H%M%SZ')}-{report.run_id}.json"
    path.write_text(text)
    (folder / "latest.json").write_text(text)
    return path


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(timezone.utc)
