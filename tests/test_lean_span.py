"""A span started by ``sdk_internals.spans.LeanTracer`` is, to every reader, the span the SDK tracer's ``start_span`` makes.

Two tracer providers with the same resource, sampler, span limits and a seeded id generator
(so both hand out the same ids) each export through a ``SimpleSpanProcessor`` into memory and
have a span processor of this test's own that records what ``on_start`` and ``on_end`` receive
(and, when asked, sets attributes in ``on_start`` as some user processors do). On one a span is
started with ``LeanTracer.of(tracer)`` (``new_context``, then ``start`` when sampled), on the
other with ``tracer.start_span``, with the same name, parent, kind, clean attributes (hoptrace's
own are clean and at most ``MOST_OWN_ATTRIBUTES``) and links. Then the same generated operations
run on both: ``set_attribute``/``set_attributes`` with valid, invalid and sequence values,
``add_event``, ``record_exception``, ``set_status`` in both forms, ``update_name``, ``add_link``,
leaving the span as a context manager with an error, ``end``, and more of them after the end.

Proven: the span contexts are equal (ids, flags, trace state) whether sampled or not; the
finished spans are equal field by field (name, context, parent, kind, attributes in order,
dropped counts, events with their attributes, links with theirs, status, resource, scope; times
may differ, explicit event timestamps may not), so are ``to_json()`` apart from times, and so is
everything the user processor saw; all this also under small ``SpanLimits`` (attribute count and
length, events, links, per-event and per-link attributes). ``LeanTracer.of`` gives None for what
it cannot reproduce (a no-op, proxy, disabled or subclassed tracer, a sampler without a shortcut,
the SDK's own tracer metrics on). ``HopSpan.set_own`` (hoptrace's own attributes, set straight
into the plain dict) leaves the span as ``set_attribute`` leaves the SDK's. A lean tracer made
earlier must still start the spans its tracer would after the provider changed under it: after a
fork (the SDK merges the child's resource into its tracers) and after the tracer was disabled by a
tracer configurator (SDK-private API, as the SDK applies it to existing tracers).
"""

from __future__ import annotations

import json
import os
import random
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, Tracer, TracerProvider, _disable_tracer_configurator
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    AlwaysRecordSampler,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from hoptrace.pipeline.telemetry.sdk_internals.spans import MOST_OWN_ATTRIBUTES, HopSpan, LeanTracer
from hoptrace.pipeline.tracing import Tracers

U64 = (1 << 64) - 1
U128 = (1 << 128) - 1
RESOURCE = Resource({"service.name": "lean-span-test", "service.instance.id": "one"})
SCOPE = ("hoptrace", "1.2.3", "https://opentelemetry.io/schemas/1.26.0")
EXPLICIT_TIMES = 10**15
"""Explicit event timestamps are below this (compared exactly); the clock's are above (they may differ)."""


class SeededIds(IdGenerator):
    """Ids from a seeded generator: two with the same seed hand out the same ids."""

    def __init__(self, seed: int, random_trace_ids: bool = True) -> None:
        self._random = random.Random(seed)
        self._random_trace_ids = random_trace_ids

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1

    def is_trace_id_random(self) -> bool:
        return self._random_trace_ids


def context_of(context: SpanContext | None) -> tuple[Any, ...] | None:
    """A span context's every field, comparable."""
    if context is None:
        return None
    return (context.trace_id, context.span_id, context.is_remote, int(context.trace_flags), tuple(context.trace_state.items()))


def when(timestamp: int | None) -> int | str | None:
    """An event timestamp: kept when it was given explicitly, else only that the clock gave one."""
    if timestamp is None:
        return None
    return timestamp if timestamp < EXPLICIT_TIMES else "clock"


