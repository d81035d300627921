"""`hoptrace watch`: workers export to its embedded receiver and its view shows their jobs and stages."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from hoptrace.view.formatting import to_text
from hoptrace.view.sqlite_store import SqliteTraceStore
from hoptrace.watch import snapshot
from tests.conftest import free_port, run_hoptrace
from tests.processes import running
from tests.traces import published_jobs

ORDERS = "hoptrace.examples.orders:pipeline"


def test_watch_receives_from_workers_and_shows_jobs_and_stages(
    namespace: str, hoptrace_env: dict[str, str], hoptrace_worker: Callable, tmp_path: Path
) -> None:
    grpc_port, http_port, db = free_port(), free_port(), tmp_path / "traces.sqlite"
    command = [sys.executable, "-m", "hoptrace", "watch", "--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    command += ["--db", str(db), "--refresh", "0.3", "--jobs", "1"]
    with running(command, tmp_path / "watch.log", {"COLUMNS": "120"}, ready="hoptrace watch: OTLP gRPC on") as watch:
        env = {**hoptrace_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}"}
        with hoptrace_worker(ORDERS, env=env):
            (job,) = published_jobs(run_hoptrace(env, "publish", ORDERS, "validate", "--payload", '{"order_id": "w-1"}').stdout)
            # The tree's last hop, taken and done (the stage table also names the queue, so match the tree line).
            notify_done = re.compile(rf"└── notify  celery {re.escape(namespace)}notifications  queue \S+  handler \S+  ok")
            watch.wait_for_output(notify_done, timeout=60)
    screen = watch.output()
    last = screen[screen.rindex(f"trace {job.trace_id}") :]
    for stage, system, destination in (("validate", "kafka", "orders.placed"), ("charge", "celery", "payments"), ("ship", "kafka", "orders.charged")):
        assert f"{stage}  {system} {namespace}{destination}" in last
    assert "msg/s" in last and "depth/lag" in last  # the stage table follows the tree
    assert "\x1b[" not in screen  # plain text: stdout is not a terminal
    assert len(SqliteTraceStore(db).trace(job.trace_id)) == 8


def test_each_job_of_the_view_says_its_slowest_part(tmp_path: Path) -> None:
    """Below each tree, the longest segment of the job's critical path: ship's handler took 1.2 s of 1.34 s (no broker needed)."""
    from tests.test_render import ORDERS, RETRIED

    with SqliteTraceStore(tmp_path / "traces.sqlite") as store:
        store.add_spans([*ORDERS, *RETRIED])
        lines = [line.rstrip() for line in to_text(snapshot(store, store, jobs=2, window_s=60), width=100).splitlines()]
    assert lines[:12] == [
        f"job b2b2b2b2  trace {2:032x}  135ms  retried",
        "├── validate  kafka orders.placed  queue 4.0ms  2 attempts  retried",
        "│   ├── attempt 1 12ms ERROR OrderRejected",
        "│   └── attempt 2 3.0ms ok",
        "└── charge  celery payments  queue 9.0ms  handler 5.0ms  ok",
        "slowest part: validate retry_backoff 77%",
        f"job 4f1c2d3e  trace {1:032x}  1.34s  ok",
        "├── validate  kafka orders.placed  queue 5.0ms  handler 12ms  ok",
        "├── charge  celery payments  queue 3.0ms  handler 2.5ms  ok",
        "├── ship  kafka orders.charged  queue 121ms  handler 1.20s  ok",
        "└── notify  celery notifications  queue 850µs  handler 450µs  ok",
        "slowest part: ship handler 90%",
    ]
