"""Which Kafka offsets a consumer group was handed before: a record below the mark is a redelivery.

Kafka has no redelivered flag. A stage worker leaves one in its group's committed offsets: right
after each poll it commits, with every partition's processed position, the end of the batch it
now holds as the commit's metadata (``hoptrace.handed-out=<offset>``). When the worker dies before
it commits that batch as processed, the next owner of the partition (a restarted process, another
member) reads the mark at assignment and flags each record below it as redelivered. That costs
nothing extra: one commit per batch, as before, only made after the poll instead of after the batch.

Detected: every record processed again after a crash, a kill -9, a failed commit or a lost
session, by this process or another member of the group; and records this process takes again
itself (a retry after dead-lettering failed). Also flagged, as Celery's and AMQP's ``redelivered``
are: records of the dead worker's batch that it held but had not started yet (at most one batch).
Not detected: a redelivery after the mark commit itself failed (the broker was unreachable right
after the poll; the previous mark still covers older batches), or after offsets were reset by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from hoptrace.workers.stage_consumer import Committed, Partition

logger = logging.getLogger(__name__)

MARK_PREFIX = "hoptrace.handed-out="


def mark(processed: int, handed_out: int) -> Committed:
    """The commit of a partition processed up to PROCESSED (next offset to read) whose records up to HANDED_OUT are in a worker's hands."""
    return Committed(processed, f"{MARK_PREFIX}{handed_out}" if handed_out > processed else "")


def read_mark(committed: Committed | None) -> int:
    """The offset below which a group's records were handed out, from its committed offset and metadata; -1 when nothing was."""
    if committed is None:
        return -1
    metadata = committed.metadata or ""
    if metadata.startswith(MARK_PREFIX):
        try:
            return max(committed.offset, int(metadata[len(MARK_PREFIX) :]))
        except ValueError:
            logger.warning("ignoring a malformed hand-out mark %r in a committed offset", metadata)
    return committed.offset


class HandedOut:
    """Per partition, the offset below which records were handed to a worker of the group before."""

    def __init__(self) -> None:
        """Know nothing yet: every partition still has to be learned."""
        self._below: dict[Partition, int] = {}
        self._unlearned: set[Partition] = set()

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """PARTITIONS were (re)assigned: their marks must be read from the group before their first record is taken."""
        self._unlearned.update(partitions)

    def unlearned(self, partitions: Iterable[Partition]) -> list[Partition]:
        """Those of PARTITIONS whose mark is not read yet."""
        return [partition for partition in partitions if partition in self._unlearned]

    def learn(self, marks: Mapping[Partition, int]) -> None:
        """Take the group's MARKS (from ``read_mark``); what this process handed out itself stays too."""
        for partition, below in marks.items():
            self._below[partition] = max(self._below.get(partition, -1), below)
            self._unlearned.discard(partition)

    def take(self, partition: Partition, offset: int) -> bool:
        """Record that the record at OFFSET is handed to the processor now; whether it was handed out before."""
        below = self._below.get(partition, -1)
        self._below[partition] = max(below, offset + 1)
        return offset < below
