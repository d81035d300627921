"""A stable, unique identity for each stage process of a host: a Kafka stage's ``group.instance.id`` (KIP-345), a Celery worker's held set.

A process that replaces a crashed one must present the crashed one's id: the broker then hands
it that member's partitions at once, instead of waiting out the dead member's session (and a
Celery worker puts back the messages its predecessor held, ``clients.celery.visibility``). The ids
are slots claimed with an exclusive ``flock`` on one file per slot: the kernel drops the lock
when its process dies, however it dies, so a restarted process claims the lowest free slot (its
predecessor's), and two live processes never share one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOCK_DIR = Path(tempfile.gettempdir()) / "hoptrace-kafka-members"
"""Where the slot locks live: one folder per host (or container), whatever the state directory."""
MAX_SLOTS = 1024
MAX_INSTANCE_ID = 249
"""Kafka's limit on a group.instance.id."""


class NoFreeSlot(RuntimeError):
    """Every member slot of a group is held by a live process on this host."""


@dataclass(frozen=True)
class Membership:
    """A claimed slot: its ``group.instance.id``, held until the process exits."""

    instance_id: str
    lock: IO[bytes]
    """The open, locked slot file; closing it gives the slot up."""


def _legal(text: str) -> str:
    """TEXT with every character a group.instance.id may not hold replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def claim(group: str, stage: str, lock_dir: Path = LOCK_DIR) -> Membership:
    """Claim the lowest free member slot of GROUP on this host for STAGE's consumer; raise NoFreeSlot when none is left."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(group.encode()).hexdigest()[:16]
    host = socket.gethostname()  # made legal with the whole id below
    for slot in range(MAX_SLOTS):
        lock = (lock_dir / f"{digest}-{slot}.lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        # A forked child (a Celery pool process) would share the lock, and hold it after this process died: it drops its copy.
        os.register_at_fork(after_in_child=lock.close)
        return Membership(_legal(f"hoptrace-{stage}-{host}-{slot}")[-MAX_INSTANCE_ID:], lock)
    raise NoFreeSlot(f"all {MAX_SLOTS} member slots of consumer group {group!r} are held on this host; stop some of its workers")
