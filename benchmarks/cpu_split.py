"""Where a measured process's CPU goes: per thread, and in the garbage collector, from a start mark to now (and the wall clock).

Imported by the benchmark's client processes (``benchmarks.kafka_clients``) and by the relay scripts,
which run as scripts (``from cpu_split import CpuSplit``): so it uses the standard library only.

In-process loops hide what only a long-running process pays: a client's I/O thread working per
record, and garbage collections walking every object alive (in-flight records, the start-up heap).
``CpuSplit`` reports both: CPU seconds per Python thread (by name; what the process used beyond
them is ``(native threads)``, such as librdkafka's), and wall seconds inside collections per
generation (a collection holds the GIL: its wall time is the CPU of the thread that ran it).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path
from typing import Any

NATIVE = "(native threads)"


def stat_cpu_seconds(stat_path: Path) -> float:
    """User + system CPU seconds in a /proc ``stat`` file (of a process or of one of its threads)."""
    stat = stat_path.read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def threads_cpu_s() -> dict[str, float]:
    """CPU seconds used so far by each live Python thread of this process, by name (threads of one name summed)."""
    found: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.native_id is None:
            continue
        try:
            seconds = stat_cpu_seconds(Path(f"/proc/{os.getpid()}/task/{thread.native_id}/stat"))
        except FileNotFoundError:  # ended meanwhile
            continue
        found[thread.name] = found.get(thread.name, 0.0) + seconds
    return found


class CpuSplit:
    """From its making: the process's CPU, per thread, and the time spent in garbage collections per generation."""

    def __init__(self) -> None:
        """Mark the start now, and watch collections from now on."""
        self._gc_started = 0.0
        self.mark()
        gc.callbacks.append(self._collected)

    def mark(self) -> None:
        """Start again from now: the clock and CPU per thread now, no collection yet."""
        self._began = time.perf_counter()
        self._cpu = time.process_time()
        self._threads = threads_cpu_s()
        self._gc_s = [0.0, 0.0, 0.0]
        self._gc_runs = [0, 0, 0]

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        generation = info["generation"]
        self._gc_s[generation] += time.perf_counter() - self._gc_started
        self._gc_runs[generation] += 1

    def result(self) -> dict[str, Any]:
        """Since the start: ``seconds`` (wall clock), ``cpu_s``, ``cpu_by_thread_s`` (with ``NATIVE``), ``gc_s``, ``gc_runs``; ends the watch."""
        seconds, cpu = time.perf_counter() - self._began, time.process_time() - self._cpu
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
        by_thread = {name: seconds - self._threads.get(name, 0.0) for name, seconds in threads_cpu_s().items()}
        by_thread[NATIVE] = max(0.0, cpu - sum(by_thread.values()))
        return {"seconds": seconds, "cpu_s": cpu, "cpu_by_thread_s": by_thread, "gc_s": list(self._gc_s), "gc_runs": list(self._gc_runs)}
