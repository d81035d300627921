"""The order of measured runs: every variant between two runs of its baseline, so the machine's drift cancels.

A round runs the baseline, then each variant followed by the baseline again (A B A C A D A);
the order of the variants rotates from round to round. A variant's paired ratio is its value
over the mean of the two baseline runs around it, which cancels a drift that is roughly
linear over those three runs (a busy neighbour, a warming JVM, a filling page cache).

Several groups (e.g. the Kafka hop with kafka-python's crc32c extension and with its
pure-Python CRC) share the rounds: each round runs every group's brackets, the groups in an
order that rotates too, so each group's variants are paired with that group's own baseline
and all groups see the same stretch of the machine's time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
G = TypeVar("G", bound=Hashable)


def rotated(items: Sequence[T], by: int) -> list[T]:
    """ITEMS rotated left BY places: each round starts with another variant."""
    if not items:
        return []
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


@dataclass(frozen=True)
class Bracket:
    """One group of a schedule: a baseline key and the variant keys run between its runs."""

    baseline: str
    variants: Sequence[str]


@dataclass(frozen=True)
class Rounds(Generic[R]):
    """What a bracketed schedule measured (one group)."""

    results: dict[str, list[R]]
    """Per key, in the order run (the baseline has ``rounds * (len(variants) + 1)``)."""
    around: dict[str, list[tuple[R, R]]]
    """Per variant key, for each of its runs: the baseline runs just before and just after it."""

    def ratios(self, key: str, value: Callable[[R], float]) -> list[float] | None:
        """Per run of variant KEY: its VALUE over the mean VALUE of the baseline runs around it (None for the baseline)."""
        return self._paired(key, value, operator.truediv)

    def differences(self, key: str, value: Callable[[R], float]) -> list[float] | None:
        """Per run of variant KEY: its VALUE minus the mean VALUE of the baseline runs around it (None for the baseline)."""
        return self._paired(key, value, operator.sub)

    def _paired(self, key: str, value: Callable[[R], float], combine: Callable[[float, float], float]) -> list[float] | None:
        if key not in self.around:
            return None
        runs = zip(self.results[key], self.around[key], strict=True)
        return [combine(value(result), fmean((value(before), value(after)))) for result, (before, after) in runs]


def interleaved(groups: Mapping[G, Bracket], rounds: int, measure: Callable[[G, str, str], R]) -> dict[G, Rounds[R]]:
    """ROUNDS rounds; each runs ``baseline, v1, baseline, v2, ..., baseline`` of every group, groups and variants rotated.

    MEASURE(group, key, label) runs one; LABEL is unique per run within a group, short, and
    made of letters, digits and '-' (usable in topic names once the group is told apart).
    """
    found: dict[G, Rounds[R]] = {}
    for group, bracket in groups.items():
        found[group] = Rounds({key: [] for key in (bracket.baseline, *bracket.variants)}, {key: [] for key in bracket.variants})
    for number in range(rounds):
        for group in rotated(list(groups), number):
            bracket, done = groups[group], found[group]
            before = measure(group, bracket.baseline, f"{number}-{bracket.baseline}-0")
            done.results[bracket.baseline].append(before)
            for index, key in enumerate(rotated(bracket.variants, number), start=1):
                result = measure(group, key, f"{number}-{key}")
                after = measure(group, bracket.baseline, f"{number}-{bracket.baseline}-{index}")
                done.results[key].append(result)
                done.results[bracket.baseline].append(after)
                done.around[key].append((before, after))
                before = after
    return found


def bracketed(baseline: str, variants: Sequence[str], rounds: int, measure: Callable[[str, str], R]) -> Rounds[R]:
    """One group: ROUNDS rounds of ``baseline, v1, baseline, v2, ..., baseline``; MEASURE(key, label) runs one."""
    return interleaved({None: Bracket(baseline, variants)}, rounds, lambda group, key, label: measure(key, label))[None]
