"""One benchmark run's resources: unique names, child processes, Kafka topics and groups, Redis keys.

Everything a run creates is registered here and removed by ``Run.close()`` (also on failure
or Ctrl-C): child processes are stopped (their whole process group, so Celery's prefork
children go too), consumer groups and topics are deleted, and Redis keys holding the run id
are deleted.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from types import TracebackType

import redis
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from benchmarks import REPOSITORY_ROOT
from benchmarks.processes import STOP_TIMEOUT_S, Child, wait_until
from hoptrace.pipeline.settings import Settings

logger = logging.getLogger(__name__)

UNACKED_KEY, UNACKED_INDEX_KEY = "unacked", "unacked_index"
"""kombu's Redis keys of delivered, not yet acknowledged messages (shared by every worker on the broker)."""
GROUP_EXPIRY_S = 50.0
"""How long clean-up retries deleting a consumer group whose killed member has not left (kafka-python's session: 45 s)."""


def child_environment(
    settings: Settings, namespace: str | None = None, extra: Mapping[str, str] | None = None, path_first: Sequence[Path] = ()
) -> dict[str, str]:
    """The environment of a benchmark child: this one without ``OTEL_*`` and hoptrace settings, plus the brokers and EXTRA.

    PATH_FIRST folders come first on its ``PYTHONPATH`` (e.g. a shim hiding an installed package).
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "HOPTRACE_", "BENCH_"))}
    inherited = filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))
    pythonpath = [*map(str, path_first), str(REPOSITORY_ROOT), *inherited]
    env.update(
        {
            "HOPTRACE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "HOPTRACE_REDIS_URL": settings.redis_url,
            "HOPTRACE_STATE_DIR": str(settings.state_dir),
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath)),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if namespace:
        env["HOPTRACE_NAMESPACE"] = namespace
    env.update(extra or {})
    return env


class Run:
    """The resources of one benchmark run; a context manager that cleans them all up."""

    def __init__(self, settings: Settings, keep_logs: bool = False) -> None:
        """A run on the brokers of SETTINGS; with KEEP_LOGS the children's logs stay on disk (their folder is printed)."""
        self.settings = settings
        self.id = uuid.uuid4().hex[:8]
        self.keep_logs = keep_logs
        self.dir = Path(tempfile.mkdtemp(prefix=f"hoptrace-bench-{self.id}-"))
        self._children: list[Child] = []
        self._topics: list[str] = []
        self._groups: list[str] = []

    def __enter__(self) -> Run:
        """The run."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Clean up."""
        self.close()

    def namespace(self, label: str) -> str:
        """A ``HOPTRACE_NAMESPACE`` unique to this run and LABEL (legal in topic, group and queue names)."""
        return f"bench-{self.id}-{label}."

    def file(self, name: str) -> Path:
        """A path in the run's scratch folder."""
        return self.dir / name

    def env(self, namespace: str | None = None, extra: Mapping[str, str] | None = None, path_first: Sequence[Path] = ()) -> dict[str, str]:
        """A child environment (see ``child_environment``) for this run's brokers."""
        return child_environment(self.settings, namespace, extra, path_first)

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> Child:
        """Start ARGS (``python`` is this interpreter) in the repository root, in a session of its own; registered for clean-up."""
        log = self.file(f"{len(self._children):03d}-{name}.log")
        argv = [sys.executable if arg == "python" else arg for arg in args]
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env), cwd=REPOSITORY_ROOT, start_new_session=True)
        child = Child(name, popen, log)
        self._children.append(child)
        return child

    @cached_property
    def admin(self) -> KafkaAdminClient:
        """An admin client of the Kafka cluster."""
        return KafkaAdminClient(bootstrap_servers=self.settings.kafka_servers, client_id=f"hoptrace-bench-{self.id}")

    @cached_property
    def redis(self) -> redis.Redis:
        """A client of the Redis broker."""
        return redis.Redis.from_url(self.settings.redis_url)

    def create_topic(self, topic: str, partitions: int = 1) -> str:
        """Create TOPIC (deleted when the run ends, or earlier with ``drop_topic``); return its name."""
        self.admin.create_topics([NewTopic(topic, partitions, 1)])
        self._topics.append(topic)
        return topic

    def track_group(self, group: str) -> str:
        """Remember consumer group GROUP, to delete it when the run ends (or earlier with ``drop_groups``)."""
        self._groups.append(group)
        return group

    def wait_assigned(self, group: str, timeout_s: float, watch: Sequence[Child] = ()) -> None:
        """Block until GROUP is stable with a member that has partitions assigned (the consumer is ready)."""

        def assigned() -> bool:
            try:
                found = self.admin.describe_groups([group]).get(group, {})
            except KafkaError as error:  # a fresh broker has no group coordinator until its offsets topic exists
                if error.retriable:
                    return False
                raise
            members = found.get("members") or []
            return found.get("group_state") == "Stable" and any(
                (member.get("member_assignment") or {}).get("assigned_partitions") for member in members
            )

        wait_until(assigned, timeout_s, f"consumer group {group} to get its partitions", watch, interval_s=0.05)

    def drop_topics(self, topics: Iterable[str] | None = None) -> None:
        """Delete TOPICS (default: every topic this run created and still has); failures are logged."""
        chosen = list(self._topics if topics is None else topics)
        if chosen:
            try:
                self.admin.delete_topics(chosen)
            except Exception as error:  # noqa: BLE001 - clean-up carries on
                logger.warning("could not delete topics %s: %s", chosen, error)
        self._topics = [topic for topic in self._topics if topic not in chosen]

    def drop_groups(self, groups: Iterable[str] | None = None) -> list[str]:
        """Delete consumer GROUPS (default: every group this run used); those still holding members are kept, and returned."""
        chosen = list(self._groups if groups is None else groups)
        kept: list[str] = []
        if chosen:
            try:
                answers = self.admin.delete_groups(chosen)
            except Exception as error:  # noqa: BLE001 - clean-up carries on
                logger.warning("could not delete consumer groups %s: %s", chosen, error)
                answers = {}
            kept = [group for group in chosen if answers.get(group) not in ("OK", "GroupIdNotFoundError")]
        self._groups = [group for group in self._groups if group not in chosen or group in kept]
        return kept

    def drop_redis_keys(self) -> int:
        """Delete every Redis key whose name holds this run's id (queues, bindings, counters); how many.

        Also forgets this run's messages in kombu's shared ``unacked`` bookkeeping, which a
        killed worker leaves behind (they would be restored into a deleted queue an hour later).
        """
        keys = list(self.redis.scan_iter(f"*{self.id}*", count=1000))
        if keys:
            self.redis.delete(*keys)
        ours = [tag for tag, message in self.redis.hscan_iter(UNACKED_KEY) if self.id.encode() in message]
        if ours:
            self.redis.hdel(UNACKED_KEY, *ours)
            self.redis.zrem(UNACKED_INDEX_KEY, *ours)
        return len(keys)

    def close(self) -> None:
        """Stop every child still running, then delete this run's groups, topics, Redis keys and (unless kept) logs."""
        for child in self._children:
            try:
                child.stop(STOP_TIMEOUT_S)
                child.reap_group()
            except Exception as error:  # noqa: BLE001 - clean-up carries on
                logger.warning("could not stop %s (pid %d): %s", child.name, child.pid, error)
        deadline = time.monotonic() + GROUP_EXPIRY_S
        while self.drop_groups() and time.monotonic() < deadline:  # a killed consumer's membership expires
            time.sleep(2.0)
        if self._groups:
            logger.warning("consumer groups left behind (members did not leave): %s", ", ".join(self._groups))
        self.drop_topics()
        try:
            self.drop_redis_keys()
            self.redis.close()
        except Exception as error:  # noqa: BLE001 - clean-up carries on
            logger.warning("could not delete the run's Redis keys: %s", error)
        if "admin" in self.__dict__:
            self.admin.close()
        if not self.keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)