def attributes_of(attributes: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """Attributes in their order (the SDK drops the oldest when full, so order is behaviour), values with their types."""
    return [(key, type(value).__name__, value) for key, value in (attributes or {}).items()]


def snapshot(span: ReadableSpan, *, times: bool = False) -> dict[str, Any]:
    """Everything a reader (processor, exporter) can see of SPAN, times reduced to whether they are set."""
    status = span.status
    scope = span.instrumentation_scope
    found = {
        "name": span.name,
        "context": context_of(span.get_span_context()),
        "parent": context_of(span.parent),
        "kind": span.kind,
        "attributes": attributes_of(span.attributes),
        "dropped_attributes": span.dropped_attributes,
        "events": [(event.name, attributes_of(event.attributes), event.dropped_attributes, when(event.timestamp)) for event in span.events],
        "dropped_events": span.dropped_events,
        "links": [(context_of(link.context), attributes_of(link.attributes), link.dropped_attributes) for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (status.status_code, status.description),
        "resource": (dict(span.resource.attributes), span.resource.schema_url),
        "scope": None if scope is None else (scope.name, scope.version, scope.schema_url, dict(scope.attributes or {})),
        "started": span.start_time is not None,
        "ended": span.end_time is not None,
    }
    if times:
        found["times"] = (span.start_time, span.end_time)
    return found


class SeenByUser(SpanProcessor):
    """A user's span processor: records what on_start and on_end receive; optionally sets attributes in on_start."""

    def __init__(self, on_start_sets: Mapping[str, Any] | None = None) -> None:
        self.seen: list[tuple[str, dict[str, Any], Any]] = []
        self._on_start_sets = on_start_sets

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        parent = trace.get_current_span(parent_context).get_span_context() if parent_context is not None else None
        self.seen.append(("start", snapshot(span), (context_of(parent), span.is_recording())))
        if self._on_start_sets:
            span.set_attributes(dict(self._on_start_sets))

    def on_end(self, span: ReadableSpan) -> None:
        self.seen.append(("end", snapshot(span), None))


class Side:
    """One provider with its exporter and user processor."""

    def __init__(self, sampler: Sampler, limits: SpanLimits, seed: int, random_trace_ids: bool, on_start_sets: Mapping[str, Any] | None) -> None:
        self.provider = TracerProvider(sampler, RESOURCE, False, id_generator=SeededIds(seed, random_trace_ids), span_limits=limits)
        self.exporter = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer(*SCOPE, attributes={"scope.attribute": "x"})
        self.user = SeenByUser(on_start_sets)

    def add_user_processor(self) -> None:
        self.provider.add_span_processor(self.user)


# Generated inputs.

keys = st.one_of(st.sampled_from(["a", "b", "c", "job", "messaging.system", "hoptrace.stage"]), st.text(min_size=1, max_size=6))
texts = st.one_of(st.text(max_size=8), st.text(min_size=9, max_size=40), st.just(""), st.just("ü" * 12))
scalars = st.one_of(texts, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False))
clean_values = st.one_of(
    scalars,
    st.lists(texts, max_size=4).map(tuple),
    st.lists(st.integers(-5, 5), max_size=4).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(st.floats(allow_nan=False), max_size=3).map(tuple),
)
"""Values the SDK keeps as they are (apart from truncating long strings): what hoptrace's own attributes are."""


class Opaque:
    """An object without its own __str__ or __repr__: the SDK drops it."""


class Printable:
    """An object with a __str__: the SDK keeps its text."""

    def __str__(self) -> str:
        return "printable"


any_values = st.one_of(
    clean_values,
    st.lists(texts, max_size=4),
    st.lists(st.one_of(st.none(), st.integers(-3, 3)), max_size=4),
    st.lists(st.one_of(texts, st.integers(-3, 3), st.booleans()), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=3),
    st.sampled_from([None, b"bytes", b"\xff\xfe", Opaque(), Printable(), 2**64, -(2**70), [[1, 2], ["x"]], {"nested": {"deep": [1]}}]),
)
"""Any value user code may pass: valid, to be converted, to be dropped."""
any_keys = st.one_of(keys, st.sampled_from(["", 7, None, ("tuple",)]))
clean_attributes = st.dictionaries(keys, clean_values, max_size=MOST_OWN_ATTRIBUTES)
any_attributes = st.dictionaries(any_keys, any_values, max_size=6)
explicit_times = st.one_of(st.none(), st.integers(1, EXPLICIT_TIMES - 1))
trace_states = st.one_of(st.none(), st.just(TraceState([("vendor", "v1")])), st.just(TraceState([("a", "1"), ("b", "2")])))


def span_contexts(valid: bool = True) -> st.SearchStrategy[SpanContext]:
    ids = (st.integers(1, U128), st.integers(1, U64)) if valid else (st.sampled_from([0, 5]), st.sampled_from([0, 9]))
    return st.builds(SpanContext, *ids, st.booleans(), st.integers(0, 255).map(TraceFlags), trace_states)


link_specs = st.lists(
    st.tuples(st.one_of(span_contexts(), span_contexts(valid=False)), st.one_of(st.none(), st.dictionaries(keys, clean_values, max_size=5))),
    max_size=5,
)


def _raised(kind: type[Exception], message: str) -> Exception:
    """An exception with a traceback (raised and caught here)."""
    try:
        raise kind(message)
    except Exception as error:  # noqa: BLE001 - made to be recorded
        return error


class PaymentDeclined(Exception):
    """An exception of a user's module."""


exceptions = st.builds(_raised, st.sampled_from([ValueError, KeyError, PaymentDeclined, RuntimeError]), st.text(max_size=10))
status_codes = st.sampled_from(list(StatusCode))
operations = st.one_of(
    st.tuples(st.just("set_attribute"), any_keys, any_values),
    st.tuples(st.just("set_attributes"), any_attributes),
    st.tuples(st.just("add_event"), st.text(max_size=6), st.one_of(st.none(), any_attributes), explicit_times),
    st.tuples(st.just("record_exception"), exceptions, st.one_of(st.none(), any_attributes), explicit_times, st.booleans()),
    st.tuples(
        st.just("set_status"), st.builds(Status, status_codes, st.one_of(st.none(), st.text(max_size=6))), st.one_of(st.none(), st.text(max_size=4))
    ),
    st.tuples(st.just("set_status_code"), status_codes, st.one_of(st.none(), st.text(max_size=6))),
    st.tuples(st.just("update_name"), st.text(max_size=10)),
    st.tuples(st.just("add_link"), st.one_of(span_contexts(), span_contexts(valid=False)), st.one_of(st.none(), any_attributes)),
    st.tuples(st.just("exit_with_error"), exceptions),
    st.tuples(st.just("end")),
)
limit_values = st.one_of(
    st.none(), st.just(SpanLimits.UNSET), st.integers(0, 4), st.sampled_from([MOST_OWN_ATTRIBUTES - 1, MOST_OWN_ATTRIBUTES, 128])
)
span_limits = st.one_of(
    st.just(SpanLimits()),
    st.builds(
        SpanLimits,
        max_attributes=limit_values,
        max_events=limit_values,
        max_links=limit_values,
        max_span_attributes=limit_values,
        max_event_attributes=limit_values,
        max_link_attributes=limit_values,
        max_attribute_length=st.one_of(st.none(), st.integers(0, 12)),
        max_span_attribute_length=st.one_of(st.none(), st.integers(0, 12)),
    ),
)
samplers = st.one_of(
    st.just(ALWAYS_ON),
    st.sampled_from([ALWAYS_OFF, DEFAULT_ON, TraceIdRatioBased(0.5), ParentBasedTraceIdRatio(0.3)]),
)


def apply(span: Any, operation: tuple[Any, ...]) -> None:
    """Run OPERATION on SPAN (through the public Span API only)."""
    name, *arguments = operation
    if name == "set_attribute":
        span.set_attribute(*arguments)
    elif name == "set_attributes":
        span.set_attributes(dict(arguments[0]))
    elif name == "add_event":
        event, attributes, timestamp = arguments
        span.add_event(event, None if attributes is None else dict(attributes), timestamp)
    elif name == "record_exception":
        error, attributes, timestamp, escaped = arguments
        span.record_exception(error, None if attributes is None else dict(attributes), timestamp, escaped)
    elif name == "set_status":
        span.set_status(*arguments)
    elif name == "set_status_code":
        span.set_status(*arguments)
    elif name == "update_name":
        span.update_name(arguments[0])
    elif name == "add_link":
        context, attributes = arguments
        span.add_link(context, None if attributes is None else dict(attributes))
    elif name == "exit_with_error":
        error = arguments[0]
        span.__exit__(type(error), error, error.__traceback__)
    elif name == "end":
        span.end()
    else:  # pragma: no cover - the strategy makes only the names above
        raise AssertionError(name)


def links_from(specs: list[tuple[SpanContext, dict[str, Any] | None]]) -> list[Link]:
    """Fresh Link objects (the SDK wraps a link's attributes in place, so each span gets its own)."""
    return [Link(context, None if attributes is None else dict(attributes)) for context, attributes in specs]


def start_both(
    lean_side: Side, sdk_side: Side, name: str, parent: SpanContext | None, kind: SpanKind, attributes: dict[str, Any], specs: list[Any]
) -> tuple[Any, Any]:
    """The lean span (or its NonRecordingSpan) and the SDK's, started alike."""
    lean = LeanTracer.of(lean_side.tracer)
    assert lean is not None, "the lean tracer declined a configuration it supports"
    lean_side.add_user_processor()  # after the lean tracer was made: processors added later must still be called
    sdk_side.add_user_processor()
    parent_context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else Context()
    context = lean.new_context(parent)
    if context.trace_flags.sampled:
        ours: Any = lean.start(name, context, parent, parent_context, kind, dict(attributes), links_from(specs))
        assert type(ours) is HopSpan
    else:
        ours = NonRecordingSpan(context)
    sdk_context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else Context()
    theirs = sdk_side.tracer.start_span(name, sdk_context, kind, dict(attributes), links_from(specs))
    return ours, theirs


def json_without_times(span: ReadableSpan) -> dict[str, Any] | str:
    """``span.to_json()`` parsed, its start and end times and its clock-given event timestamps taken out (or the error it raised)."""
    try:
        found = json.loads(span.to_json())
    except TypeError as error:  # the SDK's to_json cannot print every attribute value the SDK keeps (bytes)
        return f"{type(error).__name__}: {error}"
    found.pop("start_time")
    found.pop("end_time")
    for event, original in zip(found["events"], span.events, strict=True):
        if original.timestamp >= EXPLICIT_TIMES:
            event.pop("timestamp")
    return found


def assert_same_spans(lean_side: Side, sdk_side: Side) -> None:
    ours, theirs = lean_side.exporter.get_finished_spans(), sdk_side.exporter.get_finished_spans()
    assert len(ours) == len(theirs)
    for lean, sdk in zip(ours, theirs, strict=True):
        assert snapshot(lean) == snapshot(sdk)
        assert json_without_times(lean) == json_without_times(sdk)
        assert lean.end_time >= lean.start_time
    assert lean_side.user.seen == sdk_side.user.seen


EXAMPLES = settings(
    max_examples=250, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
"""Derandomized: the same examples every run (a failure is reproduced by running the test again)."""
FULL = {f"own.{n}": n for n in range(MOST_OWN_ATTRIBUTES)}
"""As many attributes as hoptrace may put on a span itself."""
user_sets = st.one_of(st.none(), st.none(), st.none(), any_attributes)
"""What the user processor sets in on_start: mostly nothing (setting anything makes the lean span's attributes the SDK's own)."""


@EXAMPLES
@given(
    seed=st.integers(0, 2**32),
    random_trace_ids=st.booleans(),
    sampler=samplers,
    parent=st.one_of(st.none(), span_contexts()),
    name=st.text(max_size=12),
    kind=st.sampled_from(list(SpanKind)),
    attributes=clean_attributes,
    specs=link_specs,
    ops=st.lists(operations, max_size=14),
    on_start_sets=user_sets,
)
def test_a_lean_span_is_the_sdk_span(  # noqa: PLR0913 - the generated inputs
    seed: int,
    random_trace_ids: bool,
    sampler: Sampler,
    parent: SpanContext | None,
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    specs: list[Any],
    ops: list[tuple[Any, ...]],
    on_start_sets: dict[str, Any] | None,
) -> None:
    """With the default limits: same context, same finished span, same to_json, same processor view, whatever the operations."""
    run_both(SpanLimits(), seed, random_trace_ids, sampler, parent, name, kind, attributes, specs, ops, on_start_sets)


@EXAMPLES
@given(
    limits=span_limits,
    seed=st.integers(0, 2**32),
    parent=st.one_of(st.none(), span_contexts()),
    kind=st.sampled_from(list(SpanKind)),
    attributes=clean_attributes,
    specs=link_specs,
    ops=st.lists(operations, max_size=20),
    on_start_sets=user_sets,
)
@example(SpanLimits(max_span_attributes=MOST_OWN_ATTRIBUTES), 1, None, SpanKind.INTERNAL, FULL, [], [("set_attribute", "one more", 1)], None)
@example(SpanLimits(max_span_attributes=MOST_OWN_ATTRIBUTES), 1, None, SpanKind.INTERNAL, FULL, [], [], {"set on start": True})
def test_a_lean_span_keeps_the_span_limits_as_the_sdk_span(  # noqa: PLR0913 - the generated inputs
    limits: SpanLimits,
    seed: int,
    parent: SpanContext | None,
    kind: SpanKind,
    attributes: dict[str, Any],
    specs: list[Any],
    ops: list[tuple[Any, ...]],
    on_start_sets: dict[str, Any] | None,
) -> None:
    """Under small SpanLimits (attribute count and length, events, links, their attributes) the lean span drops and truncates as the SDK's."""
    run_both(limits, seed, True, ALWAYS_ON, parent, "limited", kind, attributes, specs, ops, on_start_sets)


small = st.one_of(st.integers(0, 3), st.none(), st.sampled_from([MOST_OWN_ATTRIBUTES - 1, MOST_OWN_ATTRIBUTES]))
small_limits = st.builds(
    SpanLimits,
    max_events=small,
    max_links=small,
    max_span_attributes=small,
    max_event_attributes=small,
    max_link_attributes=small,
    max_attribute_length=st.one_of(st.none(), st.integers(0, 6)),
    max_span_attribute_length=st.one_of(st.none(), st.none(), st.integers(0, 6)),
)
untouching = operations.filter(lambda operation: operation[0] not in ("set_attribute", "set_attributes"))
"""Operations that leave the span's attributes alone (so the lean span keeps its own plain attributes to the end)."""


@EXAMPLES
@given(
    limits=small_limits,
    seed=st.integers(0, 2**32),
    kind=st.sampled_from(list(SpanKind)),
    attributes=clean_attributes,
    specs=st.one_of(st.just([]), link_specs),
    ops=st.lists(untouching, max_size=12),
)
@example(SpanLimits(max_span_attributes=1), 1, SpanKind.INTERNAL, {"a": 1, "b": 2}, [], [])
@example(SpanLimits(max_span_attribute_length=2), 1, SpanKind.INTERNAL, {"a": "long", "b": ("xyz", "q")}, [], [])
@example(SpanLimits(max_span_attributes=MOST_OWN_ATTRIBUTES), 1, SpanKind.INTERNAL, FULL, [], [])
@example(SpanLimits(max_links=1), 1, SpanKind.INTERNAL, {}, [], [("add_link", SpanContext(1, 2, False), None)] * 2)
@example(SpanLimits(max_events=1), 1, SpanKind.INTERNAL, {}, [], [("add_event", "e", None, 5)] * 2)
@example(SpanLimits(max_links=0), 1, SpanKind.INTERNAL, {}, [(SpanContext(1, 2, False), {"k": 1})], [("add_link", SpanContext(1, 3, False), None)])
@example(SpanLimits(max_event_attributes=1, max_attribute_length=1), 1, SpanKind.INTERNAL, {}, [], [("add_event", "e", {"a": "xy", "b": "z"}, 5)])
def test_the_lean_spans_own_attributes_events_and_links_keep_the_limits(  # noqa: PLR0913 - the generated inputs
    limits: SpanLimits, seed: int, kind: SpanKind, attributes: dict[str, Any], specs: list[Any], ops: list[tuple[Any, ...]]
) -> None:
    """With no user code touching the attributes (the lean span's plain dict and lazy events and links lists stay), the limits hold as in the SDK."""
    run_both(limits, seed, True, ALWAYS_ON, None, "untouched", kind, attributes, specs, ops, None)


def run_both(  # noqa: PLR0913 - the generated inputs
    limits: SpanLimits,
    seed: int,
    random_trace_ids: bool,
    sampler: Sampler,
    parent: SpanContext | None,
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    specs: list[Any],
    ops: list[tuple[Any, ...]],
    on_start_sets: dict[str, Any] | None,
) -> None:
    lean_side = Side(sampler, limits, seed, random_trace_ids, on_start_sets)
    sdk_side = Side(sampler, limits, seed, random_trace_ids, on_start_sets)
    ours, theirs = start_both(lean_side, sdk_side, name, parent, kind, attributes, specs)

    assert context_of(ours.get_span_context()) == context_of(theirs.get_span_context())
    assert ours.is_recording() == theirs.is_recording()
    assert isinstance(theirs, SdkSpan) == (type(ours) is HopSpan)
    if type(ours) is HopSpan:  # an open lean span (plain attributes, no events list yet) prints as the SDK's
        assert json_without_times(ours) == json_without_times(theirs)
    for operation in [*ops, ("end",), *ops[:3], ("end",)]:
        apply(ours, operation)
        apply(theirs, operation)
        assert ours.is_recording() == theirs.is_recording()
    assert_same_spans(lean_side, sdk_side)
    if not isinstance(theirs, SdkSpan):
        assert lean_side.exporter.get_finished_spans() == () and lean_side.user.seen == []


@EXAMPLES
@given(
    limits=st.one_of(st.just(SpanLimits()), small_limits),
    attributes=st.dictionaries(keys, clean_values, max_size=MOST_OWN_ATTRIBUTES // 2),
    own=st.lists(st.tuples(keys, clean_values), max_size=MOST_OWN_ATTRIBUTES // 2),
    then=st.lists(operations, max_size=4),
)
@example(SpanLimits(), {"a": 1, "b": 2}, [("a", 3)], [])
@example(SpanLimits(max_span_attributes=MOST_OWN_ATTRIBUTES), {"a": 1, "b": 2}, [("a", 3)], [("set_attributes", dict(list(FULL.items())[:-1]))])
def test_set_own_is_the_sdk_set_attribute_for_hoptraces_own_attributes(
    limits: SpanLimits, attributes: dict[str, Any], own: list[tuple[str, Any]], then: list[tuple[Any, ...]]
) -> None:
    """HopSpan.set_own (hoptrace's clean attributes, at most MOST_OWN_ATTRIBUTES in all) leaves the span as set_attribute leaves the SDK's."""
    lean_side, sdk_side = Side(ALWAYS_ON, limits, 5, True, None), Side(ALWAYS_ON, limits, 5, True, None)
    ours, theirs = start_both(lean_side, sdk_side, "own", None, SpanKind.CONSUMER, attributes, [])
    for key, value in own:
        ours.set_own(key, value)
        theirs.set_attribute(key, value)
    for operation in [*then, ("end",)]:
        apply(ours, operation)
        apply(theirs, operation)
    ours.set_own("after end", 1)  # ignored, as set_attribute on an ended span
    theirs.set_attribute("after end", 1)
    assert_same_spans(lean_side, sdk_side)


def test_the_lean_span_is_the_sdk_span_class_and_what_the_processors_get() -> None:
    """The lean span is an SDK Span (every isinstance check holds), and at its end the processors get a finished span that cannot change."""
    side = Side(ALWAYS_ON, SpanLimits(), 1, True, None)
    side.add_user_processor()
    lean = LeanTracer.of(side.tracer)
    assert lean is not None
    context = lean.new_context(None)
    span = lean.start("s", context, None, Context(), SpanKind.PRODUCER, {"a": 1})
    assert isinstance(span, SdkSpan) and isinstance(span, ReadableSpan) and isinstance(span, trace.Span)
    span.end()
    [finished] = side.exporter.get_finished_spans()
    before = snapshot(finished, times=True)
    span.set_attribute("late", 1)
    span.set_attributes({"late": 2})
    span.add_event("late")
    span.record_exception(ValueError("late"))
    span.set_status(StatusCode.ERROR)
    span.update_name("late")
    span.add_link(SpanContext(1, 2, False))
    span.end()
    assert snapshot(finished, times=True) == before
    assert (before["name"], before["attributes"], before["events"], before["links"]) == ("s", [("a", "int", 1)], [], [])
    assert [kind for kind, _, _ in side.user.seen] == ["start", "end"]


class Choreographed(SpanLimits):
    """Span limits whose ``max_events`` and ``max_links``, while armed, make two threads that read them take turns.

    The first reader waits until the second is reading too; the second waits until the test says
    the first thread is done. So two threads that both found a span without an events (links) list
    yet go on one after the other: the interleaving a lazily made list must survive.
    """

    def __init__(self) -> None:
        self.armed = ""
        self.first_in, self.second_in, self.first_done = threading.Event(), threading.Event(), threading.Event()
        super().__init__()

    def _turn(self, name: str) -> None:
        if self.armed != name:
            return
        if not self.first_in.is_set():
            self.first_in.set()
            self.second_in.wait(2)
        else:
            self.second_in.set()
            self.first_done.wait(2)

    @property
    def max_events(self) -> int | None:
        self._turn("events")
        return self._max_events

    @max_events.setter
    def max_events(self, value: int | None) -> None:
        self._max_events = value

    @property
    def max_links(self) -> int | None:
        self._turn("links")
        return self._max_links

    @max_links.setter
    def max_links(self, value: int | None) -> None:
        self._max_links = value


@pytest.mark.parametrize("what", ["events", "links"])
@pytest.mark.parametrize("lean", [True, False], ids=["lean span", "sdk span"])
def test_the_first_events_or_links_added_from_two_threads_are_all_kept(what: str, lean: bool) -> None:
    """The SDK span is thread-safe: two threads adding the first event (link) of a span keep both; so must the lean span's lazily made list."""
    limits = Choreographed()
    side = Side(ALWAYS_ON, limits, 9, True, None)
    if lean:
        tracer = LeanTracer.of(side.tracer)
        assert tracer is not None
        span: Any = tracer.start("shared", tracer.new_context(None), None, Context(), SpanKind.CONSUMER, {})
    else:
        span = side.tracer.start_span("shared", Context(), SpanKind.CONSUMER)

    def add(number: int) -> None:
        if what == "events":
            span.add_event(f"from thread {number}")
        else:
            span.add_link(SpanContext(number + 1, number + 1, False))

    limits.armed = what
    first, second = threading.Thread(target=add, args=(0,)), threading.Thread(target=add, args=(1,))
    first.start()
    limits.first_in.wait(0.5)  # the lean span reads the limit here; the SDK's (made with its lists) does not, and goes on
    second.start()
    first.join(5)
    limits.first_done.set()
    second.join(5)
    limits.armed = ""
    span.end()
    [finished] = side.exporter.get_finished_spans()
    kept = [event.name for event in finished.events] if what == "events" else [link.context.span_id for link in finished.links]
    assert sorted(kept) == (["from thread 0", "from thread 1"] if what == "events" else [1, 2])


def test_ids_and_flags_follow_the_parent_or_the_id_generator() -> None:
    """A root gets a new trace id and the generator's random flag; a child keeps the parent's trace id, random flag and trace state."""
    for random_trace_ids in (False, True):
        side = Side(ALWAYS_ON, SpanLimits(), 3, random_trace_ids, None)
        lean = LeanTracer.of(side.tracer)
        assert lean is not None
        root = lean.new_context(None)
        assert (root.is_remote, root.trace_flags.sampled, root.trace_flags.random_trace_id) == (False, True, random_trace_ids)
        parent = SpanContext(0xABC, 0xDEF, True, TraceFlags(0x02), TraceState([("k", "v")]))
        child = lean.new_context(parent)
        assert (child.trace_id, child.is_remote, int(child.trace_flags), dict(child.trace_state)) == (0xABC, False, 0x03, {"k": "v"})


# What LeanTracer.of declines.


class OwnSampler(Sampler):
    """A user's own sampler (no shortcut)."""

    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        return ALWAYS_ON.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "own"


class OwnTracer(Tracer):
    """A subclass of the SDK's tracer (its start_span may be its own)."""


def _disabled_by_configurator() -> Any:
    return TracerProvider(_tracer_configurator=_disable_tracer_configurator).get_tracer("t")


def _disabled_sdk() -> Any:
    with mock.patch.dict(os.environ, {"OTEL_SDK_DISABLED": "true"}):
        return TracerProvider().get_tracer("t")


def _with_tracer_metrics() -> Any:
    with mock.patch.dict(os.environ, {"OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": "true"}):
        return TracerProvider(meter_provider=MeterProvider()).get_tracer("t")


def _subclassed() -> Any:
    provider = TracerProvider()
    sdk = provider.get_tracer("t")
    return OwnTracer(
        sdk.sampler, sdk.resource, sdk.span_processor, sdk.id_generator, sdk.instrumentation_info, SpanLimits(), sdk._instrumentation_scope
    )


DECLINED: dict[str, Callable[[], Any]] = {
    "no-op tracer": trace.NoOpTracer,
    "no-op provider": lambda: trace.NoOpTracerProvider().get_tracer("t"),
    "proxy tracer": lambda: trace.ProxyTracerProvider().get_tracer("t"),
    "OTEL_SDK_DISABLED": _disabled_sdk,
    "tracer disabled by its configurator": _disabled_by_configurator,
    "own sampler": lambda: TracerProvider(OwnSampler()).get_tracer("t"),
    "always record sampler": lambda: TracerProvider(AlwaysRecordSampler(ALWAYS_OFF)).get_tracer("t"),
    "parent based around an own sampler": lambda: TracerProvider(ParentBased(OwnSampler())).get_tracer("t"),
    "SDK tracer metrics on": _with_tracer_metrics,
    "tracer subclass": _subclassed,
    "not a tracer": object,
}


@pytest.mark.parametrize("case", list(DECLINED))
def test_lean_tracer_declines_what_it_cannot_reproduce(case: str) -> None:
    """LeanTracer.of gives None for no-op, proxy, disabled and subclassed tracers, samplers without a shortcut, SDK tracer metrics."""
    assert LeanTracer.of(DECLINED[case]()) is None


def test_lean_tracer_accepts_the_sdk_tracer_with_its_samplers() -> None:
    """LeanTracer.of is not None for the SDK tracer with the SDK's samplers (the declines above are not all it does)."""
    for sampler in (ALWAYS_ON, ALWAYS_OFF, DEFAULT_ON, TraceIdRatioBased(0.1), ParentBasedTraceIdRatio(0.9)):
        assert LeanTracer.of(TracerProvider(sampler).get_tracer("t")) is not None


# A lean tracer made earlier, used after its provider changed.


def test_a_tracer_disabled_after_its_lean_twin_was_made_goes_back_to_start_span() -> None:
    """A tracer disabled by a configurator set later (the SDK updates existing tracers) records nothing; Tracers stops handing out its lean twin."""
    provider = TracerProvider(ALWAYS_ON)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracers = Tracers(provider)
    tracer, lean = tracers.get()
    assert lean is not None and lean.enabled
    provider._set_tracer_configurator(tracer_configurator=_disable_tracer_configurator)
    assert not lean.enabled
    assert tracers.get() == (tracer, None)
    assert not tracer.start_span("sdk").is_recording()
    assert exporter.get_finished_spans() == ()


def test_a_lean_tracer_made_before_a_fork_gives_the_childs_resource() -> None:
    """After a fork the SDK merges the child's process-dependent resource (service.instance.id) into its tracers; lean spans must carry it too."""
    provider = TracerProvider(ALWAYS_ON, Resource.create({"service.name": "forked"}), False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    lean = LeanTracer.of(tracer)
    assert lean is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compare, report through the pipe, leave without running the parent's exit handlers
        try:
            tracer.start_span("sdk").end()
            context = lean.new_context(None)
            lean.start("lean", context, None, Context(), SpanKind.INTERNAL, {}).end()
            sdk, ours = exporter.get_finished_spans()
            report = {"sdk": dict(sdk.resource.attributes), "lean": dict(ours.resource.attributes)}
        except BaseException:  # noqa: BLE001 - reported to the parent
            report = {"error": traceback.format_exc()}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert "error" not in report, report.get("error")
    parents = provider.resource.attributes["service.instance.id"]
    assert report["sdk"]["service.instance.id"] != parents, "the SDK did not refresh its resource in the child"
    assert report["lean"] == report["sdk"]
