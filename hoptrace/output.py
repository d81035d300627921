"""Where commands print: one rich console for results (stdout) and one for progress and errors (stderr).

Neither reads Rich markup or emoji codes in the strings it prints: those strings carry arguments,
span names and labels that a user or a sender chose (``hoptrace trace "[/nope]"`` raised Rich's
``MarkupError``). Styles are given as ``Text`` styles instead.
"""

from __future__ import annotations

import functools

from rich.console import Console
from rich.text import Text


@functools.cache
def console() -> Console:
    """Standard output: what a command answers (tables, trees, ids)."""
    return Console(markup=False, emoji=False)


@functools.cache
def err_console() -> Console:
    """Standard error: progress bars and what went wrong."""
    return Console(stderr=True, markup=False, emoji=False)


def print_error(message: str) -> None:
    """MESSAGE in red on standard output, where the command's answer would have been."""
    console().print(Text(message, style="red"), highlight=False)
