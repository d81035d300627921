"""The pipeline model: stages, their transports, and where each forwards its work.

A pipeline is declared with decorators::

    pipeline = Pipeline("orders", baggage_allowlist=("tenant",))

    @pipeline.stage("validate", kafka_topic="orders.placed", group="validate", forwards_to=("charge",))
    def validate(payload, ctx):
        ctx.forward("charge", payload)

Each stage is checked when it is declared (a name used twice, a transport missing or given
twice, a topic or queue already taken by another stage, an illegal Kafka topic name);
``Pipeline.check()`` then checks the whole (every ``forwards_to`` names a stage that
exists). Workers and publishers call ``check()`` before they start.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from hoptrace.pipeline.semconv import CELERY_TASK_PREFIX, DEAD_LETTER_SUFFIX
from hoptrace.pipeline.time_limits import TimeLimits

if TYPE_CHECKING:
    from hoptrace.pipeline.stage_context import StageContext

Payload = Mapping[str, Any]
Handler = Callable[[Payload, "StageContext"], None]

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
MAX_TOPIC_LENGTH = 249 - len(DEAD_LETTER_SUFFIX)
"""Kafka's limit, less room for the topic's dead-letter twin."""
KAFKA_MAX_POLL_INTERVAL_S = 300.0
"""The Kafka clients' max poll interval (kafka-python's ``max_poll_interval_ms``, librdkafka's ``max.poll.interval.ms``).

A Kafka stage that does not poll again within it loses its partitions.
"""


class PipelineError(ValueError):
    """A pipeline declaration is wrong; the message names the stage and the fix."""


@dataclass(frozen=True)
class KafkaTransport:
    """A stage consumed from a Kafka topic by a consumer group."""

    topic: str
    group: str
    system: ClassVar[str] = "kafka"

    @property
    def destination(self) -> str:
        """The topic."""
        return self.topic


@dataclass(frozen=True)
class CeleryTransport:
    """A stage run as a Celery task consumed from a queue (Redis broker)."""

    queue: str
    task: str
    system: ClassVar[str] = "celery"

    @property
    def destination(self) -> str:
        """The queue."""
        return self.queue


Transport = KafkaTransport | CeleryTransport


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing handler runs again before its message is dead-lettered."""

    max_attempts: int = 3
    backoff_s: float = 0.1
    """Pause before the second attempt; doubled before each further one."""
    outage_deadline_s: float = 240.0
    """How long attempts that failed because a broker was away are run again without counting (``pipeline.outages``).

    Under the Kafka clients' max poll interval (300 s), so a Kafka stage that waits keeps its partitions."""

    def pauses_s(self) -> float:
        """The pauses between all attempts of one message, added up."""
        return sum(self.backoff_s * 2**retry for retry in range(self.max_attempts - 1))


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline: a handler behind a transport."""

    name: str
    transport: Transport
    handler: Handler
    forwards_to: tuple[str, ...] = ()
    links: bool = False
    """Start the process span with a link to the producer instead of as its child (fan-in, batches)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    slow_after_s: float | None = None
    """The objective: a job that reaches this stage later than this after it began is kept whole (flight recorder); None: the pipeline's."""
    time_limits: TimeLimits = field(default_factory=TimeLimits)
    """How long the handler may run per attempt (``pipeline.time_limits``); none set: ``HOPTRACE_SOFT_TIME_LIMIT_S`` / ``HOPTRACE_TIME_LIMIT_S``."""


def check_time_limits(stage: Stage, limits: TimeLimits) -> None:
    """Refuse LIMITS for a Kafka STAGE whose attempts, all at the hard limit, would outlast the poll interval (the group would evict the worker)."""
    if not isinstance(stage.transport, KafkaTransport) or limits.hard_s is None:
        return
    worst_s = stage.retry.max_attempts * limits.hard_s + stage.retry.pauses_s()
    if worst_s >= KAFKA_MAX_POLL_INTERVAL_S:
        raise PipelineError(
            f"stage {stage.name!r}: {stage.retry.max_attempts} attempts at its time limit of {limits.hard_s} s take {worst_s:.0f} s,"
            f" past Kafka's poll interval of {KAFKA_MAX_POLL_INTERVAL_S:.0f} s (the group would take its partitions away);"
            " lower the time limit or the attempts"
        )


@lru_cache(maxsize=1024)
def dead_letter_transport(transport: Transport) -> Transport:
    """Where messages a stage gave up on are parked: ``<topic or queue>.dead-letter`` on the same system."""
    if isinstance(transport, KafkaTransport):
        return KafkaTransport(transport.topic + DEAD_LETTER_SUFFIX, transport.group)
    return replace(transport, queue=transport.queue + DEAD_LETTER_SUFFIX)


