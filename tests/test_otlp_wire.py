"""hoptrace's OTLP span encoder gives exactly the SDK encoder's request, field by field and byte for byte.

The property test generates batches of spans (every attribute type, events, links, status,
all span kinds, non-ASCII, empty and huge strings, several resources and scopes), encodes
them with `SpanEncoder` and with the SDK's ``encode_spans``, decodes hoptrace's bytes with
the official ``ExportTraceServiceRequest`` and asserts (1) the decoded message equals the
SDK's field by field (doubles compared by their bits, so nan and -0.0 count), and (2) the
bytes equal the SDK's ``SerializeToString(deterministic=True)``. One encoder with small
caches encodes one or two batches per example, so cache hits, evictions and values that
change between batches are exercised too.
"""

from __future__ import annotations

import gc
import logging
import math
import struct
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState, set_span_in_context

from hoptrace.pipeline.telemetry.otlp_wire import SpanEncoder

U64 = 2**64 - 1


def assert_same(ours: Message, sdk: Message, path: str = "request") -> None:
    """Compare two messages field by field (recursively), doubles by their bits; fail naming the first differing field."""
    assert ours.DESCRIPTOR is sdk.DESCRIPTOR, path
    ours_fields = {field.name: value for field, value in ours.ListFields()}
    sdk_fields = {field.name: value for field, value in sdk.ListFields()}
    assert ours_fields.keys() == sdk_fields.keys(), f"{path}: fields {sorted(ours_fields)} != {sorted(sdk_fields)}"
    for field, sdk_value in sdk.ListFields():
        value, where = ours_fields[field.name], f"{path}.{field.name}"
        if field.is_repeated:
            assert len(value) == len(sdk_value), f"{where}: {len(value)} items != {len(sdk_value)}"
            pairs = [(f"{where}[{n}]", a, b) for n, (a, b) in enumerate(zip(value, sdk_value, strict=True))]
        else:
            pairs = [(where, value, sdk_value)]
        for item_path, a, b in pairs:
            if field.type == field.TYPE_MESSAGE:
                assert_same(a, b, item_path)
            elif field.type == field.TYPE_DOUBLE:
                assert struct.pack("<d", a) == struct.pack("<d", b), f"{item_path}: {a!r} != {b!r}"
            else:
                assert a == b, f"{item_path}: {a!r} != {b!r}"


def assert_encodes_like_sdk(encoder: SpanEncoder, spans: list[ReadableSpan]) -> bytes:
    """Both assertions of this module for one batch; returns hoptrace's bytes."""
    ours = encoder.encode(spans)
    sdk = encode_spans(spans)
    assert_same(ExportTraceServiceRequest.FromString(ours), sdk)
    expected = sdk.SerializeToString(deterministic=True)
    differ = next((n for n, (a, b) in enumerate(zip(ours, expected, strict=False)) if a != b), min(len(ours), len(expected)))
    assert ours == expected, f"bytes differ from offset {differ}: {ours[differ : differ + 16].hex()} != {expected[differ : differ + 16].hex()}"
    return ours


