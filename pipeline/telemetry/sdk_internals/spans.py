"""hoptrace's publish and process spans, started as the SDK tracer's ``start_span`` would start them, at a fraction of its cost.

``LeanTracer.of(tracer)`` reads an SDK ``Tracer`` once; ``new_context`` and ``start`` then make, per message:

- for a span the sampler drops, no span object at all beyond the ``NonRecordingSpan`` that
  carries its new span context (the user's own spans and sends still join the trace);
- for a sampled span, a ``HopSpan``: the SDK's own ``Span`` class (so ``set_attribute``,
  ``add_event``, ``record_exception``, ``set_status``, child spans, every span processor and
  exporter see exactly what they would), built without the SDK's per-span machinery:
  hoptrace's attributes are already clean and within the limits, so they are kept in a plain
  dict until user code sets one (then the SDK's ``BoundedAttributes`` takes over, with the
  limits); events and links lists are made when first needed; and the ended span itself is
  handed to the span processors instead of a copy of it.

Ids come from the tracer's id generator, the sampling decision from the sampler's shortcut
(``sampling``), the trace flags as ``start_span`` sets them (sampled, random trace id), the
resource, scope, limits and span processor are the tracer's. ``of`` gives None, and the
caller uses ``tracer.start_span``, for any tracer it cannot prove this for: not the SDK's, a
sampler without a shortcut, a disabled tracer, the SDK's own tracer metrics switched on. A
tracer disabled later (``enabled`` turns False) is the caller's to send to ``start_span``.

Private names read: ``Tracer._span_limits``, ``._instrumentation_scope``, ``._tracer_config``,
``._tracer_metrics``; ``Span``'s and ``ReadableSpan``'s private fields (set here as their
``__init__`` sets them), ``SpanProcessor._on_ending``.
"""

from __future__ import annotations

import logging
import marshal
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, Tracer
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import AttributeValue

from hoptrace.pipeline.telemetry.sdk_internals.sampling import Decide, shortcut

_logger = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)
_NONE: tuple[()] = ()
"""The events and links of a span that has none yet (a ``BoundedList`` is made at the first)."""
_FLAGS = {(sampled, random): TraceFlags((1 if sampled else 0) | (2 if random else 0)) for sampled in (False, True) for random in (False, True)}
_PLAIN = frozenset((str, int, float, bool))
"""Types of attribute values the SDK keeps as they are (any other value goes through its cleaning)."""
MOST_OWN_ATTRIBUTES = 24
"""A bound on the attributes hoptrace itself puts on one span; the plain-dict start applies while the limits allow this many."""


class Holder(Protocol):
    """Where a recorded span goes when it ends (``pipeline.recorder.FlightRecorder``)."""

    def hold(self, span: HopSpan) -> None:
        """Keep the ended, unsampled SPAN (its ``record()``), or export it when its trace is kept."""


class Shape(NamedTuple):
    """What the recorded spans of one kind share: name, kind, constant attributes, resource and scope."""

    name: str
    kind: SpanKind
    base: Mapping[str, AttributeValue]
    resource: Resource
    scope: InstrumentationScope | None


Extras = tuple[Status, tuple[Event, ...], tuple[Link, ...], TraceState | None]
"""A recorded span's status, events, links and trace state, kept only when one of them is not the default."""
SpanRecord = tuple[int, tuple[str, ...], bytes, Extras | None]
"""An ended span the sampler dropped, in the fewest objects that rebuild it (``as_sampled``): ``(shape, keys, blob, extras)``.

* ``shape``: index of its ``Shape`` in this process's table of them;
* ``keys``: names of the attributes beyond the shape's (one tuple per kind of span, shared);
* ``blob``: span id, parent span id (0: none), start and end (ns), trace flags, parent is remote
  (``_PACKED``), then the values of ``keys`` (``marshal``);
* ``extras``: ``Extras``, or None.

An exact tuple of a number, bytes and an old tuple of names (unless the span has extras): the garbage
collector stops tracking it at its first pass over it, so a full buffer adds nothing to later passes.
Not a ``NamedTuple`` (the collector never stops tracking an instance of a subclass) and no fresh tuple
inside (a tuple of tuples is untracked a level per pass, and the ones that reached the oldest generation
still tracked made every full pass walk the buffer). For the same reason the recorder lays a job's
records end to end in one flat tuple (``flat_records``).
"""
RECORD_FIELDS = 4
"""Items of one ``SpanRecord``."""
BLOB = 2
"""Index of ``blob`` in a ``SpanRecord``."""


