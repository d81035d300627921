"""``sdk_internals.sampling.shortcut`` decides exactly as the sampler's own ``should_sample``, or declines.

Proven here, on generated samplers, parents and 128-bit trace ids:

- for every sampler the shortcut claims (the SDK's ``ALWAYS_ON``/``ALWAYS_OFF`` and other
  ``StaticSampler`` s, ``TraceIdRatioBased`` at any rate including 0, 1 and the rounding edges,
  ``ParentBased`` with any of those as root and as each of its four delegates,
  ``ParentBasedTraceIdRatio``, and what ``OTEL_TRACES_SAMPLER``/``_ARG`` name through
  ``_KNOWN_SAMPLERS``), ``shortcut(sampler)(parent, trace_id)`` is the ``is_sampled()`` of
  ``should_sample`` called with a context holding that parent (or an empty one, or none, for a root);
  trace ids are drawn both at random and just around each ratio sampler's bound;
- every ``ParentBased`` combination of {always on, always off, ratio} in its five positions is
  checked exhaustively on a fixed grid of parents and trace ids;
- samplers it cannot answer for (``AlwaysRecordSampler``, ``RECORD_ONLY``, a subclass overriding
  ``should_sample``, a ``ParentBased`` with such a root or delegate, or a nested ``ParentBased``) give None;
- for a wider family of samplers, including subclasses that change only how their bound is
  computed or their description, the shortcut is either None or right (it never answers wrongly);
- a ``TraceIdRatioBased`` subclass that only narrows the class attribute ``TRACE_ID_LIMIT`` (which
  the SDK's ``should_sample`` masks the trace id with) gets no shortcut, or one that masks alike.

Hypothesis runs derandomized and without an example database: every run tries the same examples.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    AlwaysRecordSampler,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags, TraceState, set_span_in_context

from hoptrace.pipeline.telemetry.sdk_internals.sampling import shortcut

U64 = (1 << 64) - 1
U128 = (1 << 128) - 1
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
"""Derandomized: the same examples every run (a failure is reproduced by running the test again)."""

EDGE_RATES = (0.0, 1.0, 0.5, 0.1, 0.25, 2.0**-64, 2.0**-65, 1.5 * 2.0**-64, 2.0**-63, 5e-324, 1e-19, 1 - 2.0**-53, 1 - 2.0**-60, 0.9999999999)
"""Rates at and around the ends, where ``round(rate * 2**64)`` and the low-bit test are most delicate."""

rates = st.one_of(st.sampled_from(EDGE_RATES), st.floats(min_value=0.0, max_value=1.0, allow_nan=False))


class _AlwaysOnByEnv(StaticSampler):
    """A StaticSampler subclass that only renames itself (as the SDK's own ``_AlwaysOn`` does)."""

    def get_description(self) -> str:
        return "renamed"


def leaves() -> st.SearchStrategy[Sampler]:
    """The SDK's parent-ignoring samplers the shortcut answers for."""
    return st.one_of(
        st.sampled_from(
            [
                ALWAYS_ON,
                ALWAYS_OFF,
                StaticSampler(Decision.DROP),
                StaticSampler(Decision.RECORD_AND_SAMPLE),
                sampling._AlwaysOn(None),
                sampling._AlwaysOff(None),
            ]
        ),
        st.builds(_AlwaysOnByEnv, st.sampled_from([Decision.DROP, Decision.RECORD_AND_SAMPLE])),
        st.builds(TraceIdRatioBased, rates),
    )


def parent_based() -> st.SearchStrategy[Sampler]:
    """``ParentBased`` with any supported leaf as root and as each delegate (defaults left out at random)."""

    @st.composite
    def build(draw: st.DrawFn) -> Sampler:
        root = draw(leaves())
        names = ("remote_parent_sampled", "remote_parent_not_sampled", "local_parent_sampled", "local_parent_not_sampled")
        delegates = {name: draw(leaves()) for name in names if draw(st.booleans())}
        return ParentBased(root, **delegates)

    return st.one_of(
        build(),
        st.builds(ParentBasedTraceIdRatio, rates),
        st.sampled_from([DEFAULT_ON, DEFAULT_OFF, sampling._ParentBasedAlwaysOn(None), sampling._ParentBasedAlwaysOff(None)]),
    )


@st.composite
def from_environment(draw: st.DrawFn) -> Sampler:
    """What ``_get_from_env_or_default`` makes of every ``OTEL_TRACES_SAMPLER`` name in ``_KNOWN_SAMPLERS`` (and a bad one)."""
    name = draw(st.sampled_from([*sampling._KNOWN_SAMPLERS, "no_such_sampler"]))
    argument = draw(st.one_of(st.none(), st.sampled_from(["0", "1", "0.5", "1e-19", "0.0000000000000000001", "x", ""]), rates.map(repr)))
    env = {"OTEL_TRACES_SAMPLER": name}
    if argument is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = argument
    with mock.patch.dict(os.environ, env):
        if argument is None:
            os.environ.pop("OTEL_TRACES_SAMPLER_ARG", None)
        return sampling._get_from_env_or_default()


supported = st.one_of(leaves(), parent_based(), from_environment())


def span_contexts() -> st.SearchStrategy[SpanContext]:
    """Valid span contexts: remote or local, any trace flags (sampled, random trace id, other bits), with or without trace state."""
    states = st.one_of(
        st.none(),
        st.just(TraceState()),
        st.lists(
            st.tuples(st.sampled_from(["vendor", "rojo", "congo", "a@b"]), st.text(alphabet="abc123", min_size=1, max_size=8)),
            max_size=3,
            unique_by=lambda pair: pair[0],
        ).map(TraceState),
    )
    return st.builds(
        SpanContext,
        trace_id=st.integers(1, U128),
        span_id=st.integers(1, U64),
        is_remote=st.booleans(),
        trace_flags=st.integers(0, 255).map(TraceFlags),
        trace_state=states,
    )


parents = st.one_of(st.none(), span_contexts())


def _bounds(sampler: Any) -> Iterator[int]:
    """The bounds of every ``TraceIdRatioBased`` in SAMPLER (its root and delegates too)."""
    if isinstance(sampler, TraceIdRatioBased):
        yield sampler.bound
    for name in ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled", "_local_parent_not_sampled"):
        inner = getattr(sampler, name, None)
        if inner is not None:
            yield from _bounds(inner)


def trace_ids(draw: st.DrawFn, sampler: Sampler, parent: SpanContext | None) -> int:
    """A 128-bit trace id: random, the parent's, or with its low 64 bits just around a ratio bound of SAMPLER."""
    edges = sorted({low for bound in _bounds(sampler) for low in (bound - 1, bound, bound + 1) if 0 <= low <= U64} | {0, 1, U64})
    noise = draw(st.integers(0, U128))
    choices = [
        st.integers(0, U128),
        st.sampled_from(edges).map(lambda low: (noise >> 64) << 64 | low),  # random high half, low half at the edge
        st.sampled_from(edges).map(lambda low: (noise >> low.bit_length()) << low.bit_length() | low),  # random bits above the edge too
    ]
    if parent is not None:
        choices.append(st.just(parent.trace_id))
    return draw(st.one_of(choices))


def contexts_of(parent: SpanContext | None) -> list[Context | None]:
    """Every way ``should_sample`` may be given PARENT: in a context, or (a root) no context, an empty one, or an invalid span."""
    if parent is not None:
        return [set_span_in_context(NonRecordingSpan(parent))]
    return [None, Context(), set_span_in_context(INVALID_SPAN)]


def sdk_decision(sampler: Sampler, context: Context | None, trace_id: int) -> bool:
    result = sampler.should_sample(context, trace_id, "name")
    assert isinstance(result, SamplingResult)
    return result.decision.is_sampled()


def assert_agrees(sampler: Sampler, parent: SpanContext | None, trace_id: int) -> None:
    decide = shortcut(sampler)
    assert decide is not None, f"no shortcut for {sampler.get_description()}"
    ours = decide(parent, trace_id)
    assert isinstance(ours, bool), f"decide gave {ours!r}, not a bool"
    for context in contexts_of(parent):
        expected = sdk_decision(sampler, context, trace_id)
        case = f"{type(sampler).__name__} {sampler.get_description()} parent={parent} trace_id={trace_id:032x}"
        assert ours is expected, f"{case}: shortcut {ours}, should_sample {expected}"


def assert_agrees_on_drawn(data: st.DataObject, sampler: Sampler, parent: SpanContext | None) -> None:
    """``assert_agrees`` for several drawn trace ids, under PARENT and as a root."""
    for each in [None] if parent is None else [None, parent]:
        for trace_id in data.draw(st.lists(st.composite(lambda draw, each=each: trace_ids(draw, sampler, each))(), min_size=1, max_size=8)):
            assert_agrees(sampler, each, trace_id)


@SETTINGS
@given(st.data(), supported, parents)
def test_the_shortcut_decides_as_should_sample(data: st.DataObject, sampler: Sampler, parent: SpanContext | None) -> None:
    """For every sampler the shortcut supports, on any parent and trace id, its decision is should_sample's."""
    assert_agrees_on_drawn(data, sampler, parent)


@SETTINGS
@given(st.data(), rates, parents)
def test_ratio_samplers_decide_as_should_sample_at_their_bound(data: st.DataObject, rate: float, parent: SpanContext | None) -> None:
    """TraceIdRatioBased and ParentBasedTraceIdRatio at any rate agree with should_sample just below, at and above the bound."""
    both_remote = ParentBased(ALWAYS_OFF, TraceIdRatioBased(rate), TraceIdRatioBased(rate))
    for sampler in (TraceIdRatioBased(rate), ParentBasedTraceIdRatio(rate), both_remote):
        bound = TraceIdRatioBased(rate).bound
        high = data.draw(st.integers(0, U64))
        for low in {max(0, bound - 1), min(U64, bound), min(U64, bound + 1), 0, U64}:
            assert_agrees(sampler, parent, high << 64 | low)


GRID_PARENTS: list[SpanContext | None] = [None] + [
    SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7, remote, TraceFlags(flags), state)
    for remote in (False, True)
    for flags in (0, 1, 2, 3, 0xFF, 0xFE)
    for state in (None, TraceState([("vendor", "x")]))
]
GRID_TRACE_IDS = (0, 1, U64, 1 << 63, (1 << 63) - 1, (1 << 63) + 1, U128, 0x0AF7651916CD43DD8448EB211C80319C, 0xFFFF << 64 | 0x8000000000000000)


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0, 2.0**-64])
def test_every_parent_based_combination_of_on_off_and_ratio(rate: float) -> None:
    """All 3**5 ParentBased samplers over {ALWAYS_ON, ALWAYS_OFF, TraceIdRatioBased(rate)} agree with should_sample on a grid."""
    kinds = (ALWAYS_ON, ALWAYS_OFF, TraceIdRatioBased(rate))
    checked = 0
    for root, *delegates in itertools.product(kinds, repeat=5):
        sampler = ParentBased(root, *delegates)
        for parent in GRID_PARENTS:
            for trace_id in GRID_TRACE_IDS:
                assert_agrees(sampler, parent, trace_id)
                checked += 1
    assert checked == 3**5 * len(GRID_PARENTS) * len(GRID_TRACE_IDS)


