"""Keeping hoptrace's own failures out of the user's Kafka client calls (kafka-python, confluent-kafka, aiokafka).

Everything the Kafka wrappers do besides calling the original method runs inside
``contained(kind)``: an exception there is logged (with its traceback the first time for that
kind, at DEBUG after) and swallowed, so the user's loop or send goes on as if hoptrace were not
installed. Exceptions raised by the client itself or by the user's code are never caught here.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("hoptrace.instrumentation.kafka")

_reported: set[str] = set()
_lock = threading.Lock()


class contained:  # noqa: N801 - used as a function: ``with contained("KafkaProducer.send"):``
    """Run the block; an exception in it is logged (once per KIND at WARNING, then at DEBUG) and swallowed.

    A class, not a generator context manager: it wraps every send and every record handed out.
    """

    __slots__ = ("_kind",)

    def __init__(self, kind: str) -> None:
        """Guard a block of hoptrace's work within the client call KIND."""
        self._kind = kind

    def __enter__(self) -> None:
        """Nothing to set up."""

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> bool:
        """Swallow (and log) an ``Exception`` of the block; anything else goes on."""
        if error is None or not isinstance(error, Exception):
            return False
        with _lock:
            first = self._kind not in _reported
            _reported.add(self._kind)
        if first:
            logger.warning("hoptrace's Kafka instrumentation failed in %s; the call goes on untraced", self._kind, exc_info=error)
        else:
            logger.debug("hoptrace's Kafka instrumentation failed in %s again", self._kind, exc_info=error)
        return True
