"""Run real worker processes in tests: start, wait until ready, stop with SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

_OWN_FRAME = re.compile(r'File "[^"]*/(?:hoptrace|pipeline|workers|producers|examples|tests)/')
_TRACEBACK = "Traceback (most recent call last):"


def without_telemetry_settings() -> dict[str, str]:
    """This process's environment without its ``OTEL_*`` and ``HOPTRACE_*`` variables: a child configured only by what the test gives it."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("OTEL_", "HOPTRACE_"))}


def own_tracebacks(output: str) -> list[str]:
    """The tracebacks in OUTPUT that pass through hoptrace's (or the tests') code.

    A client library's own, logged from its threads with no frame of ours (kafka-python logs some
    socket errors of its IO thread that way, and recovers), are left out: they are not a crash of ours.
    """
    return [block for block in output.split(_TRACEBACK)[1:] if _OWN_FRAME.search(block)]


class Process:
    """A child process whose output goes to a log file the test can read."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str | re.Pattern[str], timeout: float) -> None:
        """Block until TEXT (a string, or a pattern to search for) appears in the output; fail with the output when it does not."""
        deadline = time.monotonic() + timeout
        while not (text.search(self.output()) if isinstance(text, re.Pattern) else text in self.output()):
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited ({self.popen.returncode}) before printing {text!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after TIMEOUT seconds; return the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode


@contextmanager
def running(args: Sequence[str], log: Path, env: Mapping[str, str], ready: str, timeout: float = 60.0, cwd: Path | None = None) -> Iterator[Process]:
    """Start ARGS (in CWD, default this process's), wait for the READY text in its output, stop it on exit."""
    with log.open("wb") as out:
        popen = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True, cwd=cwd)
    process = Process(popen, log)
    try:
        process.wait_for_output(ready, timeout)
        yield process
    finally:
        process.stop()
