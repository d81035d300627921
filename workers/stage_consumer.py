"""The seam between a Kafka stage's poll loop (``workers.kafka``) and one Kafka client library.

The loop keeps the at-least-once bookkeeping (what was processed, what was sent to commit, the
hand-out marks); a ``StageConsumer`` is what it needs of a client: poll a batch, commit with or
without waiting, seek, and read assignment, positions and committed offsets. Partitions and
commits cross the seam as plain tuples, so the loop imports no client library. Each client's
consumer (``kafka_python``, ``confluent``) calls the loop's ``Rebalance`` side when partitions
come and go, in whatever way its library runs rebalance callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from hoptrace.pipeline.outages import is_outage

MAX_POLL_RECORDS = 50
"""Records per poll, so the most a crashed worker's replacement processes again (kafka-python's default: 500)."""
METADATA_MAX_AGE_MS = 5000
"""How often a consumer refreshes topic metadata: a worker that started before its topic had a leader joins within seconds."""
SESSION_TIMEOUT_MS = 10_000
"""How long a member that stopped heartbeating keeps its partitions (default 45 s); a static member that comes back takes them at once."""
HEARTBEAT_INTERVAL_MS = 1_000
"""How often a member tells the group coordinator it is alive: ten times within the session timeout."""


class Partition(NamedTuple):
    """One partition of a topic (equal to kafka-python's ``TopicPartition``, a tuple of the same two)."""

    topic: str
    partition: int


class Committed(NamedTuple):
    """A committed offset (the next record to read) and the metadata stored with it."""

    offset: int
    metadata: str


class KafkaRecord(Protocol):
    """What the loop reads of a record (kafka-python's ``ConsumerRecord`` has it as is)."""

    @property
    def partition(self) -> int:
        """The record's partition."""
        ...

    @property
    def offset(self) -> int:
        """The record's offset."""
        ...

    @property
    def value(self) -> bytes | None:
        """The record's body."""
        ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None:
        """The record's headers, in order."""
        ...


Batch = list[tuple[Partition, list[KafkaRecord]]]
"""One poll's records, per partition in order."""
Answered = Callable[[Mapping[Partition, Committed], "BaseException | None"], None]
"""Told the broker's answer to a commit sent without waiting: the offsets it was given (the same objects) and the error, if any."""


class ConsumerError(Exception):
    """A client call failed; ``outage`` when the cause is Kafka being unreachable (waited out) rather than a refusal."""

    def __init__(self, message: str, outage: bool) -> None:
        """Say MESSAGE; OUTAGE when Kafka could not be reached."""
        super().__init__(message)
        self.outage = outage

    @classmethod
    def of(cls, error: Exception) -> ConsumerError:
        """The client's ERROR (raise this from it), an outage when ``is_outage`` says so."""
        return cls(f"{type(error).__name__}: {error}", is_outage(error))


@dataclass(frozen=True)
class Subscription:
    """What a stage consumer joins: TOPIC in GROUP, as CLIENT_ID, a static member when GROUP_INSTANCE_ID is given."""

    topic: str
    group: str
    client_id: str
    group_instance_id: str | None = None


class Rebalance(Protocol):
    """The loop's side of a rebalance, called by the client's consumer on the polling thread or its IO loop."""

    def to_commit(self) -> dict[Partition, Committed]:
        """What was processed and is not committed yet: committed before partitions are revoked."""
        ...

    def revoked(self, partitions: Iterable[Partition], error: BaseException | None) -> None:
        """PARTITIONS went to another member (after committing ``to_commit()``, which failed with ERROR when given)."""
        ...

    def lost(self, partitions: Iterable[Partition]) -> None:
        """PARTITIONS were taken away without a chance to commit."""
        ...

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """PARTITIONS are this member's now."""
        ...


class StageConsumer(Protocol):
    """One Kafka client's consumer of a stage's topic, as the poll loop drives it. Client errors come out as ``ConsumerError``."""

    def poll(self, timeout_s: float) -> Batch:
        """At most ``MAX_POLL_RECORDS`` records, waiting up to TIMEOUT_S for the first; empty when none came."""
        ...

    def commit(self, offsets: Mapping[Partition, Committed], answered: Answered | None = None) -> None:
        """Commit OFFSETS: waiting for the broker without ANSWERED; else send and tell ANSWERED during a later poll."""
        ...

    def commit_unanswered(self) -> bool:
        """Whether a commit sent without waiting has no answer yet."""
        ...

    def seek(self, partition: Partition, offset: int) -> None:
        """Read PARTITION from OFFSET at the next poll."""
        ...

    def assignment(self) -> set[Partition]:
        """The partitions this member holds."""
        ...

    def position(self, partition: Partition) -> int | None:
        """The offset of the next record the consumer reads from PARTITION; None when not known without asking the broker."""
        ...

    def committed(self, partition: Partition) -> Committed | None:
        """The group's committed offset of PARTITION and its metadata; None when the group never committed there."""
        ...

    def close(self) -> None:
        """Leave the group and close, committing nothing."""
        ...


Opener = Callable[[Subscription, Rebalance], StageConsumer]
"""How a client makes a stage consumer: subscribed, its rebalances told to the loop."""
