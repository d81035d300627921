"""``hoptrace publish``: start N jobs at a stage, each its own trace, with the caller's baggage."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as otel_context

from hoptrace.errors import CommandError, kafka_unreachable, redis_unreachable
from hoptrace.loader import load_stages
from hoptrace.output import console, err_console
from hoptrace.pipeline import heap
from hoptrace.pipeline.settings import Settings
from hoptrace.pipeline.stage_context import Published, Publisher
from hoptrace.pipeline.stages import CeleryTransport, Stage

DEFAULT_PAYLOAD = '{"order_id": "order-{n}"}'
CONFIRM_EVERY = 500
"""``publish`` waits for the broker's acknowledgements after this many jobs (and at the end)."""
CONFIRM_TIMEOUT_S = 30.0
LINGER_WAKE_S = 0.2
"""How often a lingering publisher's main thread wakes, so a SIGINT/SIGTERM another thread received is handled within it."""


class PayloadError(ValueError):
    """The payload or baggage given on the command line is unusable; the message says how to fix it."""


def parse_baggage(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` as a dict; every member needs a key and ``=``."""
    members: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PayloadError(f"baggage member {item!r} is not key=value (example: --baggage tenant=acme,region=eu)")
        members[key.strip()] = value.strip()
    return members


def load_payload(payload: str | None, payload_file: Path | None) -> dict[str, Any]:
    """The payload template from --payload or --payload-file (default ``{"order_id": "order-{n}"}``)."""
    if payload is not None and payload_file is not None:
        raise PayloadError("give --payload or --payload-file, not both")
    text = payload_file.read_text() if payload_file is not None else payload or DEFAULT_PAYLOAD
    try:
        template = json.loads(text)
    except ValueError as error:
        raise PayloadError(f'the payload is not JSON ({error}); example: --payload \'{{"order_id": "o-{{n}}"}}\'') from error
    if not isinstance(template, dict):
        raise PayloadError(f"the payload must be a JSON object, not {type(template).__name__}")
    return template


def job_payloads(template: Mapping[str, Any], count: int) -> Iterator[dict[str, Any]]:
    """COUNT payloads from TEMPLATE: ``{n}`` in a string value becomes the job number (1, 2, ...)."""
    for n in range(1, count + 1):
        yield {key: value.replace("{n}", str(n)) if isinstance(value, str) else value for key, value in template.items()}


def publish_job(publisher: Publisher, stage: Stage, payload: Mapping[str, Any], members: Mapping[str, str]) -> Published:
    """Publish one job with MEMBERS in its baggage, as a new trace."""
    context = otel_context.Context()
    for key, value in members.items():
        context = baggage.set_baggage(key, value, context)
    token = otel_context.attach(context)
    try:
        return publisher.publish(stage, payload)
    finally:
        otel_context.detach(token)


def main(  # noqa: PLR0913 - the command's options
    spec: str, stage_name: str, count: int, payload: str | None, payload_file: Path | None, baggage_text: str, linger_s: float = 0.0
) -> None:
    """``hoptrace publish``: COUNT jobs to STAGE_NAME, waiting for the brokers; print each job's trace and job id.

    With LINGER_S, stay that long after printing (Ctrl-C ends it sooner): this process's flight recorder
    still holds the publish spans, and hands them over when a job goes wrong downstream meanwhile.
    """
    from rich.progress import track

    from hoptrace.clients.celery.app import celery_app
    from hoptrace.producers.publisher import ConnectFailed, PublishFailed
    from hoptrace.runtime import Runtime

    settings = Settings()
    pipeline, [stage] = load_stages(spec, settings.namespace, [stage_name])
    try:
        members = parse_baggage(baggage_text)
        template = load_payload(payload, payload_file)
    except PayloadError as error:
        raise CommandError(error, 2) from error
    runtime = Runtime(pipeline, settings, "publisher", celery_app(pipeline, settings))
    heap.freeze(settings)  # set up: what is alive now stays (a long --count pays for no start-up heap in its collections)
    published = []
    try:
        jobs = job_payloads(template, count)
        for job in track(jobs, total=count, description=f"publishing to {stage_name}", console=err_console(), transient=True):
            published.append(publish_job(runtime.publisher, stage, job, members))
            if len(published) % CONFIRM_EVERY == 0:
                runtime.publisher.confirm(CONFIRM_TIMEOUT_S)
        runtime.publisher.confirm(CONFIRM_TIMEOUT_S)
        _report(published, stage)
        _linger(linger_s)
    except PublishFailed as error:
        raise (redis_unreachable(settings.redis_url, error) if isinstance(stage.transport, CeleryTransport) else CommandError(error)) from error
    except ConnectFailed as error:  # the producer could not bootstrap: unreachable, or refused the credentials
        raise kafka_unreachable(settings.kafka_bootstrap, error.__cause__ or error) from error
    finally:
        runtime.shutdown()


def _linger(seconds: float) -> None:
    """Stay SECONDS, or until SIGINT (Ctrl-C) or SIGTERM, then go on to shut down cleanly.

    Both are handled here, whatever the process inherited: a shell runs a background job with SIGINT
    ignored, and a process manager stops with SIGTERM; either way the recorder's spans are flushed.
    """
    if seconds <= 0:
        return
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda number, frame: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        err_console().print(f"lingering {seconds:g} s for the flight recorder (Ctrl-C or SIGTERM to stop)")
        deadline = time.monotonic() + seconds
        # Short waits: a signal the kernel gave another thread runs its handler only when this (the main) thread next wakes.
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            stop.wait(min(left, LINGER_WAKE_S))
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _report(published: list[Published], stage: Stage) -> None:
    """Print each published job's trace and job id, then how many went where."""
    for item in published:
        console().print(f"trace {item.trace_id}  job {item.job_id}", highlight=False)
    err_console().print(f"published {len(published)} job(s) to stage {stage.name!r} ({stage.transport.system} {stage.transport.destination})")
