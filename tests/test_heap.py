"""The start-up heap frozen out of the garbage collector's collections (``pipeline.heap``), in processes of their own.

Each case runs in a fresh interpreter: freezing is once per process, and must not touch the test process's heap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import without_telemetry_settings

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
FROZEN = "import gc, json; print(json.dumps([gc.get_freeze_count()]))"
OURS = "hoptrace_kafka,hoptrace_celery,hoptrace_confluent_kafka,hoptrace_aiokafka"
"""hoptrace's instrumentors, as ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names them."""


def _run(script: str, *prefix: str, **env: str) -> list[int]:
    environment = without_telemetry_settings() | {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"} | env
    done = subprocess.run([*prefix, sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_opentelemetry_instrument_with_hoptrace_freezes_the_heap_before_the_application_starts() -> None:
    [frozen] = _run(FROZEN, str(INSTRUMENT))
    assert frozen > 10_000  # the modules, classes and functions of the SDK, the clients and hoptrace
    assert _run(FROZEN) == [0]  # the same interpreter, not instrumented


def test_a_process_where_hoptrace_instruments_nothing_is_left_alone() -> None:
    assert _run(FROZEN, str(INSTRUMENT), OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=OURS) == [0]  # the stock instrumentors only


@pytest.mark.parametrize("value", ["false", "0"])
def test_hoptrace_gc_freeze_off_leaves_the_collector_as_it_is(value: str) -> None:
    assert _run(FROZEN, str(INSTRUMENT), HOPTRACE_GC_FREEZE=value) == [0]


def test_the_heap_is_frozen_once_per_process() -> None:
    script = """
import gc, json
from hoptrace.pipeline import heap
heap.freeze_once()
once = gc.get_freeze_count()
kept = [[] for _ in range(1000)]  # alive, not frozen: a second freeze would take them
heap.freeze_once()
print(json.dumps([once, gc.get_freeze_count()]))
"""
    once, twice = _run(script)
    assert once > 0
    assert twice == once


def test_only_what_is_alive_is_frozen() -> None:
    script = """
import gc, json, weakref
from hoptrace.pipeline import heap
gc.disable()
class Cycle:
    pass
garbage = Cycle(); garbage.me = garbage
gone = weakref.ref(garbage)
del garbage  # cyclic garbage, waiting for a collection
heap.freeze_once()
print(json.dumps([gone() is None, gc.get_freeze_count()]))
"""
    collected, frozen = _run(script)
    assert collected  # collected before the freeze: nothing already garbage is kept for ever
    assert frozen > 0
