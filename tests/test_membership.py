"""Host slots (``workers.membership``): the lowest free one, given up when its process dies, even if that process forked children."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hoptrace.workers.membership import claim

FORKS_THEN_DIES = """
import os, sys, time
from pathlib import Path
from hoptrace.workers.membership import claim
slot = claim("orders", "celery", Path(sys.argv[1]))
child = os.fork()
if child == 0:
    for stream in (1, 2):  # let the test read the parent's output to its end
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream)
    time.sleep(60)  # a pool process outliving its parent
    os._exit(0)
print(child, slot.instance_id, flush=True)
os._exit(0)  # dies without closing anything, as a kill -9 would
"""


def test_two_live_claims_get_two_slots_and_a_closed_one_is_taken_again(tmp_path: Path) -> None:
    first, second = claim("orders", "celery", tmp_path), claim("orders", "celery", tmp_path)
    assert [first.instance_id[-2:], second.instance_id[-2:]] == ["-0", "-1"]
    first.lock.close()
    assert claim("orders", "celery", tmp_path).instance_id == first.instance_id


def test_a_slot_is_free_once_its_process_died_even_while_a_child_it_forked_lives(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", FORKS_THEN_DIES, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True)
    child, dead_ones = done.stdout.split()
    try:
        assert Path(f"/proc/{child}").exists()  # the forked child still runs
        assert claim("orders", "celery", tmp_path).instance_id == dead_ones
    finally:
        subprocess.run(["kill", "-9", child], check=False)
