"""``python -m benchmarks [--quick]``: measure what hoptrace costs per message, print a table, write JSON.

Parse, start the local services, run the chosen sections inside one ``Run`` (which cleans up
every process, topic, group and key it made), report. Exit status: 0, or 1 with ``--strict``
when a target is missed, or 2 when a section failed.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

from benchmarks import celery_hop, celery_plain, cpu, critical, encoding, kafka_hop, memory, recorder, relay, shutdown
from benchmarks.discard import Collectors
from benchmarks.harness import Run
from benchmarks.machine import machine_info
from benchmarks.modes import FULL, QUICK, Mode
from benchmarks.report import Report, Scenario, now, print_report, write_report
from hoptrace import services
from hoptrace.pipeline.settings import Settings
from hoptrace.publish import CONFIRM_EVERY

console = Console(width=None if sys.stdout.isatty() else 150)
app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0] if __doc__ else None)


class Section(str, Enum):
    """A part of the benchmark."""

    cpu = "cpu"
    export = "export"
    kafka = "kafka"
    celery = "celery"
    relay = "relay"
    relay_confluent = "relay-confluent"
    relay_aiokafka = "relay-aiokafka"
    celery_app = "celery-app"
    shutdown = "shutdown"
    memory = "memory"
    recorder = "recorder"
    critical_path = "critical-path"


Measure = Callable[[Run, Collectors, Mode, Callable[[str], None]], list[Scenario]]
SECTIONS: dict[Section, Measure] = {
    Section.cpu: lambda run, collectors, mode, progress: cpu.measure(run, mode, progress),
    Section.export: lambda run, collectors, mode, progress: encoding.measure_section(run, mode, progress),
    Section.kafka: lambda run, collectors, mode, progress: kafka_hop.measure(run, collectors, mode, CONFIRM_EVERY, progress),
    Section.celery: celery_hop.measure,
    Section.relay: lambda run, collectors, mode, progress: relay.measure(run, mode, progress),
    Section.relay_confluent: lambda run, collectors, mode, progress: relay.measure(run, mode, progress, relay.CONFLUENT),
    Section.relay_aiokafka: lambda run, collectors, mode, progress: relay.measure(run, mode, progress, relay.AIOKAFKA),
    Section.celery_app: lambda run, collectors, mode, progress: celery_plain.measure(run, mode, progress),
    Section.shutdown: lambda run, collectors, mode, progress: shutdown.measure(run, collectors, mode, CONFIRM_EVERY, progress),
    Section.memory: lambda run, collectors, mode, progress: memory.measure(run, collectors, mode, CONFIRM_EVERY, progress),
    Section.recorder: lambda run, collectors, mode, progress: recorder.measure(run, mode, progress),
    Section.critical_path: lambda run, collectors, mode, progress: critical.measure_section(run, mode, progress),
}


def _interrupt(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {number}")


def _progress(message: str) -> None:
    console.print(f"[dim]{now().strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Small sizes and 2 rounds: the whole run in about 6 minutes."),
    only: list[Section] = typer.Option(None, "--only", help="Run only this section (repeatable)."),
    rounds: int = typer.Option(None, "--rounds", min=1, help="Rounds of the Kafka, Celery, relay and Celery app sections (default: by mode)."),
    output: Path = typer.Option(None, "--output", help="Folder of the JSON reports (default: .hoptrace/bench)."),
    keep_logs: bool = typer.Option(False, "--keep-logs", help="Keep the child processes' logs (their folder is printed)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a target is missed."),
) -> None:
    """Measure hoptrace's cost per message against real Kafka and Redis; print a table and write a JSON report."""
    mode = (QUICK if quick else FULL).with_rounds(rounds)
    settings = Settings()
    signal.signal(signal.SIGTERM, _interrupt)
    _progress("starting the local services (a no-op when they run)")
    try:
        services.run("up", settings)
    except services.ServiceError as error:
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from error
    chosen = [section for section in Section if not only or section in only]
    with Collectors() as collectors, Run(settings, keep_logs) as run:
        report = Report(mode, run.id, now(), machine_info(settings))
        _progress(f"run {run.id}, {mode.name} mode, sections: {', '.join(section.value for section in chosen)}")
        for section in chosen:
            try:
                report.scenarios += SECTIONS[section](run, collectors, mode, _progress)
            except KeyboardInterrupt:
                report.errors[section.value] = "interrupted"
                break
            except Exception as error:  # noqa: BLE001 - one failing section must not lose the others' results
                report.errors[section.value] = f"{type(error).__name__}: {error}"
                _progress(f"[red]section {section.value} failed[/red]: {error}")
        report.notes.append(f"discarding OTLP receiver got {collectors.sink.received} (decoded, then dropped, in the benchmark process)")
        if keep_logs:
            report.notes.append(f"child logs kept in {run.dir}")
    report.finished = now()
    print_report(report, console)
    path = write_report(report, output or settings.state_dir / "bench")
    console.print(f"report: {path} ({(report.finished - report.started).total_seconds():.0f} s)", highlight=False)
    if report.errors:
        raise typer.Exit(2)
    if strict and not all(check.passed for check in report.checks()):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
