"""What a worker tells its probes: whether it is ready, and a heartbeat of its loop, in a file of its own.

Each Kafka stage, Celery worker and monitor writes ``$HOPTRACE_STATE_DIR/health/<name>.json``
(``{"ready": bool, "beat": epoch seconds, "pid": int}``, replaced atomically); ``hoptrace probe``
reads it, so Kubernetes and Compose probes cost one small file read, no broker call. A
Celery worker writes the file of each of its stages.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

MONITOR = "monitor"
"""The name of the monitor's health file."""
BEAT_EVERY_S = 1.0
"""Most often a heartbeat is written."""


def health_path(state_dir: Path, name: str) -> Path:
    """The health file of NAME (a stage, or ``monitor``) under STATE_DIR."""
    return state_dir / "health" / f"{name}.json"


class HealthFile:
    """The health files of one process: ready or not, and a heartbeat written at most once a second."""

    def __init__(self, state_dir: Path, names: list[str]) -> None:
        """Write the files of NAMES (stages, or ``monitor``) under STATE_DIR; not ready until told."""
        self._paths = [health_path(state_dir, name) for name in names]
        self._ready = False
        self._last = 0.0
        self.beat(force=True)

    def ready(self, ready: bool) -> None:
        """Say whether the worker is ready (a Kafka stage has partitions; a Celery worker consumes)."""
        if ready != self._ready:
            self._ready = ready
            self.beat(force=True)

    def beat(self, force: bool = False) -> None:
        """The worker's loop is alive; written at most every ``BEAT_EVERY_S`` unless FORCE. Never raises."""
        now = time.time()
        if not force and now - self._last < BEAT_EVERY_S:
            return
        self._last = now
        body = json.dumps({"ready": self._ready, "beat": now, "pid": os.getpid()})
        for path in self._paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(f".{os.getpid()}.tmp")
                partial.write_text(body)
                partial.replace(path)
            except OSError as error:  # a read-only or full disk fails the probes, never the worker
                logger.debug("cannot write health file %s: %s", path, error)


def read_health(state_dir: Path, name: str) -> tuple[bool, float] | None:
    """(ready, seconds since the last heartbeat) of NAME; None when it never wrote one or the file is unreadable."""
    try:
        state = json.loads(health_path(state_dir, name).read_text())
        return bool(state["ready"]), max(0.0, time.time() - float(state["beat"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
