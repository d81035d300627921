"""The span spool: spans ended in a process killed -9 are exported by the next process; a clean exit leaves nothing behind.

Real processes export over gRPC into a real OTLP receiver. The killed process's batch processor
waits 10 minutes between exports, so without the spool none of its spans would ever leave it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from hoptrace.pipeline.telemetry import span_spool
from hoptrace.pipeline.telemetry.otlp_wire import SpanEncoder
from hoptrace.pipeline.telemetry.span_spool import FRAME, HEADER, REWRITING, SUFFIX, SpanSpool
from hoptrace.view.receiver import OtlpReceiver
from tests.memory_store import TelemetryStore
from tests.traces import wait_for

ENDS_SPANS = """
import logging, sys, time
from pathlib import Path
from opentelemetry import trace
from hoptrace.pipeline.telemetry import providers

logging.basicConfig(level=logging.INFO)
root, count, then = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
providers.configure("spool-test", spool=root)
tracer = trace.get_tracer("spool-test")
for n in range(count):
    with tracer.start_as_current_span(f"span-{n}", attributes={"n": n}):
        pass
print("ended", flush=True)
if then == "hang":
    time.sleep(600)
if then == "recover":  # wait for the recovery thread: the dead process's file goes once its spans are exported
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(root.rglob("*.spool"))) > 1:
        time.sleep(0.1)
"""


@pytest.fixture
def receiver() -> Iterator[tuple[OtlpReceiver, TelemetryStore]]:
    store = TelemetryStore()
    with OtlpReceiver(store) as running:
        yield running, store


def _env(receiver: OtlpReceiver, schedule_delay_ms: int) -> dict[str, str]:
    return {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": str(schedule_delay_ms),
        "HOPTRACE_RECORDER": "false",
    }


def _run(root: Path, env: dict[str, str], count: int, then: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", ENDS_SPANS, str(root), str(count), then], env=env, capture_output=True, text=True, timeout=60)


def test_the_spans_of_a_process_killed_9_are_exported_by_the_next_one_exactly_once(
    tmp_path: Path, receiver: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    running, store = receiver
    env = _env(running, schedule_delay_ms=600_000)
    doomed = subprocess.Popen([sys.executable, "-c", ENDS_SPANS, str(tmp_path), "50", "hang"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert doomed.stdout is not None and doomed.stdout.readline() == "ended\n"
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
    assert store.spans() == []  # its batch processor had exported nothing

    heir = _run(tmp_path, env, 0, "recover")

    assert heir.returncode == 0, heir.stderr
    assert wait_for(lambda: len(store.spans()) >= 50, timeout=10), len(store.spans())
    spans = store.spans()
    assert sorted(span.name for span in spans) == sorted(f"span-{n}" for n in range(50))
    assert {span.resource["process.pid"] for span in spans} == {doomed.pid}
    assert {span.attributes["n"] for span in spans} == set(range(50))
    assert list(tmp_path.rglob(f"*{SUFFIX}")) == []
    assert "exported 50 spans a process that died had ended but not exported" in heir.stderr


def test_a_clean_exit_exports_through_the_batch_processor_and_leaves_nothing_to_recover(
    tmp_path: Path, receiver: tuple[OtlpReceiver, TelemetryStore]
) -> None:
    running, store = receiver
    env = _env(running, schedule_delay_ms=100)
    done = _run(tmp_path, env, 10, "exit")
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: len(store.spans()) >= 10, timeout=10)
    assert list(tmp_path.rglob(f"*{SUFFIX}")) == []
    _run(tmp_path, env, 0, "recover")
    assert len(store.spans()) == 10


@pytest.fixture
def spooled(tmp_path: Path) -> Iterator[tuple[SpanSpool, list[bytes]]]:
    """A spool of 6 ended spans, and the record each was written as."""
    spool = SpanSpool(tmp_path)
    provider = TracerProvider()
    provider.add_span_processor(spool)
    tracer = provider.get_tracer("spool-test")
    ended = []
    for n in range(6):
        span = tracer.start_span(f"span-{n}")
        span.end()
        ended.append(span)
    try:
        yield spool, [SpanEncoder().encode((span,)) for span in ended]  # what encode_one wrote, byte for byte
    finally:
        spool.close()


def _pending(spool: SpanSpool) -> list[bytes]:
    return list(span_spool._records(spool.path.read_bytes()))


def test_the_file_keeps_the_records_not_yet_disposed_of_and_is_rewritten_past_the_bound(
    spooled: tuple[SpanSpool, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, records = spooled
    assert _pending(spool) == records
    spool.disposed(2)
    assert _pending(spool) == records[2:]
    assert HEADER.unpack_from(spool.path.read_bytes())[0] == 2
    monkeypatch.setattr(span_spool, "COMPACT_BYTES", 1)
    spool.disposed(1)
    assert _pending(spool) == records[3:]
    assert len(spool.path.read_bytes()) == HEADER.size + sum(FRAME.size + len(record) for record in records[3:])  # rewritten
    spool.disposed(3)
    assert spool.path.read_bytes() == HEADER.pack(0)  # emptied once every record is done


def test_a_torn_last_record_and_a_file_left_mid_rewrite_are_read_safely(spooled: tuple[SpanSpool, list[bytes]]) -> None:
    spool, records = spooled
    data = spool.path.read_bytes()
    assert list(span_spool._records(data[:-1])) == records[:-1]
    assert list(span_spool._records(HEADER.pack(REWRITING) + data[HEADER.size :])) == []
