"""Pathways: the route of stages a job took to reach a stage (``validate>charge>ship``), for ``hoptrace.pathway.latency``.

A message's pathway is the one it came with (its ``hoptrace-pathway`` header) plus its own stage,
so the same stage reached by two routes is two metric series (Datadog Data Streams Monitoring's
idea). While its handler runs, the pathway is a value of the OpenTelemetry context (``PATHWAY_KEY``),
and ``propagation.inject`` writes it into every message published then; a publish outside any
handler writes none, and the job's pathway starts at the stage that consumes it.

The header is untrusted: ``parse`` takes stage names (``COMPONENT``) joined by ``>``, ASCII, at most
``MAX_CHARS`` long, the first maybe ``CUT_ON_WIRE`` (the wire's spelling of ``…``); a pipeline that
declares its stages refuses a pathway naming any other. Everything stays bounded: a pathway keeps
its last ``depth`` stages, after a leading ``…`` when cut; a process reports at most
``MAX_PATHWAYS`` distinct pathways per pipeline, the rest as ``OVERFLOW`` (said once per pipeline
in the log); and the per-message work is a lookup in memos of at most ``MAX_MEMO`` entries, so
hostile unique headers cost CPU, never memory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable, Iterable
from typing import NamedTuple, TypeVar

from opentelemetry.context import create_key

from hoptrace.pipeline.attributes import FirstSeen
from hoptrace.pipeline.semconv import HEADER_PATHWAY, OVERFLOW

logger = logging.getLogger(__name__)

PATHWAY_KEY = create_key("hoptrace-pathway")
"""The OpenTelemetry context key of the pathway (its header form) of the message whose handler runs in that context."""
SEPARATOR = ">"
"""Between the stages of a pathway."""
CUT = "…"
"""The first component of a pathway cut to its last stages, in the metric attribute."""
CUT_ON_WIRE = "~"
"""``CUT`` as the header spells it (headers are ASCII; no stage name contains it)."""
COMPONENT = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
"""One stage in a pathway header."""
MAX_CHARS = 1024
"""Longest pathway header read or written; a longer pathway loses its first stages."""
DEFAULT_DEPTH = 8
"""Stages a pathway keeps unless ``HOPTRACE_PATHWAY_DEPTH`` says otherwise."""
MAX_PATHWAYS = 100
"""Distinct pathways a process reports per pipeline; later ones are reported as ``OVERFLOW``."""
MAX_MEMO = 1024
"""Entries of each memo (headers judged, pathways followed); emptied when full."""

_HEADER = re.compile(rf"(?:{re.escape(CUT_ON_WIRE)}{SEPARATOR})?{COMPONENT.pattern}(?:{SEPARATOR}{COMPONENT.pattern})*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@-]")
_judged: dict[str, bool] = {}
_admitted = FirstSeen()

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _remember(memo: dict[K, V], key: K, value: V) -> None:
    """Put KEY in MEMO, emptying it first when it holds ``MAX_MEMO`` entries."""
    if len(memo) >= MAX_MEMO:
        memo.clear()
    memo[key] = value


def parse(text: str) -> str | None:
    """TEXT when it is a well-formed pathway header; None when not (the caller counts ``malformed_pathway``)."""
    found = _judged.get(text)
    if found is None:
        if len(text) > MAX_CHARS:
            return None
        found = _HEADER.fullmatch(text) is not None
        _remember(_judged, text, found)
    return text if found else None


def component(stage: str) -> str:
    """STAGE's name as a pathway component: a character ``COMPONENT`` does not allow becomes ``_``; at most 128 of them."""
    return _UNSAFE.sub("_", stage)[:128] or "_"


class Pathway(NamedTuple):
    """A message's pathway, worked out by ``Pathways.follow``."""

    value: str
    """The header form, put in the handler's context: what messages published by the handler carry."""
    label: str
    """The ``hoptrace.pathway`` attribute: ``…`` for a cut, ``OVERFLOW`` beyond ``MAX_PATHWAYS``."""
    refused: bool
    """The incoming pathway named a stage the pipeline does not declare, and was ignored (``malformed_pathway``)."""


def _admit(pipeline: str, label: str) -> str:
    """LABEL, or ``OVERFLOW`` once PIPELINE has ``MAX_PATHWAYS`` others in this process (said once per pipeline)."""
    admitted, first = _admitted.admit(pipeline, label, MAX_PATHWAYS)
    if admitted:
        return label
    if first:
        logger.warning(
            "pipeline %s: more than %d pathways in this process; %s and any later one are reported as %s, so that metric series stay bounded",
            pipeline,
            MAX_PATHWAYS,
            label,
            OVERFLOW,
        )
    return OVERFLOW


class Pathways:
    """The pathways of one pipeline's messages: ``follow`` for each, remembered."""

    __slots__ = ("_declared", "_depth", "_memo", "_pipeline")

    def __init__(self, pipeline: str, depth: int = DEFAULT_DEPTH, declared: Iterable[str] = ()) -> None:
        """Pathways of PIPELINE, at most DEPTH stages long; DECLARED: its stage names (none: any name is a stage, as in drop-in code)."""
        if depth < 1:
            raise ValueError(f"a pathway keeps at least one stage, not {depth}")
        self._pipeline = pipeline
        self._depth = depth
        names = frozenset(component(name) for name in declared)
        self._declared = names or None
        self._memo: dict[tuple[str | None, str, bool], Pathway] = {}

    def follow(self, incoming: str | None, stage: str, again: bool = False) -> Pathway:
        """The pathway of a message of STAGE (a ``component``) that came with INCOMING (``parse``'s, None when none came).

        AGAIN: the message is an attempt after the first, republished by its own stage (a Celery retry):
        an INCOMING that ends with STAGE is then its pathway, with no second STAGE.
        """
        key = (incoming, stage, again)
        found = self._memo.get(key)
        if found is None:
            found = self._follow(incoming, stage, again)
            _remember(self._memo, key, found)
        return found

    def _follow(self, incoming: str | None, stage: str, again: bool) -> Pathway:
        components = incoming.split(SEPARATOR) if incoming else []
        cut = bool(components) and components[0] == CUT_ON_WIRE
        if cut:
            del components[0]
        refused = self._declared is not None and not self._declared.issuperset(components)
        if refused:
            logger.warning(
                "pipeline %s: ignored a %s header naming stages it does not declare; the pathway starts at %s", self._pipeline, HEADER_PATHWAY, stage
            )
            components, cut = [], False
        if not (again and components and components[-1] == stage):
            components.append(stage)
        if len(components) > self._depth:
            components, cut = components[-self._depth :], True
        while True:
            route = SEPARATOR.join(components)
            value = f"{CUT_ON_WIRE}{SEPARATOR}{route}" if cut else route
            if len(value) <= MAX_CHARS or len(components) == 1:
                break
            del components[0]
            cut = True
        label = f"{CUT}{SEPARATOR}{route}" if cut else route
        return Pathway(value, _admit(self._pipeline, label), refused)


def reset() -> None:
    """Forget the pathways admitted and the headers judged so far in this process (for tests)."""
    _judged.clear()
    _admitted.clear()
