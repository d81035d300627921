"""``hoptrace worker`` supervises its processes: one that dies comes back (with backoff), the others run on.

Real ``hoptrace worker`` processes of examples/orders on the local Kafka and Redis; a child is
killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from hoptrace.pipeline.settings import Settings
from hoptrace.worker import RESTART_DELAY_MAX_S, RESTART_DELAY_S, STABLE_AFTER_S, _Child
from tests.conftest import run_hoptrace
from tests.faults.procs import child_running
from tests.processes import Process
from tests.traces import wait_for, wait_for_outbox

ORDERS = "hoptrace.examples.orders:pipeline"
STAGES = ("validate", "ship", "charge")

pytestmark = pytest.mark.usefixtures("namespace_cleanup")


def _children(supervisor: Process, namespace: str) -> dict[str, int]:
    """Once every orders stage consumes: the pids of the SUPERVISOR's children, by stage."""
    for topic in ("orders.placed", "orders.charged"):
        supervisor.wait_for_output(f"assigned partitions {namespace}{topic}[", 60)
    pids = {stage: child_running(supervisor.popen.pid, stage) for stage in STAGES}
    assert None not in pids.values(), (pids, supervisor.output())
    return pids  # type: ignore[return-value]


def test_a_killed_worker_process_is_restarted_and_the_others_keep_running(
    settings: Settings, namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable
) -> None:
    with hoptrace_worker(ORDERS, "--no-monitor") as supervisor:
        pids = _children(supervisor, namespace)
        os.kill(pids["validate"], signal.SIGKILL)
        assert wait_for(lambda: child_running(supervisor.popen.pid, "validate") not in (None, pids["validate"]), timeout=10), supervisor.output()
        supervisor.wait_for_output(f"supervisor: worker of validate (pid {pids['validate']}) was killed by signal 9; restart 1 in 1 s", 5)
        assert {stage: child_running(supervisor.popen.pid, stage) for stage in ("ship", "charge")} == {"ship": pids["ship"], "charge": pids["charge"]}
        # The restarted stage consumes again: jobs get through every stage.
        run_hoptrace(hoptrace_env, "publish", ORDERS, "validate", "--count", "3")
        assert len(wait_for_outbox(settings, namespace, 3, timeout=60)) == 3, supervisor.output()
        assert supervisor.popen.poll() is None
    assert supervisor.popen.returncode == 0, supervisor.output()
    assert "supervisor: restarted workers 1 times in all" in supervisor.output()


def test_with_exit_on_child_failure_one_dead_worker_stops_them_all(namespace: str, hoptrace_worker: Callable) -> None:
    with hoptrace_worker(ORDERS, "--no-monitor", "--exit-on-child-failure") as supervisor:
        pids = _children(supervisor, namespace)
        os.kill(pids["ship"], signal.SIGKILL)
        status = supervisor.popen.wait(timeout=30)
    assert status == 1, supervisor.output()
    assert "exited with status -9; stopping every worker (--exit-on-child-failure)" in supervisor.output()
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids.values()), timeout=5), pids


def _exit_of(child: _Child) -> int:
    assert child.popen is not None
    child.popen.wait(timeout=30)
    status = child.exited()
    assert status is not None
    return status


def test_restarts_back_off_while_a_process_keeps_failing_and_start_over_after_a_stable_run() -> None:
    child = _Child(["json.tool", "--help"])  # python -m json.tool --help: exits at once, status 0
    child.start()
    delays = []
    for _ in range(7):
        now = time.monotonic()
        child.schedule_restart(_exit_of(child), now)
        assert child.restart_at is not None
        delays.append(round(child.restart_at - now, 3))
        child.restart_if_due(child.restart_at)
    assert delays == [RESTART_DELAY_S * 2**n for n in range(5)] + [RESTART_DELAY_MAX_S] * 2
    assert child.restarts == 7

    status = _exit_of(child)
    child.started -= STABLE_AFTER_S  # as if it had run a minute
    now = time.monotonic()
    child.schedule_restart(status, now)
    assert child.restart_at == now + RESTART_DELAY_S
    child.restart_if_due(now)  # not due yet
    assert child.restarts == 7
    assert child.popen is not None and child.popen.returncode == 0
