"""The order of measured runs: every variant between two runs of its baseline, so the machine's drift cancels.

A round runs the baseline, then each variant followed by the baseline again (A B A C A D A);
the order of the variants rotates from round to round. A variant's paired ratio is its value
over the mean of the two baseline runs around it, which cancels a drift that is roughly
linear over those three runs (a busy neighbour, a warming JVM, a filling page cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def rotated(items: Sequence[T], by: int) -> list[T]:
    """ITEMS rotated left BY places: each round starts with another variant."""
    if not items:
        return []
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


@dataclass(frozen=True)
class Rounds(Generic[R]):
    """What a bracketed schedule measured."""

    results: dict[str, list[R]]
    """Per key, in the order run (the baseline has ``rounds * (len(variants) + 1)``)."""
    paired: dict[str, list[float]]
    """Per variant key: its value over the mean value of the baseline runs just before and after it."""


def bracketed(baseline: str, variants: Sequence[str], rounds: int, measure: Callable[[str, str], R], value: Callable[[R], float]) -> Rounds[R]:
    """Run ROUNDS rounds of ``baseline, v1, baseline, v2, ..., baseline``; MEASURE(key, label) runs one, VALUE reads it.

    LABEL is unique per run, short, and made of letters, digits and '-' (usable in topic names).
    """
    results: dict[str, list[R]] = {key: [] for key in (baseline, *variants)}
    paired: dict[str, list[float]] = {key: [] for key in variants}
    for number in range(rounds):
        before = measure(baseline, f"{number}-{baseline}-0")
        results[baseline].append(before)
        for index, key in enumerate(rotated(variants, number), start=1):
            result = measure(key, f"{number}-{key}")
            after = measure(baseline, f"{number}-{baseline}-{index}")
            results[key].append(result)
            results[baseline].append(after)
            paired[key].append(value(result) / ((value(before) + value(after)) / 2))
            before = after
    return Rounds(results, paired)