def flat_records(flat: Sequence[Any]) -> Iterator[SpanRecord]:
    """The ``SpanRecord``s laid end to end in FLAT, ``RECORD_FIELDS`` items each."""
    items = iter(flat)
    return zip(items, items, items, items, strict=True)


_PACKED = struct.Struct("<QQqqB?")
_NO_BASE: Mapping[str, AttributeValue] = MappingProxyType({})
_SHAPES: dict[tuple[str, int, int], int] = {}
"""Index in ``_SHAPE_TABLE`` of each shape, by the identity of its parts."""
_SHAPE_TABLE: list[Shape] = []
_SHAPES_LOCK = threading.Lock()
_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}
MAX_KEYS = 4096
"""Attribute name tuples kept for sharing (emptied when full)."""


class HopSpan(SdkSpan):
    """An SDK ``Span`` started by ``LeanTracer``: the same class to every reader, cheaper to make and to end.

    A recorded one (``LeanTracer.start`` with a recorder: not sampled, the flight recorder on) keeps its stage's
    constant attributes apart (``_base``) and, ended, goes to its recorder instead of the span processors.
    """

    _base: Mapping[str, AttributeValue] | None = None
    _recorder: Holder | None = None

    def __init__(  # noqa: PLR0913 - the fields an SDK span has
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link],
        start_time: int,
    ) -> None:
        """A started span (the span processors' ``on_start`` is the caller's: ``LeanTracer.start``)."""
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = tracer.instrumentation_info
        self._instrumentation_scope = tracer.instrumentation_scope
        self._parent = parent
        self._start_time = start_time
        self._end_time = None
        self._resource = tracer.resource
        self._status = _UNSET
        self._sampler = tracer.sampler
        self._trace_config = None
        self._record_exception = True
        self._set_status_on_exception = True
        self._span_processor = tracer.span_processor
        self._limits = tracer.limits
        self._lock = threading.Lock()
        self._attributes = attributes if tracer.plain_attributes else tracer.bounded(attributes)  # type: ignore[assignment]
        self._events = _NONE  # type: ignore[assignment]
        self._links = self._new_links(links) if links else _NONE  # type: ignore[assignment]
        self._record_end_metrics = None

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        """As the SDK span's (a recorded span's constant attributes included)."""
        base = self._base
        return MappingProxyType({**base, **self._attributes} if base is not None else self._attributes or {})

    def _bounded(self) -> None:
        """From now on the attributes are the SDK's ``BoundedAttributes`` (user code is setting some), the constant ones among them."""
        with self._lock:
            if type(self._attributes) is dict and self._end_time is None:
                limits = self._limits
                merged = {**self._base, **self._attributes} if self._base is not None else self._attributes
                self._attributes = BoundedAttributes(limits.max_span_attributes, merged, False, limits.max_span_attribute_length)
                self._base = None

    def set_attribute(self, key: str, value: Any) -> None:
        """As the SDK span's."""
        self._bounded()
        super().set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """As the SDK span's."""
        self._bounded()
        super().set_attributes(attributes)

    def set_own(self, key: str, value: AttributeValue) -> None:
        """Set one of hoptrace's own attributes: a plain value straight into the dict while it is a plain one, as ``set_attribute`` would.

        A key set again moves to the end, as in ``BoundedAttributes``; any other value (a list, an
        object a broker answered) goes through ``set_attribute`` and the SDK's cleaning.
        """
        attributes = self._attributes
        if type(attributes) is dict and type(value) in _PLAIN and self._end_time is None:
            if key in attributes:
                del attributes[key]
            attributes[key] = value
        else:
            self.set_attribute(key, value)

    def _add_event(self, event: Event) -> None:
        if self._events is _NONE:
            with self._lock:  # two threads adding the first event make one list
                if self._events is _NONE:
                    self._events = self._new_events()
        super()._add_event(event)

    def _add_link(self, link: Link) -> None:
        if self._links is _NONE:
            with self._lock:
                if self._links is _NONE:
                    self._links = BoundedList(self._limits.max_links)
        super()._add_link(link)

    def end(self, end_time: int | None = None) -> None:
        """End the span and hand it (itself, not a copy: it cannot change any more) to the span processors."""
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                _logger.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            if type(self._attributes) is not dict:
                self._attributes._immutable = True  # noqa: SLF001 - as the SDK's end()
        if self._recorder is not None:  # not sampled: no processor would export it; the recorder keeps it a while
            self._recorder.hold(self)
            return
        self._span_processor._on_ending(self)  # noqa: SLF001
        self._span_processor.on_end(self)

    def record(self) -> tuple[int, SpanRecord, int]:
        """This ended span's trace id, the span as a compact record, and how many attribute values of any size it holds beyond hoptrace's own.

        A span whose attributes user code touched (or tight span limits) holds them all, in any size: the count
        says so, for the recorder to weigh their strings.
        """
        context, parent, base = self._context, self._parent, self._base
        resource, scope, name, kind = self._resource, self._instrumentation_scope, self._name, self._kind
        key = (name, id(base), id(resource))  # the base and resource are a stage's and a process's: name and base settle kind and scope
        shape = _SHAPES.get(key)
        if shape is None:  # a new stage, or a new resource (a forked child): a handful per process, kept for good
            with _SHAPES_LOCK:
                shape = _SHAPES.get(key)
                if shape is None:
                    _SHAPE_TABLE.append(Shape(name, kind, base if base is not None else _NO_BASE, resource, scope))
                    shape = _SHAPES[key] = len(_SHAPE_TABLE) - 1
        attributes = self._attributes
        keys = tuple(attributes)
        shared = _KEYS.get(keys)
        if shared is None:
            if len(_KEYS) >= MAX_KEYS:
                _KEYS.clear()
            shared = _KEYS[keys] = keys
        parent_id, remote = (parent.span_id, parent.is_remote) if parent is not None else (0, False)
        blob = _PACKED.pack(context.span_id, parent_id, self._start_time, self._end_time, context.trace_flags, remote)
        status, events, links, state = self._status, self._events, self._links, context.trace_state
        plain = status is _UNSET and not events and not links and state is DEFAULT_TRACE_STATE
        extras = None if plain else (status, tuple(events), tuple(links), state)
        record: SpanRecord = (shape, shared, blob + marshal.dumps(tuple(attributes.values())), extras)
        return context.trace_id, record, 0 if base is not None else len(keys)


