"""Finding the worker processes to kill: a supervisor's children by the stages on their command line, their own children."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """The running children of PID."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(each) for each in text.split()]


def command_line(pid: int) -> list[str]:
    """PID's arguments; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except FileNotFoundError:
        return []


def child_running(supervisor: int, stage: str) -> int | None:
    """The pid of SUPERVISOR's child that runs STAGE (``--stage STAGE`` on its command line), if one runs."""
    for pid in children(supervisor):
        line = command_line(pid)
        if any(arg == "--stage" and value == stage for arg, value in zip(line, line[1:], strict=False)):
            return pid
    return None