class DroppingSpan(ReadableSpan):
    """A ReadableSpan that reports given dropped counts (the SDK derives them from its bounded collections)."""

    def __init__(self, dropped: tuple[int, int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


class DroppingEvent(Event):
    """An Event with a given dropped attribute count."""

    def __init__(self, dropped: int, name: str, attributes: dict[str, Any], timestamp: int) -> None:
        super().__init__(name, attributes, timestamp)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped


class DroppingLink(Link):
    """A Link with a given dropped attribute count."""

    def __init__(self, dropped: int, context: SpanContext, attributes: dict[str, Any]) -> None:
        super().__init__(context, attributes)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped


# Strings: any Unicode scalar value (surrogates cannot be UTF-8), empty ones, and huge ones (3-byte varint lengths).
short_text = st.text(st.characters(codec="utf-8"), max_size=12)
huge_text = st.builds(lambda char, count: char * count, st.characters(codec="utf-8"), st.integers(100, 40_000))
text = st.one_of(short_text, short_text, short_text, huge_text, st.sampled_from(["", "é", "日本語", "🚀", "kafka", "\x00"]))
keys = st.one_of(st.sampled_from(["k", "hoptrace.job.id", ""]), st.sampled_from(["messaging.system", "ключ"]), short_text)
int64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 127, 128, 2**31, -(2**63), 2**63 - 1]))
floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 5e-324]))
confusable = st.sampled_from([0, 1, True, False, 0.0, -0.0, 1.0, "1", "", b""])  # equal in Python, different on the wire
scalars = st.one_of(confusable, st.booleans(), int64, floats, text, st.binary(max_size=20))
# Values the SDK's encoder accepts in attributes, plus ones it logs and leaves out (ints beyond int64).
values = st.one_of(
    confusable,
    st.sampled_from([0.0, -0.0]),
    scalars,
    st.none(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64]),
    st.lists(st.one_of(scalars, st.none()), max_size=4).map(tuple),
    *(st.lists(kind, max_size=4) for kind in (st.booleans(), int64, floats, text)),
    st.dictionaries(short_text, scalars, max_size=3),
)
attributes = st.dictionaries(keys, values, max_size=6)
resource_attributes = st.dictionaries(
    keys.filter(bool), st.one_of(st.booleans(), int64, floats, text, st.lists(text, max_size=3).map(tuple)), max_size=4
)
trace_states = st.lists(
    st.tuples(st.sampled_from(["congo", "rojo", "vendor@tenant", "a1"]), st.sampled_from(["t61rcWkgMzE", "00f067aa0ba902b7", "x"])),
    max_size=3,
    unique_by=lambda entry: entry[0],
).map(TraceState)
contexts = st.builds(
    SpanContext,
    trace_id=st.integers(0, 2**128 - 1),
    span_id=st.integers(0, U64),
    is_remote=st.booleans(),
    trace_flags=st.sampled_from([TraceFlags(0), TraceFlags(1)]),
    trace_state=trace_states,
)
counts = st.one_of(st.just(0), st.integers(0, 2**32 - 1))
events = st.builds(DroppingEvent, counts, text, attributes, st.integers(0, U64))
links = st.builds(DroppingLink, counts, contexts, attributes)
statuses = st.one_of(
    st.none(),
    st.builds(Status, st.sampled_from(list(StatusCode))),
    st.builds(Status, st.just(StatusCode.ERROR), st.one_of(st.none(), text)),
)
resources = st.builds(Resource, resource_attributes, st.one_of(st.none(), st.sampled_from(["", "https://opentelemetry.io/schemas/1.26.0"])))
scopes = st.one_of(
    st.none(),
    st.builds(
        InstrumentationScope,
        short_text,
        st.one_of(st.none(), short_text),
        st.one_of(st.none(), st.just("https://opentelemetry.io/schemas/1.21.0")),
        resource_attributes,
    ),
)


@st.composite
def batches(draw: st.DrawFn) -> list[ReadableSpan]:
    """1-8 spans spread over 1-3 resources and 1-3 scopes, some as equal copies of one another."""
    holders = draw(st.lists(st.tuples(resources, scopes), min_size=1, max_size=3))
    spans = []
    for _ in range(draw(st.integers(1, 8))):
        resource, scope = draw(st.sampled_from(holders))
        if draw(st.booleans()):  # an equal but distinct object: the SDK groups by equality
            resource = Resource(resource.attributes, resource.schema_url)
        spans.append(
            DroppingSpan(
                dropped=(draw(counts), draw(counts), draw(counts)),
                name=draw(text),
                context=draw(contexts),
                parent=draw(st.one_of(st.none(), contexts)),
                resource=resource,
                attributes=draw(attributes),
                events=draw(st.lists(events, max_size=2)),
                links=draw(st.lists(links, max_size=2)),
                kind=draw(st.sampled_from(list(SpanKind))),
                status=draw(statuses),
                start_time=draw(st.one_of(st.none(), st.integers(0, U64))),
                end_time=draw(st.one_of(st.none(), st.integers(0, U64))),
                instrumentation_scope=scope,
            )
        )
    return spans


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(batches(), min_size=1, max_size=2))
def test_encodes_generated_batches_like_the_sdk(consecutive: list[list[ReadableSpan]]) -> None:
    encoder = SpanEncoder(max_cached_pairs=8, max_cached_bytes=48)  # small: hits, misses and evictions all happen
    logging.disable(logging.ERROR)  # both encoders log each attribute they leave out
    try:
        for spans in consecutive:  # the second batch meets the first one's cache
            assert_encodes_like_sdk(encoder, spans)
    finally:
        logging.disable(logging.NOTSET)


