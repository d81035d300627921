"""What drop-in instrumentation shares: the middleware hooks of each pipeline name, and silencing a stock instrumentor.

Code that never imports hoptrace has no ``Pipeline``; its messages are still run through the
same middleware as hoptrace's own stages (tracing, metrics), under a pipeline name taken from
``HOPTRACE_PIPELINE`` or given by the instrumentor (a Celery app's name, ``kafka``), and stages
made on the fly (a Celery task, a Kafka topic or consumer group). The hooks are made on first
use in each process, on the global providers, so a prefork child gets its own after the fork; each
stage's bound hooks are kept per process (``lane``), so a message costs one dict lookup to find them.
Stages come from the messages themselves (their topics, queues, task names), so a process reports at
most ``MAX_STAGES`` of them per pipeline in its metrics and spans: messages of any further one are
reported under the stage ``OVERFLOW`` (its destination too), which the log says once per pipeline.
The first hooks of a process start its flight recorder (``pipeline.recorder``) on the global providers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Collection, Hashable, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import wrapt
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from hoptrace.clients.redis.keep_channel import start_flight_recorder
from hoptrace.instrumentation import stock_instrumentor
from hoptrace.pipeline.attributes import FirstSeen
from hoptrace.pipeline.defaults import default_middleware
from hoptrace.pipeline.instruments import Instruments
from hoptrace.pipeline.messages import Incoming, Outcome
from hoptrace.pipeline.middleware import BoundHooks, Hooks
from hoptrace.pipeline.pathways import DEFAULT_DEPTH
from hoptrace.pipeline.semconv import OVERFLOW
from hoptrace.pipeline.settings import SecretsFolderMissing, Settings
from hoptrace.pipeline.stages import Pipeline, RetryPolicy, Stage, Transport

logger = logging.getLogger(__name__)

PIPELINE_VARIABLE = "HOPTRACE_PIPELINE"
"""Names the pipeline (``hoptrace.pipeline``) of instrumented code; default: the Celery app's name, or ``kafka``."""

_hooks: dict[str, Hooks] = {}
_lanes: dict[Hashable, tuple[Stage, BoundHooks]] = {}
_pipelines: dict[str, str] = {}
_lock = threading.Lock()
MAX_LANES = 4096
"""Stages of instrumented code kept bound per process (topics, groups, tasks, queues); emptied when full."""
MAX_STAGES = 200
"""Distinct stages (name and destination) a process reports per pipeline; later ones are reported as ``OVERFLOW``."""
_stages_seen = FirstSeen()


def pipeline_name(default: str) -> str:
    """``HOPTRACE_PIPELINE`` when set, else DEFAULT (read once per process)."""
    found = _pipelines.get(default)
    if found is None:
        found = _pipelines[default] = os.environ.get(PIPELINE_VARIABLE, "").strip() or default
    return found


def hooks(pipeline: str) -> Hooks:
    """The middleware hooks of PIPELINE in this process (tracing, metrics and retries on the global providers, ``HOPTRACE_*`` settings)."""
    found = _hooks.get(pipeline)  # made once per process and pipeline: no lock for every message after that
    if found is not None:
        return found
    with _lock:
        if pipeline not in _hooks:
            settings = _settings()
            if settings is not None:
                _record(settings)
            slow_after_s = settings.slow_after_s if settings is not None else None
            depth = settings.pathway_depth if settings is not None else DEFAULT_DEPTH
            _hooks[pipeline] = Hooks(default_middleware(Pipeline(pipeline), Instruments.of(), slow_after_s=slow_after_s, pathway_depth=depth))
        return _hooks[pipeline]


def _settings() -> Settings | None:
    """hoptrace's ``HOPTRACE_*`` settings; None, logged, when one does not parse (the instrumented code runs on either way)."""
    try:
        return Settings()
    except (ValidationError, SecretsFolderMissing) as error:
        logger.warning("hoptrace's flight recorder and slow-job objective are off: a HOPTRACE_ setting is not valid (%s)", error)
        return None