class Pipeline:
    """A named set of stages; the unit that workers run and publishers publish into."""

    def __init__(self, name: str, *, baggage_allowlist: tuple[str, ...] = (), slow_after_s: float | None = None) -> None:
        """Create an empty pipeline. BAGGAGE_ALLOWLIST: incoming baggage keys (fnmatch patterns) to keep.

        SLOW_AFTER_S: the objective of the stages that set none (a job later than this at a stage is kept whole);
        None: ``HOPTRACE_SLOW_AFTER_S``, else no objective.
        """
        if not _NAME.fullmatch(name):
            raise PipelineError(f"pipeline name {name!r} must be letters, digits, '_' or '-'")
        self.name = name
        self.baggage_allowlist = baggage_allowlist
        self.slow_after_s = slow_after_s
        self._stages: dict[str, Stage] = {}

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._stages.values())

    def __getitem__(self, name: str) -> Stage:
        try:
            return self._stages[name]
        except KeyError:
            raise PipelineError(f"pipeline {self.name!r} has no stage {name!r}; its stages are: {', '.join(self._stages)}") from None

    def stage(
        self,
        name: str,
        *,
        kafka_topic: str | None = None,
        group: str | None = None,
        celery_queue: str | None = None,
        forwards_to: tuple[str, ...] | str = (),
        links: bool = False,
        retry: RetryPolicy | None = None,
        slow_after_s: float | None = None,
        soft_time_limit_s: float | None = None,
        time_limit_s: float | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a stage run by the decorated handler, on a Kafka topic (with its consumer group) or a Celery queue.

        SOFT_TIME_LIMIT_S and TIME_LIMIT_S bound each attempt of the handler (``pipeline.time_limits``).
        """
        targets = (forwards_to,) if isinstance(forwards_to, str) else tuple(forwards_to)
        try:
            limits = TimeLimits(soft_time_limit_s, time_limit_s)
        except ValueError as error:
            raise PipelineError(f"stage {name!r}: {error}") from None

        def declare(handler: Handler) -> Handler:
            transport = self._transport(name, kafka_topic, group, celery_queue)
            self.add(Stage(name, transport, handler, targets, links, retry or RetryPolicy(), slow_after_s, limits))
            return handler

        return declare

    def _transport(self, name: str, topic: str | None, group: str | None, queue: str | None) -> Transport:
        if (topic is None) == (queue is None):
            raise PipelineError(f"stage {name!r} needs exactly one transport: kafka_topic=... (with group=...) or celery_queue=...")
        if queue is not None:
            if group is not None:
                raise PipelineError(f"stage {name!r} is on Celery queue {queue!r}; group= is for Kafka stages, remove it")
            return CeleryTransport(queue, f"{CELERY_TASK_PREFIX}{self.name}.{name}")
        assert topic is not None
        return KafkaTransport(topic, name if group is None else group)

    @staticmethod
    def _check_stage(stage: Stage) -> None:
        """Refuse a stage whose name or destination Kafka, Celery or hoptrace cannot use."""
        name, transport = stage.name, stage.transport
        if not _NAME.fullmatch(name):
            raise PipelineError(f"stage name {name!r} must be letters, digits, '_' or '-'")
        if isinstance(transport, KafkaTransport):
            topic = transport.topic
            if not _KAFKA_TOPIC.fullmatch(topic) or topic in (".", "..") or len(topic) > MAX_TOPIC_LENGTH:
                raise PipelineError(
                    f"stage {name!r}: {topic!r} is not a legal Kafka topic name "
                    f"(1-{MAX_TOPIC_LENGTH} of letters, digits, '.', '_', '-'; not '.' or '..')"
                )
            if not transport.group:
                raise PipelineError(f"stage {name!r}: the consumer group is empty; give group=... or leave it out to use the stage name")
        elif not transport.queue:
            raise PipelineError(f"stage {name!r}: the Celery queue name is empty")
        check_time_limits(stage, stage.time_limits)

    def add(self, stage: Stage) -> None:
        """Add a stage, refusing a bad name or destination, or one another stage already has."""
        self._check_stage(stage)
        if stage.name in self._stages:
            raise PipelineError(f"pipeline {self.name!r} already has a stage {stage.name!r}; give each stage its own name")
        for other in self._stages.values():
            if (other.transport.system, other.transport.destination) == (stage.transport.system, stage.transport.destination):
                where = f"{stage.transport.system} {stage.transport.destination!r}"
                raise PipelineError(f"stages {other.name!r} and {stage.name!r} both consume {where}; give each its own")
        self._stages[stage.name] = stage

    def check(self) -> Pipeline:
        """Check what spans stages (every forward names an existing stage); return the pipeline."""
        if not self._stages:
            raise PipelineError(f"pipeline {self.name!r} has no stages; declare some with @pipeline.stage(...)")
        for stage in self:
            for target in stage.forwards_to:
                if target not in self._stages:
                    raise PipelineError(
                        f"stage {stage.name!r} forwards to {target!r}, which pipeline {self.name!r} does not have; declare it or fix forwards_to"
                    )
        return self

    def only(self, names: Iterable[str]) -> Pipeline:
        """A copy with just the stages NAMES (forwards to the others are kept, unchecked)."""
        copy = Pipeline(self.name, baggage_allowlist=self.baggage_allowlist, slow_after_s=self.slow_after_s)
        for name in names:
            copy.add(self[name])
        return copy

    def namespaced(self, prefix: str) -> Pipeline:
        """A copy whose topics, groups and queues start with PREFIX (isolates runs sharing one broker)."""
        copy = Pipeline(self.name, baggage_allowlist=self.baggage_allowlist, slow_after_s=self.slow_after_s)
        for stage in self:
            transport = stage.transport
            if isinstance(transport, KafkaTransport):
                moved: Transport = KafkaTransport(prefix + transport.topic, prefix + transport.group)
            else:
                moved = replace(transport, queue=prefix + transport.queue)
            copy.add(replace(stage, transport=moved))
        return copy