def test_each_known_sampler_name_has_a_shortcut() -> None:
    """Every OTEL_TRACES_SAMPLER name of the SDK gives a sampler the shortcut answers for (the hot path is the usual one)."""
    for name, known in sampling._KNOWN_SAMPLERS.items():
        sampler = known(0.25) if isinstance(known, type) else known
        assert shortcut(sampler) is not None, name


def test_the_shortcut_is_decided_once_and_not_per_call() -> None:
    """The decision reads the sampler when the shortcut is made: answers for ratio 1 and 0 are constant over trace ids."""
    always, never = shortcut(TraceIdRatioBased(1.0)), shortcut(TraceIdRatioBased(0.0))
    assert always is not None and never is not None
    assert all(always(None, trace_id) for trace_id in GRID_TRACE_IDS)
    assert not any(never(None, trace_id) for trace_id in GRID_TRACE_IDS)


# Samplers the shortcut must decline.


class OwnSampler(Sampler):
    """A user's own sampler: samples trace ids whose lowest bit is set."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE if trace_id & 1 else Decision.DROP)

    def get_description(self) -> str:
        return "OwnSampler"


class LoudAlwaysOn(StaticSampler):
    """A StaticSampler subclass that overrides should_sample (adds an attribute)."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {"sampled.by": "loud"})


