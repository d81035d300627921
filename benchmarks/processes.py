"""Child processes of a benchmark run, and what /proc tells about them.

A ``Child`` runs in a session of its own (so stopping it can take its whole process group,
Celery's prefork children included) and writes its output to a log file; ``wait_until`` polls
for a condition while watching children for an early exit; ``peak_rss_kib``, ``cpu_seconds``
and ``thread_cpu_seconds`` read /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from benchmarks.cpu_split import stat_cpu_seconds

T = TypeVar("T")

STOP_TIMEOUT_S = 30.0
"""How long a child gets between SIGTERM and SIGKILL."""
POLL_INTERVAL_S = 0.02


class ChildFailed(RuntimeError):
    """A child process exited early or did not do what was waited for; the message holds its output's tail."""


class Child:
    """A process a run started, in its own session, writing stdout and stderr to a log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        """Wrap POPEN, called NAME in messages, whose output goes to LOG."""
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def output(self, tail: int | None = None) -> str:
        """What the process printed so far; with TAIL, only its last TAIL lines."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    def check(self) -> None:
        """Raise ChildFailed when the process already exited with an error."""
        code = self.popen.poll()
        if code is not None and code != 0:
            raise ChildFailed(f"{self.name} exited with {code}:\n{self.output(40)}")

    def wait_for_output(self, text: str, timeout_s: float) -> None:
        """Block until TEXT appears in the output."""
        wait_until(lambda: text in self.output(), timeout_s, f"{self.name} to print {text!r}", watch=[self])

    def wait(self, timeout_s: float) -> int:
        """Wait for the process to exit by itself; its exit status. Raises ChildFailed on timeout."""
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired as error:
            raise ChildFailed(f"{self.name} did not exit within {timeout_s:.0f} s:\n{self.output(40)}") from error

    def terminate(self) -> None:
        """Send SIGTERM (when still running) without waiting; ``stop()`` or ``wait()`` later."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> float:
        """SIGTERM, then SIGKILL to the process group after TIMEOUT_S; the seconds from SIGTERM to exit."""
        if self.popen.poll() is not None:
            return 0.0
        began = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL the process and everything in its process group; reap it."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()

    def reap_group(self) -> None:
        """After the process exited: SIGKILL what is left of its group (e.g. an orphaned pool process)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until(predicate: Callable[[], T | None], timeout_s: float, what: str, watch: Sequence[Child] = (), interval_s: float = POLL_INTERVAL_S) -> T:
    """Call PREDICATE until it returns something true, and return that; fail after TIMEOUT_S or when a WATCHed child fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        for child in watch:
            child.check()
        if time.monotonic() > deadline:
            outputs = "".join(f"\n--- {child.name}:\n{child.output(30)}" for child in watch)
            raise ChildFailed(f"timed out after {timeout_s:.0f} s waiting for {what}{outputs}")
        time.sleep(interval_s)


def peak_rss_kib(pid: int) -> int:
    """The peak resident set size of process PID so far (``VmHWM`` in /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


def thread_cpu_seconds(pid: int, thread_id: int) -> float:
    """User + system CPU seconds used so far by one thread (its native id: the main thread's is PID) of process PID."""
    return stat_cpu_seconds(Path(f"/proc/{pid}/task/{thread_id}/stat"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process PID and its live descendants (from /proc)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += stat_cpu_seconds(Path(f"/proc/{current}/stat"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # exited meanwhile
    return total
