"""``hoptrace probe ready|live``: a Kubernetes or Compose probe of a worker in this container, from its health file."""

from __future__ import annotations

from hoptrace.errors import CommandError
from hoptrace.output import console
from hoptrace.pipeline.health import MONITOR, read_health
from hoptrace.pipeline.settings import Settings


def main(kind: str, stage: str | None, monitor: bool, max_age_s: float) -> None:
    """Exit 0 when the worker of STAGE (or the monitor) is ready (KIND ``ready``) or its loop beat within MAX_AGE_S (``live``)."""
    if (stage is None) == (not monitor):
        raise CommandError("give --stage NAME or --monitor (which worker of this container to probe)", 2)
    name = MONITOR if monitor else str(stage)
    health = read_health(Settings().state_dir, name)
    if health is None:
        raise CommandError(f"{name}: no health file yet (not started, or HOPTRACE_STATE_DIR differs from the worker's)")
    ready, age_s = health
    if age_s > max_age_s:
        raise CommandError(f"{name}: last heartbeat {age_s:.0f} s ago (more than {max_age_s:.0f} s): its loop is stuck or it is gone")
    if kind == "ready" and not ready:
        raise CommandError(f"{name}: not ready (a Kafka stage without partitions, or a Celery worker not consuming yet)")
    console().print(f"{name}: {'ready' if ready else 'alive'}, heartbeat {age_s:.1f} s ago", highlight=False)
