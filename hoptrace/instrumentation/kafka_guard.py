"""Keeping hoptrace's own failures out of the user's kafka-python calls.

Everything the kafka-python wrappers do besides calling the original method runs inside
``contained(kind)``: an exception there is logged (with its traceback the first time for that
kind, at DEBUG after) and swallowed, so the user's loop or send goes on as if hoptrace were not
installed. Exceptions raised by kafka-python itself or by the user's code are never caught here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("hoptrace.instrumentation.kafka")

_reported: set[str] = set()
_lock = threading.Lock()


@contextmanager
def contained(kind: str) -> Iterator[None]:
    """Run the block; an exception in it is logged (once per KIND at WARNING, then at DEBUG) and swallowed."""
    try:
        yield
    except Exception:  # noqa: BLE001 - telemetry must never become the user's failure
        with _lock:
            first = kind not in _reported
            _reported.add(kind)
        if first:
            logger.warning("hoptrace's kafka-python instrumentation failed in %s; the call goes on untraced", kind, exc_info=True)
        else:
            logger.debug("hoptrace's kafka-python instrumentation failed in %s again", kind, exc_info=True)