class LeanTracer:
    """What ``start`` needs of one SDK tracer, read once."""

    def __init__(self, tracer: Tracer, decide: Decide) -> None:
        """Start spans as TRACER would, deciding with DECIDE (its sampler's shortcut)."""
        self.tracer = tracer
        self.sampler = tracer.sampler
        self.decide = decide
        self.span_processor = tracer.span_processor
        self.id_generator = tracer.id_generator
        self.instrumentation_info = tracer.instrumentation_info
        self.instrumentation_scope = tracer._instrumentation_scope  # noqa: SLF001
        limits: SpanLimits = tracer._span_limits  # noqa: SLF001
        self.limits = limits
        self.plain_attributes = limits.max_span_attribute_length is None and (
            limits.max_span_attributes is None or limits.max_span_attributes >= MOST_OWN_ATTRIBUTES
        )
        """Whether hoptrace's attributes pass the limits untouched (else each span's go through ``BoundedAttributes``)."""
        self._random_roots = self.id_generator.is_trace_id_random()

    @property
    def resource(self) -> Resource:
        """The tracer's resource, read per span: a forked child's SDK merges its own process attributes into it."""
        return self.tracer.resource

    @property
    def enabled(self) -> bool:
        """Whether the tracer is enabled now (a tracer configurator set later can disable it; then ``start_span`` it is)."""
        return self.tracer._tracer_config.is_enabled  # noqa: SLF001

    @classmethod
    def of(cls, tracer: object) -> LeanTracer | None:
        """A lean tracer for TRACER, or None when TRACER is not an SDK tracer whose spans it can start exactly as it would."""
        if type(tracer) is not Tracer:
            return None
        try:
            config, metrics = tracer._tracer_config, tracer._tracer_metrics  # noqa: SLF001
            if not config.is_enabled or type(metrics) is not NoOpTracerMetrics:
                return None
            decide = shortcut(tracer.sampler)
            return None if decide is None else cls(tracer, decide)
        except AttributeError as missing:  # another SDK version: its own start_span it is
            _logger.info("hoptrace starts its spans with the SDK's start_span: this SDK has no %s", missing.name)
            return None

    def bounded(self, attributes: Mapping[str, AttributeValue]) -> BoundedAttributes:
        """ATTRIBUTES within this tracer's span limits, as the SDK's span keeps them."""
        limits = self.limits
        return BoundedAttributes(limits.max_span_attributes, attributes, False, limits.max_span_attribute_length)

    def new_context(self, parent: SpanContext | None, kept: Callable[[int], bool] | None = None) -> SpanContext:
        """The span context of a new span under PARENT (a valid span context, or None: a new trace), sampled as the sampler decides.

        Ids, flags and trace state as ``start_span`` makes them; ``trace_flags.sampled`` says whether to ``start`` a span with it.
        KEPT(trace_id), when given, samples what the sampler drops of a trace the flight recorder kept.
        """
        if parent is None:
            trace_id = self.id_generator.generate_trace_id()
            random = self._random_roots
            state = None
        else:
            trace_id = parent.trace_id
            random = bool(parent.trace_flags & 2)
            state = parent.trace_state
        sampled = self.decide(parent, trace_id) or (kept is not None and parent is not None and kept(trace_id))
        return SpanContext(trace_id, self.id_generator.generate_span_id(), False, _FLAGS[sampled, random], state)

    def start(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        parent_context: Context,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link] = (),
        *,
        recorder: Holder | None = None,
        base: Mapping[str, AttributeValue] | None = None,
    ) -> HopSpan:
        """A started span NAME with CONTEXT (from ``new_context``) under PARENT of PARENT_CONTEXT; ATTRIBUTES are now the span's.

        With RECORDER, CONTEXT is one the sampler dropped and the span is a recorded one: RECORDER holds it once it
        ends, and BASE (its stage's constant attributes, shared by all its spans) stays apart from ATTRIBUTES unless
        the span limits need every attribute cleaned.
        """
        if base is not None and not self.plain_attributes:
            attributes, base = {**base, **attributes}, None
        span = HopSpan(self, name, context, parent, kind, attributes, links, time_ns())
        if recorder is not None:
            span._base = base  # noqa: SLF001
            span._recorder = recorder  # noqa: SLF001
        self.span_processor.on_start(span, parent_context=parent_context)
        return span


