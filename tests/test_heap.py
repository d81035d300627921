"""The start-up heap frozen out of the garbage collector's collections (``pipeline.heap``), in processes of their own.

Each case runs in a fresh interpreter: freezing is once per process, and must not touch the test process's heap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FIRST_MESSAGE = """
import gc, json
from hoptrace.instrumentation import dropin
before = gc.get_freeze_count()
dropin.hooks("heap-test")  # what the first message of instrumented code does
after = gc.get_freeze_count()
dropin.hooks("heap-test-2")  # another pipeline's first message: frozen once per process
print(json.dumps([before, after, gc.get_freeze_count()]))
"""


def _run(script: str, **env: str) -> list[int]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("HOPTRACE_", "OTEL_"))} | env
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_first_message_of_instrumented_code_freezes_the_heap_once() -> None:
    before, after, later = _run(FIRST_MESSAGE)
    assert before == 0
    assert after > 10_000  # the modules, classes and functions of the SDK, the clients and hoptrace
    assert later == after


@pytest.mark.parametrize("value", ["false", "0"])
def test_hoptrace_gc_freeze_off_leaves_the_collector_as_it_is(value: str) -> None:
    assert _run(FIRST_MESSAGE, HOPTRACE_GC_FREEZE=value) == [0, 0, 0]


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
