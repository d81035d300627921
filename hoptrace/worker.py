"""``hoptrace worker``: run the workers of a pipeline's stages until stopped, and supervise them.

One process runs either one Kafka stage or all the chosen Celery stages (``hoptrace.stage_runner``);
one more, ``hoptrace monitor``, reports their queue depth and lag. Asked for one process, ``run``
runs its stages in this process; asked for more, it starts one child per group and
supervises them: SIGTERM/SIGINT is passed on; a child that exits is started again after a
pause that doubles while it keeps failing (1 s up to 30 s, back to 1 s once it ran a minute),
and the others keep running. With ``exit_on_child_failure`` (for a process manager that
restarts the whole group) the first child to exit stops them all instead.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from hoptrace.loader import load_stages
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stages import CeleryTransport, KafkaTransport, Pipeline, Stage
from hoptrace.runtime import configure_logging
from hoptrace.stage_runner import CeleryOptions, run_celery_stages, run_kafka_stage

logger = logging.getLogger(__name__)

CHILD_STOP_TIMEOUT_S = 15.0
RESTART_DELAY_S = 1.0
"""Pause before a child that exited is started again; it doubles with each quick failure."""
RESTART_DELAY_MAX_S = 30.0
STABLE_AFTER_S = 60.0
"""A child that ran this long before it exited is restarted after RESTART_DELAY_S again."""
SUPERVISE_TICK_S = 0.2


def _groups(stages: Sequence[Stage]) -> list[list[Stage]]:
    """One group per Kafka stage, one for all Celery stages."""
    groups = [[stage] for stage in stages if isinstance(stage.transport, KafkaTransport)]
    celery = [stage for stage in stages if isinstance(stage.transport, CeleryTransport)]
    return groups + ([celery] if celery else [])


def run(
    spec: str,
    pipeline: Pipeline,
    stages: Sequence[Stage],
    settings: Settings,
    options: CeleryOptions,
    monitor: bool,
    exit_on_child_failure: bool = False,
) -> int:
    """Run the workers of STAGES (and, with MONITOR, a depth monitor of them); return the exit status.

    With more than one process, a child that exits is restarted, or with EXIT_ON_CHILD_FAILURE stops them all (status 1).
    """
    groups = _groups(stages)
    if len(groups) == 1 and not monitor:
        group = groups[0]
        if isinstance(group[0].transport, KafkaTransport):
            run_kafka_stage(pipeline, group[0], settings)
        else:
            run_celery_stages(pipeline, settings, options)
        return 0
    return _supervise(commands(spec, stages, options, monitor), exit_on_child_failure)


def commands(spec: str, stages: Sequence[Stage], options: CeleryOptions, monitor: bool) -> list[list[str]]:
    """The command lines (for ``python -m``) of one process per group of STAGES, and of their monitor."""
    stage_args = [[arg for stage in group for arg in ("--stage", stage.name)] for group in _groups(stages)]
    lines = [["hoptrace", "worker", spec, "--no-monitor", *options.argv(), *args] for args in stage_args]
    if monitor:
        lines.append(["hoptrace", "monitor", spec, *(arg for args in stage_args for arg in args)])
    return lines


@dataclass
class _Child:
    """One supervised process: its command line, and when and how often it was (re)started."""

    line: list[str]
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    delay_s: float = RESTART_DELAY_S
    restart_at: float | None = None
    """When the exited process is due to start again; None while it runs."""

    @property
    def name(self) -> str:
        """What the process runs, for log lines: ``monitor`` or ``worker of <stages>``."""
        stages = [self.line[i + 1] for i, arg in enumerate(self.line[:-1]) if arg == "--stage"]
        return self.line[1] if self.line[1] != "worker" else f"worker of {', '.join(stages) or 'every stage'}"

    def start(self) -> None:
        """Start the process (again)."""
        self.popen = subprocess.Popen([sys.executable, "-m", *self.line])
        self.started = time.monotonic()
        logger.info("supervisor: started %s as pid %d", self.name, self.popen.pid)

    def exited(self) -> int | None:
        """The exit status when the running process has exited (and is not yet due to restart); else None."""
        if self.restart_at is not None or self.popen is None:
            return None
        return self.popen.poll()

    def schedule_restart(self, status: int, now: float) -> None:
        """Plan the restart after the process exited with STATUS: RESTART_DELAY_S after a stable run, else twice the last pause."""
        if now - self.started >= STABLE_AFTER_S:
            self.delay_s = RESTART_DELAY_S
        self.restart_at = now + self.delay_s
        assert self.popen is not None
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        logger.warning("supervisor: %s (pid %d) %s; restart %d in %.0f s", self.name, self.popen.pid, how, self.restarts + 1, self.delay_s)

    def restart_if_due(self, now: float) -> None:
        """Start the exited process again once its pause is over."""
        if self.restart_at is None or now < self.restart_at:
            return
        self.restart_at = None
        self.restarts += 1
        self.delay_s = min(self.delay_s * 2, RESTART_DELAY_MAX_S)
        self.start()


def _supervise(lines: list[list[str]], exit_on_child_failure: bool = False) -> int:
    """Run one child per LINE until SIGTERM/SIGINT, restarting those that exit; return the exit status."""
    children = [_Child(line) for line in lines]
    for child in children:
        child.start()
    stopping = False

    def stop(number: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    failed = False
    while not stopping and not failed:
        now = time.monotonic()
        for child in children:
            status = child.exited()
            if status is not None and exit_on_child_failure:
                logger.error("supervisor: %s exited with status %d; stopping every worker (--exit-on-child-failure)", child.name, status)
                failed = True
            elif status is not None:
                child.schedule_restart(status, now)
            child.restart_if_due(now)
        time.sleep(SUPERVISE_TICK_S)
    stop_processes([child.popen for child in children if child.popen is not None])
    restarts = sum(child.restarts for child in children)
    if restarts:
        logger.info("supervisor: restarted workers %d times in all", restarts)
    return 1 if failed else 0


def stop_processes(children: Sequence[subprocess.Popen[bytes]], timeout_s: float = CHILD_STOP_TIMEOUT_S) -> None:
    """SIGTERM every child still running, then SIGKILL those not gone after TIMEOUT_S in all."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("worker %d did not stop within %.0f s; killing it", child.pid, timeout_s)
            child.kill()
            child.wait()


def main(spec: str, stage_names: list[str], options: CeleryOptions, monitor: bool, exit_on_child_failure: bool = False) -> int:
    """``hoptrace worker``: run the stages STAGE_NAMES (all when empty) of the pipeline SPEC; the exit status."""
    configure_logging()
    settings = Settings()
    pipeline, stages = load_stages(spec, settings.namespace, stage_names)
    return run(spec, pipeline, stages, settings, options, monitor, exit_on_child_failure)