def sdk_spans(limits: SpanLimits | None = None) -> list[ReadableSpan]:
    """Spans from a real tracer: a remote parent, events, links, an error status, and (with ``limits``) dropped counts."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("hoptrace", "0.1.0", schema_url="https://opentelemetry.io/schemas/1.26.0", attributes={"scope.tag": 1})
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1), TraceState([("congo", "t61rcWkgMzE")]))
    link = Link(remote, {"link.kind": "batch", "link.n": 3, "link.extra": True})
    with tracer.start_as_current_span(
        "validate process", context=set_span_in_context(NonRecordingSpan(remote)), kind=SpanKind.CONSUMER, links=[link, link]
    ) as span:
        span.set_attributes({"messaging.kafka.offset": 42, "ratio": 0.5, "tags": ("a", "b"), "flags": [True, False], "big": -(2**63)})
        span.add_event("retry", {"attempt": 2, "delay": 1.5, "why": "timeout"})
        span.add_event("retry", {"attempt": 3})
        span.set_status(Status(StatusCode.ERROR, "boom: ошибка"))
        with tracer.start_as_current_span("validate publish", kind=SpanKind.PRODUCER) as child:
            child.set_attribute("messaging.destination.name", "orders.enrich")
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_encodes_real_sdk_spans_like_the_sdk() -> None:
    assert_encodes_like_sdk(SpanEncoder(), sdk_spans())


def test_a_span_encoded_alone_is_the_sdk_request_of_it_and_its_kept_body_encodes_a_batch_alike() -> None:
    spans = sdk_spans()
    encoder = SpanEncoder()
    for span in spans:  # as the span spool does when each span ends
        alone = encoder.encode_one(span)
        assert alone == encode_spans([span]).SerializeToString(deterministic=True)
    assert_encodes_like_sdk(SpanEncoder(), spans)  # a fresh encoder (the exporter's), reusing the bodies the spans keep


def test_encodes_dropped_counts_of_a_limited_tracer_like_the_sdk() -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1, max_event_attributes=1, max_link_attributes=1)
    spans = sdk_spans(limits)
    assert spans[1].dropped_attributes and spans[1].dropped_events and spans[1].dropped_links
    assert_encodes_like_sdk(SpanEncoder(), spans)


def test_an_empty_batch_is_an_empty_request() -> None:
    assert SpanEncoder().encode([]) == b"" == encode_spans([]).SerializeToString()


def cached_entries(encoder: SpanEncoder) -> int:
    """How many encodings ENCODER's caches (the dicts among its attributes) hold now."""
    return sum(len(cache) for cache in vars(encoder).values() if isinstance(cache, dict))


def test_caches_stay_bounded_under_unique_values() -> None:
    encoder = SpanEncoder(max_cached_pairs=16)
    resource = Resource({"service.name": "orders"})
    for batch in range(20):
        spans = [
            ReadableSpan(
                name=f"stage-{n % 3} process",
                context=SpanContext(batch * 1000 + n + 1, n + 1, False),
                resource=resource,
                attributes={"hoptrace.job.id": f"{batch:04d}{n:028x}", "hoptrace.stage": "validate", "offset": batch * 1000 + n},
                kind=SpanKind.CONSUMER,
                start_time=1,
                end_time=2,
            )
            for n in range(50)
        ]
        assert_encodes_like_sdk(encoder, spans)
        assert cached_entries(encoder) <= 3 * 16 + 2  # one resource, no scope


@pytest.mark.parametrize("values", [[1, True, 1.0, "1", 1], [0.0, -0.0, 0.0, False, 0], [math.nan, -math.nan, math.inf, "nan"]])
def test_a_value_that_changes_between_batches_is_not_served_from_cache(values: list[Any]) -> None:
    encoder = SpanEncoder()
    for value in values:  # equal in Python (1 == True == 1.0, 0.0 == -0.0), different on the wire
        span = ReadableSpan(name="s", context=SpanContext(1, 2, False), attributes={"k": value, "seq": (value,)}, start_time=1, end_time=2)
        assert_encodes_like_sdk(encoder, [span])


def test_a_new_resource_or_scope_is_encoded_even_where_an_old_one_lived() -> None:
    encoder = SpanEncoder()
    for n in range(5):  # each resource and scope dies before the next is made: CPython may reuse the address
        span = ReadableSpan(
            name="s",
            context=SpanContext(1, 2, False),
            resource=Resource({"service.name": f"svc-{n}"}),
            instrumentation_scope=InstrumentationScope(f"scope-{n}", str(n)),
        )
        assert_encodes_like_sdk(encoder, [span])
        del span
        gc.collect()


def test_attributes_the_sdk_cannot_encode_are_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    attributes = {"ok": 1, "too big": 2**64, "surrogate": "\ud800", "object": object(), "mixed": (1, 2**70), "after": "kept"}
    span = ReadableSpan(name="s", context=SpanContext(1, 2, False), attributes=attributes, start_time=1, end_time=2)
    with caplog.at_level(logging.ERROR, logger=SpanEncoder.__module__):
        request = ExportTraceServiceRequest.FromString(assert_encodes_like_sdk(SpanEncoder(), [span]))
    assert [kv.key for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes] == ["ok", "after"]
    assert sum("Failed to encode key" in record.getMessage() for record in caplog.records if record.name == SpanEncoder.__module__) == 4
