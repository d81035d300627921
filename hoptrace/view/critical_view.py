"""A job's critical path as ``hoptrace trace`` prints it: a table under the tree, an object in ``--json``.

Each segment (``critical_path.Segment``) gets its stage, cause, duration and share of the job's
end-to-end time; the longest is marked. Pure functions over segments, like the other views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from hoptrace.view.critical_path import Segment, dominant, share, total_ns
from hoptrace.view.formatting import format_ns, shown

LONGEST = "◀ longest"
"""The mark of the longest segment in the table."""


def critical_path_table(segments: Sequence[Segment]) -> Table:
    """One row per segment, in time order: stage, cause, duration, share of the whole; the longest marked."""
    table = Table(box=box.SIMPLE_HEAD, title="critical path", title_justify="left", pad_edge=False)
    for header, justify in (("stage", "left"), ("cause", "left"), ("time", "right"), ("share", "right"), ("", "left")):
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    total, longest = total_ns(segments), dominant(segments)
    for segment in segments:
        mark = segment is longest
        style = "bold" if mark else ""
        table.add_row(
            shown(Text(segment.stage)),
            Text(segment.cause, style=style),
            Text(format_ns(segment.duration_ns), style=style),
            Text(f"{share(segment, total):.0%}", style=style),
            Text(LONGEST if mark else "", style="bold yellow"),
        )
    return table


def critical_path_json(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    """The SEGMENTS as ``{"stage", "cause", "start_unix_nano", "duration_s"}`` dicts, in time order."""
    return [{"stage": each.stage, "cause": each.cause, "start_unix_nano": each.start_ns, "duration_s": each.duration_s} for each in segments]
