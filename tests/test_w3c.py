"""hoptrace.pipeline.w3c against the OpenTelemetry propagators: identical contexts for every header, valid or broken.

The fast path is only worth having if nobody can tell it from the propagators it stands in for:
the same span context (ids, flags, trace state, remote) and the same baggage, on a corpus of
valid and broken headers and on generated ones; and what it writes decodes to the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context

from hoptrace.pipeline import w3c
from hoptrace.pipeline.carriers import DICT_SETTER

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CORPUS: list[dict[str, str]] = [
    {},
    {"traceparent": TRACEPARENT},
    {"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
    {"traceparent": TRACEPARENT, "tracestate": "bad state ==="},
    {"traceparent": TRACEPARENT, "tracestate": "k=" + "v" * 600},
    {"traceparent": " \t" + TRACEPARENT + " "},
    {"traceparent": TRACEPARENT.replace("-01", "-00")},
    {"traceparent": TRACEPARENT.replace("00-", "ff-", 1)},
    {"traceparent": TRACEPARENT.replace("00-", "01-", 1) + "-extra"},
    {"traceparent": TRACEPARENT + "-extra"},
    {"traceparent": TRACEPARENT.upper()},
    {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"},
    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"},
    {"traceparent": ""},
    {"baggage": "hoptrace.job.id=abc,hoptrace.job.started_at=1700000000.500000,tenant=acme"},
    {"baggage": " tenant = acme , region=eu-west;ttl=60 ,, "},
    {"baggage": "k=caf%C3%A9,sp=a+b,pct=100%25"},
    {"baggage": "noequals,=novalue,k=,k2=v2"},
    {"baggage": "k=v,k=w"},
    {"baggage": "k=\u00e9"},
    {"baggage": ",".join(f"m{i}=1" for i in range(200))},
    {"baggage": "big=" + "v" * 5000 + ",small=1"},
    {"baggage": "bad key=1,ok=2,bad=va lue"},
    {"traceparent": TRACEPARENT, "baggage": "hoptrace.job.id=abc,tenant=acme"},
]


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """Both sides log each broken member; not what these tests look at."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def seen(context: Context) -> tuple[object, ...]:
    """What a context carries for W3C propagation: the parent span context's fields and the baggage."""
    span = trace.get_current_span(context).get_span_context()
    return (span.trace_id, span.span_id, int(span.trace_flags), span.is_remote, span.trace_state.to_header(), dict(baggage.get_all(context)))


def test_the_default_propagators_are_recognised() -> None:
    assert w3c.is_default(propagate.get_global_textmap())
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    assert not w3c.is_default(TraceContextTextMapPropagator())


@pytest.mark.parametrize("headers", CORPUS, ids=range(len(CORPUS)))
def test_extract_gives_the_propagators_context(headers: dict[str, str]) -> None:
    assert seen(w3c.extract(headers)) == seen(propagate.extract(headers, context=Context()))


@pytest.mark.parametrize("headers", CORPUS, ids=range(len(CORPUS)))
def test_inject_writes_what_decodes_to_the_propagators_headers(headers: dict[str, str]) -> None:
    context = propagate.extract(headers, context=Context())
    ours: dict[str, str] = {}
    w3c.inject(ours, DICT_SETTER, w3c.extract(headers))
    theirs: dict[str, str] = {}
    propagate.inject(theirs, context=context)
    assert ours.keys() == theirs.keys()
    assert seen(propagate.extract(ours, context=Context())) == seen(propagate.extract(theirs, context=Context()))


def test_an_unchanged_baggage_is_written_as_it_came_and_a_changed_one_is_encoded() -> None:
    header = "tenant=acme,hoptrace.job.id=abc"
    context = w3c.extract({"traceparent": TRACEPARENT, "baggage": header})
    same: dict[str, str] = {}
    w3c.inject(same, DICT_SETTER, context)
    changed: dict[str, str] = {}
    w3c.inject(changed, DICT_SETTER, baggage.set_baggage("region", "eu", context))
    assert same["baggage"] is header
    assert changed["baggage"] == "tenant=acme,hoptrace.job.id=abc,region=eu"


members = st.text(st.sampled_from("abAB09._-=;,% +\t\u00e9/"), max_size=24)
hexes = st.text(st.sampled_from("0123456789abcdefABCDEF-"), min_size=50, max_size=60)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    traceparent=st.one_of(st.none(), hexes, st.just(TRACEPARENT)),
    tracestate=st.one_of(st.none(), st.text(st.sampled_from("ab=,0@-_ *"), max_size=40)),
    bag=st.one_of(st.none(), st.lists(members, max_size=6).map(",".join)),
)
def test_generated_headers_give_the_propagators_context(traceparent: str | None, tracestate: str | None, bag: str | None) -> None:
    headers = {key: value for key, value in (("traceparent", traceparent), ("tracestate", tracestate), ("baggage", bag)) if value is not None}
    assert seen(w3c.extract(headers)) == seen(propagate.extract(headers, context=Context()))