def _record(settings: Settings) -> None:
    """Start this process's flight recorder on the global providers, as SETTINGS say (``HOPTRACE_RECORDER``, ``HOPTRACE_REDIS_URL``, ...)."""
    tracer_provider, meter_provider = trace.get_tracer_provider(), metrics.get_meter_provider()
    if isinstance(tracer_provider, TracerProvider) and isinstance(meter_provider, MeterProvider):  # else no SDK: nothing to record
        start_flight_recorder(tracer_provider, meter_provider, settings)


def lane(pipeline: str, key: Hashable, make_stage: Callable[[], Stage]) -> tuple[Stage, BoundHooks]:
    """The stage KEY names in PIPELINE's instrumented code (made by MAKE_STAGE the first time) and its bound hooks, kept per process.

    A message's lookup is one dict get: no transport or stage object is built, hashed or bound again.
    """
    found = _lanes.get((pipeline, key))
    if found is None:
        made = _bounded(pipeline, make_stage())
        bound = hooks(pipeline).bound(made)
        with _lock:
            if len(_lanes) >= MAX_LANES:
                _lanes.clear()
            found = _lanes[pipeline, key] = (made, bound)
    return found


def begin(hooks: Hooks | BoundHooks, message: Incoming, attempt: int) -> Context:
    """Start MESSAGE's attempt number ATTEMPT in instrumented code (counted, its span open); the context the user's code runs in.

    A failed attempt that no other follows ends as ``failed``: the instrumented code handles its failures its own way.
    """
    message.attempt = attempt
    message.gives_up_as = Outcome.FAILED
    hooks.before_message(message)
    hooks.before_attempt(message)
    return message.attempt_context or message.context


def finish(hooks: Hooks | BoundHooks, message: Incoming) -> None:
    """End the attempt ``begin`` started (its span, its metrics): processed, failed, or (a retry follows) no outcome yet."""
    hooks.after_attempt(message)
    if message.error is None:
        message.outcome = Outcome.PROCESSED
    elif not message.will_retry:
        message.outcome = Outcome.FAILED
    hooks.after_message(message)


def _ignore(payload: Any, ctx: Any) -> None:
    """The handler of a drop-in stage: the user's own code runs the message, never this."""


ONE_ATTEMPT = RetryPolicy(max_attempts=1)
"""Instrumented code retries on its own (Celery's retry, the user's loop): hoptrace's retry middleware decides nothing."""


@lru_cache(maxsize=4096)
def stage(name: str, transport: Transport) -> Stage:
    """A stage NAME on TRANSPORT for instrumented code (no handler of hoptrace's runs it)."""
    return Stage(name, transport, _ignore, retry=ONE_ATTEMPT)


def _bounded(pipeline: str, made: Stage) -> Stage:
    """MADE, or the ``OVERFLOW`` stage on the same kind of transport once PIPELINE has ``MAX_STAGES`` others (said once per pipeline)."""
    admitted, first = _stages_seen.admit(pipeline, (made.name, made.transport.destination), MAX_STAGES)
    if admitted:
        return made
    if first:
        logger.warning(
            "pipeline %s: more than %d stages in this process (topics, groups, tasks, queues met in messages);"
            " messages of %s and of any later one are reported as stage %s, so that metric series stay bounded",
            pipeline,
            MAX_STAGES,
            made.name,
            OVERFLOW,
        )
    transport = dataclasses.replace(made.transport, **{field.name: OVERFLOW for field in dataclasses.fields(made.transport)})
    return stage(OVERFLOW, transport)


def reset() -> None:
    """Forget the hooks made so far, so the next message makes them again on the current global providers.

    Runs in every forked child (a Celery pool process makes its own after the fork), and in tests.
    """
    with _lock:
        _hooks.clear()
        _lanes.clear()
        _pipelines.clear()
        _stages_seen.clear()


os.register_at_fork(after_in_child=reset)


