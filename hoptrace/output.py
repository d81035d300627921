"""Where commands print: one rich console for results (stdout) and one for progress and errors (stderr)."""

from __future__ import annotations

import functools

from rich.console import Console


@functools.cache
def console() -> Console:
    """Standard output: what a command answers (tables, trees, ids)."""
    return Console()


@functools.cache
def err_console() -> Console:
    """Standard error: progress bars and what went wrong."""
    return Console(stderr=True)


def print_error(message: str) -> None:
    """MESSAGE in red on standard output, where the command's answer would have been."""
    console().print(f"[red]{message}[/red]", highlight=False)
