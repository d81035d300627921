"""hoptrace's instrumentor for Celery: any app, unchanged (``opentelemetry-instrument celery -A proj worker``).

Spans: a PRODUCER ``send {queue}`` per publish (``publish``), a CONSUMER ``process
{queue}`` around every task run (``process``), with the messaging attributes
(destination = queue, ``messaging.message.id`` = task id, ``hoptrace.stage`` = task name,
``hoptrace.attempt`` = retries + 1) and the same per-stage metrics as hoptrace's own stages.

One job, one trace, for a whole canvas: a group or a chord started outside any span gets a
root span ``start group`` / ``start chord`` (and a job) around the publishing of its members;
a chain's next links and a chord's body are published inside the span of the task before
them, so they join the same trace; the body is also linked to every header task it waited
for (``chords``). Retries (``self.retry()``, ``autoretry_for``) are one process span per
attempt in the job's trace; beat's periodic tasks each start their own job.

Prefork-safe: the hooks and instruments are made per process on first use, and a pool
process flushes telemetry (bounded) when it exits, since ``os._exit`` skips ``atexit``. The
depth of every queue the worker consumes is reported once per worker host, from its main
process (``depth``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from celery import Celery, signals
from celery.canvas import _chord, group
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.trace import SpanKind

from hoptrace.clients.celery import process, publish
from hoptrace.clients.celery.depth import start_depth
from hoptrace.gauges.refresher import GaugeRefresher
from hoptrace.instrumentation import dropin
from hoptrace.pipeline import jobs, semconv
from hoptrace.pipeline.messages import is_owned
from hoptrace.pipeline.telemetry import providers

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 5.0


def _pipeline() -> str:
    """``HOPTRACE_PIPELINE``, else the current Celery app's name, else ``celery``."""
    from celery import current_app

    return dropin.pipeline_name(str(getattr(current_app, "main", None) or "celery"))


def _with_pipeline(handler: Callable[..., None]) -> Callable[..., None]:
    def receive(*args: Any, **kwargs: Any) -> None:
        handler(_pipeline(), *args, **kwargs)

    receive.__name__ = f"hoptrace_{handler.__name__}"
    return receive


def _send_task(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """``Celery.send_task``: when publishing raises, Celery sends no ``after_task_publish``; end the open spans here."""
    try:
        return wrapped(*args, **kwargs)
    except BaseException as error:
        publish.publish_failed(error)
        raise


def _start_canvas(kind: str) -> Callable[..., Any]:
    """A wrapper that gives a canvas started outside any span a root span and a job, current while its members are published."""

    def start(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if is_owned() or trace.get_current_span().get_span_context().is_valid:
            return wrapped(*args, **kwargs)
        context = jobs.ensure_job(otel_context.get_current())
        attributes = {semconv.JOB_ID: jobs.job_id(context) or "", semconv.MESSAGING_SYSTEM: "celery"}
        token = otel_context.attach(context)  # the job's baggage, current for every member's publish
        try:
            with trace.get_tracer("hoptrace").start_as_current_span(f"start {kind}", kind=SpanKind.INTERNAL, attributes=attributes):
                return wrapped(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return start


class _Depth:
    """The queue depth reporting of this worker process, started when the worker is ready."""

    refresher: GaugeRefresher | None = None

    @classmethod
    def start(cls, sender: Any = None, **_: Any) -> None:
        """``worker_ready`` (main process): report the depth of the queues this worker consumes."""
        try:
            if cls.refresher is None and sender is not None:
                cls.refresher = start_depth(sender, _pipeline())
        except Exception:  # noqa: BLE001 - the worker runs without depth gauges
            logger.exception("hoptrace could not start reporting this worker's queue depth")

    @classmethod
    def stop(cls, **_: Any) -> None:
        """``worker_shutdown``, or uninstrument: stop reading Redis."""
        refresher, cls.refresher = cls.refresher, None
        if refresher is not None:
            refresher.stop()


PATCHES: tuple[dropin.Patch, ...] = (
    (Celery, "send_task", _send_task),
    (group, "apply_async", _start_canvas("group")),
    (_chord, "apply_async", _start_canvas("chord")),
)
"""The Celery methods the instrumentor wraps (``dropin.patch``), with the wrapper of each."""


def _flush(**_: Any) -> None:
    """``worker_process_shutdown``: a pool process exits with ``os._exit``; flush what it buffered first."""
    configured = providers.global_telemetry()
    if configured is not None:
        configured.shutdown(SHUTDOWN_TIMEOUT_S)


class HoptraceCeleryInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments Celery publishing and task runs (the stock ``CeleryInstrumentor`` steps aside while this one is active)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """The Celery versions this instrumentor supports."""
        return ("celery >= 5.4, < 6",)

    def _instrument(self, **kwargs: Any) -> None:
        dropin.step_aside("celery", type(self).__name__)
        self._receivers = [
            (signals.before_task_publish, _with_pipeline(publish.before_publish)),
            (signals.after_task_publish, publish.after_publish),
            (signals.task_prerun, _with_pipeline(process.started)),
            (signals.task_postrun, process.finished),
            (signals.task_retry, process.retried),
            (signals.task_failure, process.failed),
            (signals.worker_process_shutdown, _flush),
            (signals.worker_ready, _Depth.start),
            (signals.worker_shutdown, _Depth.stop),
        ]
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)
        dropin.patch(PATCHES)

    def _uninstrument(self, **kwargs: Any) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        self._receivers = []
        _Depth.stop()
        dropin.unpatch(PATCHES)
        dropin.step_back("celery")
