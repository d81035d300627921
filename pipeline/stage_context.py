"""What a handler sees while it runs, and the publishing interface that forwarding goes through.

``pipeline`` never imports ``producers``: forwarding calls the ``Publisher`` protocol, which
the producers implement and the composition root passes in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import baggage

from hoptrace.pipeline.jobs import job_id
from hoptrace.pipeline.stages import Payload, PipelineError, Stage


@dataclass(frozen=True)
class Published:
    """What one publish started: its trace and job."""

    trace_id: str
    """32 hex digits; all zeros when the publish was not traced."""
    job_id: str


class Publisher(Protocol):
    """Publishes a payload to a stage's transport, with trace context in the headers."""

    def publish(self, stage: Stage, payload: Payload) -> Published:
        """Send PAYLOAD to STAGE's topic or queue in the current context (starting a job if none runs)."""
        ...

    def dead_letter(self, stage: Stage, payload: Payload, error: BaseException) -> None:
        """Park a payload STAGE gave up on where it can be inspected and replayed."""
        ...

    def confirm(self, timeout_s: float) -> None:
        """Wait until the brokers accepted everything this thread published since the last confirm; raise if not."""
        ...


class StageContext:
    """Handed to a stage's handler with each message: who it is, the job, and forwarding."""

    def __init__(self, stage: Stage, publisher: Publisher, stages: Mapping[str, Stage], attempt: int) -> None:
        """Bind a handler call to its stage, the publisher for forwards, the pipeline's stages, and the attempt number (1-based)."""
        self.stage = stage
        self.attempt = attempt
        self._publisher = publisher
        self._stages = stages

    @property
    def job_id(self) -> str | None:
        """The job this message belongs to (from baggage), when known."""
        return job_id()

    @property
    def baggage(self) -> Mapping[str, object]:
        """The baggage that came with the message, after the allowlist."""
        return baggage.get_all()

    def forward(self, stage_name: str, payload: Payload) -> Published:
        """Send PAYLOAD on to the stage named STAGE_NAME, which must be in this stage's ``forwards_to``."""
        if stage_name not in self.stage.forwards_to:
            raise PipelineError(f"stage {self.stage.name!r} cannot forward to {stage_name!r}: add it to forwards_to (now {self.stage.forwards_to})")
        if stage_name not in self._stages:
            raise PipelineError(f"stage {stage_name!r} is not in this pipeline; call pipeline.check() before running it")
        return self._publisher.publish(self._stages[stage_name], payload)
