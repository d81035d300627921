"""`hoptrace demo`, the README's main job: its report matches the trace store, and a dead worker is named."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from hoptrace.pipeline import semconv
from hoptrace.pipeline.settings import Settings
from hoptrace.view.critical_path import critical_path, dominant
from hoptrace.view.critical_view import LONGEST, critical_path_table
from hoptrace.view.formatting import to_text
from hoptrace.view.hops import span_text
from hoptrace.view.sqlite_store import SqliteTraceStore
from hoptrace.view.tree import trace_tree
from tests.traces import chain

STAGES = ("validate", "charge", "ship", "notify")
WIDTH = 120


def _hoptrace(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(WIDTH), "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "hoptrace", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_demo_prints_a_four_hop_trace_and_the_stage_table_of_what_the_store_holds(settings: Settings, tmp_path: Path) -> None:
    db = tmp_path / "traces.sqlite"
    result = _hoptrace("demo", "--jobs", "50", "--db", str(db))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "50 of 50 jobs went validate → charge → ship → notify" in out

    (trace_id,) = re.findall(r"^job [0-9a-f]{8}  trace ([0-9a-f]{32})", out, re.MULTILINE)
    store = SqliteTraceStore(db)
    spans = store.trace(trace_id)
    assert len(chain(spans)) == 8
    assert to_text(trace_tree(spans), width=WIDTH).strip() in out

    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in STAGES}
    assert list(rows) == list(STAGES)
    stats = {stat.stage: stat for stat in store.stage_stats(window_s=3600) if stat.pipeline == "orders"}
    for stage in STAGES:
        messages, errors, depth = rows[stage][3], rows[stage][-2], rows[stage][-1]
        assert (stage, messages, errors, depth) == (stage, "50", "0", "0")
        assert stats[stage].messages >= 50  # earlier demos in the same store may add more

    path = critical_path(spans)  # the slowest job's, under its tree
    assert to_text(critical_path_table(path), width=WIDTH).strip() in out
    longest = dominant(path)
    assert longest is not None and f"{longest.cause}  " in out and LONGEST in out

    as_json = _hoptrace("trace", trace_id, "--json", "--db", str(db))
    assert as_json.returncode == 0, as_json.stderr
    exported = json.loads(as_json.stdout)
    assert (exported["trace_id"], len(exported["spans"])) == (trace_id, 8)
    assert {span["trace_id"] for span in exported["spans"]} == {trace_id}
    assert [span["span_id"] for span in exported["spans"]] == [span.span_id for span in chain(spans)]
    assert exported["critical_path"] == [
        {"stage": each.stage, "cause": each.cause, "start_unix_nano": each.start_ns, "duration_s": each.duration_s} for each in path
    ]
    # The walk starts at the span that ends last: notify's, unless ship's handler, which published to notify, ended after it.
    last_stage = span_text(max(spans, key=lambda span: span.end_ns), semconv.STAGE)
    assert last_stage in STAGES[-2:], last_stage
    assert list(dict.fromkeys(each.stage for each in path)) == list(STAGES[: STAGES.index(last_stage) + 1])
    shown = _hoptrace("trace", trace_id, "--db", str(db)).stdout
    assert "critical path" in shown and to_text(critical_path_table(path), width=WIDTH).strip() in shown


def _charge_worker(demo: int) -> int | None:
    """The pid of the demo's worker process for the charge stage, once it runs."""
    pattern = r"hoptrace worker hoptrace.examples.orders:pipeline --no-monitor .*--stage charge"
    found = subprocess.run(["pgrep", "-P", str(demo), "-f", pattern], capture_output=True, text=True, check=False)
    pids = [int(pid) for pid in found.stdout.split()]
    return pids[0] if pids else None


def test_a_dead_charge_worker_is_named_instead_of_hanging(settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    demo = subprocess.Popen(
        [sys.executable, "-m", "hoptrace", "demo", "--jobs", "20", "--timeout", "15", "--db", str(tmp_path / "t.sqlite")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while (pid := _charge_worker(demo.pid)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid is not None, "the demo never started charge's worker"
    os.kill(pid, signal.SIGKILL)
    out, _ = demo.communicate(timeout=120)
    assert demo.returncode == 1, out
    assert "20 of 20 jobs are stuck at stage 'charge'" in out