def ended_at(record: SpanRecord) -> int:
    """When RECORD's span ended (epoch ns)."""
    return _PACKED.unpack_from(record[BLOB])[3]


def as_sampled(trace_id: int, record: SpanRecord, added: Mapping[str, AttributeValue]) -> ReadableSpan:
    """RECORD of trace TRACE_ID as the sampled span it would have been, with ADDED attributes."""
    shape_index, keys, blob, extras = record
    span_id, parent_id, start, end, flags, remote = _PACKED.unpack_from(blob)
    values = marshal.loads(memoryview(blob)[_PACKED.size :])
    status, events, links, state = extras if extras is not None else (_UNSET, (), (), None)
    sampled = TraceFlags(flags | TraceFlags.SAMPLED)
    shape = _SHAPE_TABLE[shape_index]
    return ReadableSpan(
        name=shape.name,
        context=SpanContext(trace_id, span_id, False, sampled, state),
        parent=SpanContext(trace_id, parent_id, remote, sampled, state) if parent_id else None,
        resource=shape.resource,
        attributes={**shape.base, **dict(zip(keys, values, strict=True)), **added},
        events=events,
        links=links,
        kind=shape.kind,
        status=status,
        start_time=start,
        end_time=end,
        instrumentation_scope=shape.scope,
    )