class InvertedRatio(TraceIdRatioBased):
    """A TraceIdRatioBased subclass that overrides should_sample (samples the complement)."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> SamplingResult:
        result = super().should_sample(parent_context, trace_id, name, *args, **kwargs)
        return SamplingResult(Decision.DROP if result.decision.is_sampled() else Decision.RECORD_AND_SAMPLE)


class RootOnly(ParentBased):
    """A ParentBased subclass that overrides should_sample (ignores the parent)."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> SamplingResult:
        return self._root.should_sample(None, trace_id, name)


UNSUPPORTED: dict[str, Sampler] = {
    "always record (off)": AlwaysRecordSampler(ALWAYS_OFF),
    "always record (on)": AlwaysRecordSampler(ALWAYS_ON),
    "always record (parent based)": AlwaysRecordSampler(DEFAULT_ON),
    "record only": StaticSampler(Decision.RECORD_ONLY),
    "own sampler": OwnSampler(),
    "static subclass overriding should_sample": LoudAlwaysOn(Decision.RECORD_AND_SAMPLE),
    "ratio subclass overriding should_sample": InvertedRatio(0.5),
    "parent based subclass overriding should_sample": RootOnly(ALWAYS_ON),
    "parent based, own root": ParentBased(OwnSampler()),
    "parent based, record only root": ParentBased(StaticSampler(Decision.RECORD_ONLY)),
    "parent based, always record root": ParentBased(AlwaysRecordSampler(ALWAYS_OFF)),
    "parent based, nested parent based root": ParentBased(DEFAULT_ON),
    **{
        f"parent based, own {position}": ParentBased(ALWAYS_ON, **{position: OwnSampler()})
        for position in ("remote_parent_sampled", "remote_parent_not_sampled", "local_parent_sampled", "local_parent_not_sampled")
    },
    **{
        f"parent based, overriding subclass as {position}": ParentBased(ALWAYS_ON, **{position: LoudAlwaysOn(Decision.DROP)})
        for position in ("remote_parent_sampled", "remote_parent_not_sampled", "local_parent_sampled", "local_parent_not_sampled")
    },
    "parent based, always record delegate": ParentBased(ALWAYS_ON, local_parent_not_sampled=AlwaysRecordSampler(ALWAYS_OFF)),
    "parent based, nested parent based delegate": ParentBased(ALWAYS_ON, remote_parent_sampled=DEFAULT_OFF),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_samplers_it_cannot_answer_for_give_none(name: str) -> None:
    """AlwaysRecordSampler, RECORD_ONLY, own samplers, should_sample overrides and ParentBased around any of them have no shortcut."""
    assert shortcut(UNSUPPORTED[name]) is None


# The wider family: the shortcut may decline, but must never answer wrongly.


class NarrowRatio(TraceIdRatioBased):
    """A ratio sampler over the low 32 bits of the trace id: only the class attribute changes, should_sample is the SDK's."""

    TRACE_ID_LIMIT = (1 << 32) - 1


class RatioWithOwnBound(TraceIdRatioBased):
    """A ratio sampler whose bound is computed its own way (should_sample is the SDK's)."""

    @classmethod
    def get_bound_for_rate(cls, rate: float) -> int:
        return int(rate * (1 << 64)) // 2


class RenamedParentBased(ParentBased):
    """A ParentBased subclass that only changes its description."""

    def get_description(self) -> str:
        return "renamed"


def any_leaf() -> st.SearchStrategy[Sampler]:
    return st.one_of(
        leaves(),
        st.builds(RatioWithOwnBound, rates),  # NarrowRatio has a test of its own (below)
        st.sampled_from([OwnSampler(), StaticSampler(Decision.RECORD_ONLY), AlwaysRecordSampler(ALWAYS_OFF), LoudAlwaysOn(Decision.DROP)]),
    )


@st.composite
def any_sampler(draw: st.DrawFn) -> Sampler:
    if draw(st.booleans()):
        return draw(any_leaf())
    kind = draw(st.sampled_from([ParentBased, RenamedParentBased]))
    return kind(draw(any_leaf()), draw(any_leaf()), draw(any_leaf()), draw(any_leaf()), draw(any_leaf()))


@SETTINGS
@given(st.data(), any_sampler(), parents)
def test_the_shortcut_never_answers_wrongly(data: st.DataObject, sampler: Sampler, parent: SpanContext | None) -> None:
    """For any sampler, including subclasses that change their bound or description, the shortcut is None or agrees with should_sample."""
    if shortcut(sampler) is None:
        return
    assert_agrees_on_drawn(data, sampler, parent)


@pytest.mark.parametrize(
    "sampler",
    [NarrowRatio(0.5), ParentBased(NarrowRatio(0.5)), ParentBased(ALWAYS_OFF, NarrowRatio(1.0))],
    ids=["narrow ratio", "parent based, narrow ratio root", "parent based, narrow ratio delegate"],
)
def test_a_ratio_subclass_that_narrows_the_trace_id_limit_is_declined_or_right(sampler: Sampler) -> None:
    """TraceIdRatioBased.should_sample masks with self.TRACE_ID_LIMIT: a subclass narrowing it must get no shortcut, or one that masks alike."""
    if shortcut(sampler) is None:
        return
    parent = SpanContext(1 << 40, 7, True, TraceFlags(1))
    for trace_id in (1 << 40 | 3, 1 << 40 | (1 << 31) - 1, 1 << 63 | 1 << 31, 3):
        assert_agrees(sampler, None, trace_id)
        assert_agrees(sampler, parent, trace_id)