def silence(stock: type, ours: str) -> None:
    """Make the stock instrumentor STOCK a no-op that says so in one INFO line, whatever the order they are loaded in.

    An active one is uninstrumented first (before ours wraps anything: ``unwrap`` removes the
    outermost wrapper, whoever put it there). ``unsilence`` gives it back its methods.
    """
    instance = stock()
    if instance.is_instrumented_by_opentelemetry and "_hoptrace_methods" not in stock.__dict__:
        instance.uninstrument()
    if "_hoptrace_methods" in stock.__dict__:
        return
    stock._hoptrace_methods = (stock._instrument, stock._uninstrument)

    def skipped(self: Any, **kwargs: Any) -> None:
        logger.info("%s skipped: %s instruments this library (no duplicate spans or headers)", stock.__name__, ours)

    def nothing(self: Any, **kwargs: Any) -> None:
        """Nothing to undo: the skipped instrumentor instrumented nothing."""

    stock._instrument, stock._uninstrument = skipped, nothing


Patch = tuple[type, str, Callable[..., Any]]
"""(class, method name, wrapt wrapper) of a method an instrumentor wraps."""


def patch(patches: Sequence[Patch]) -> None:
    """Wrap each method of PATCHES with its wrapper."""
    for owner, name, wrapper in patches:
        wrapt.wrap_function_wrapper(owner, name, wrapper)


def unpatch(patches: Sequence[Patch]) -> None:
    """Undo ``patch``, last first: remove each wrapper only where it is the outermost one (else say so: another wrapped after hoptrace)."""
    for owner, name, wrapper in reversed(patches):
        current = owner.__dict__.get(name)
        if isinstance(current, wrapt.FunctionWrapper) and current._self_wrapper is wrapper:  # noqa: SLF001 - wrapt's record of the wrapper
            setattr(owner, name, current.__wrapped__)
        else:
            logger.warning("%s.%s was wrapped again after hoptrace; hoptrace's wrapper stays in place under it", owner.__name__, name)


def step_aside(library: str, ours: str) -> None:
    """Silence LIBRARY's stock instrumentor (when installed) for hoptrace's OURS; a failure is logged, never raised.

    Raising would stop the auto-instrumentation loader, and every instrumentor after this one with it.
    """
    stock = stock_instrumentor(library)
    if stock is None:
        return
    try:
        silence(stock, ours)
    except Exception:  # noqa: BLE001 - see the docstring
        logger.exception("could not silence %s; its spans and headers may come beside hoptrace's", stock.__name__)


def step_back(library: str) -> None:
    """Give LIBRARY's stock instrumentor (when installed) its methods back: hoptrace's is uninstrumented."""
    stock = stock_instrumentor(library)
    if stock is not None:
        unsilence(stock)


def unsilence(stock: type) -> None:
    """Give the stock instrumentor STOCK its own methods back (it stays uninstrumented)."""
    methods = stock.__dict__.get("_hoptrace_methods")
    if methods is None:
        return
    stock._instrument, stock._uninstrument = methods
    del stock._hoptrace_methods
    stock()._is_instrumented_by_opentelemetry = False


class PatchingInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """An instrumentor that wraps methods of one library (``patches``) while its stock instrumentor steps aside; twice is a no-op.

    A subclass names the ``library`` (as ``stock_instrumentor`` knows it), the ``patches`` and the
    library versions it supports (``dependencies``).
    """

    library: ClassVar[str]
    patches: ClassVar[Sequence[Patch]]
    dependencies: ClassVar[tuple[str, ...]]

    def instrumentation_dependencies(self) -> Collection[str]:
        """The library versions this instrumentor supports."""
        return self.dependencies

    def _instrument(self, **kwargs: Any) -> None:
        step_aside(self.library, type(self).__name__)
        patch(self.patches)

    def _uninstrument(self, **kwargs: Any) -> None:
        unpatch(self.patches)
        step_back(self.library)
