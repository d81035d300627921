"""What ``hoptrace watch``, ``traces`` and ``demo`` print as tables: per-stage numbers and one line per trace.

Tables fit the width they are rendered at: rather than fold every column, they leave out their
least important columns (in a fixed order); ``width=`` narrows a table further. Pure functions:
they read the records they are given and return ``rich`` tables.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from hoptrace.view.formatting import NONE, format_duration, format_ns, format_number, format_rate, short_id, shown, status_text
from hoptrace.view.queries import StageStats, TraceSummary

_COLUMN_GAP = 2
"""Cells between two table columns: one of padding, one of the (blank) vertical line."""
WHOLE_TRACE_ID_WIDTH = 60
"""From this width up, trace ids in ``traces_table`` stay whole on one line; below, they fold."""


@dataclass(frozen=True)
class _Column:
    """A table column before it is placed: its cells, how far it may shrink, and how much it matters."""

    header: str
    cells: list[Text]
    priority: int
    """When the width is short, columns are left out highest number first."""
    justify: Literal["left", "right"] = "left"
    shrinks: bool = False
    """Whether it may wrap between words; False: every value stays on one line."""
    fold_to: int | None = None
    """When it shrinks, how narrow a long word may fold; None: words never fold."""

    @property
    def min_width(self) -> int:
        """The fewest cells it needs: its widest value (header included), or its longest word when it shrinks, or ``fold_to``."""
        texts = [self.header, *(cell.plain for cell in self.cells)]
        if not self.shrinks:
            return max(cell_len(line) for text in texts for line in text.splitlines() or [""])
        longest = max((cell_len(word) for text in texts for word in text.split()), default=1)
        return longest if self.fold_to is None else min(longest, max(self.fold_to, cell_len(self.header)))


def _fit(columns: Sequence[_Column], width: int) -> list[_Column]:
    """COLUMNS that fit WIDTH cells, taken by priority until the next one does not fit, in their own order; the first always."""
    kept: set[int] = set()
    used = -_COLUMN_GAP
    for index, column in sorted(enumerate(columns), key=lambda pair: pair[1].priority):
        used += _COLUMN_GAP + column.min_width
        if kept and used > width:
            break
        kept.add(index)
    return [column for index, column in enumerate(columns) if index in kept]


ColumnsFor = Callable[[int], list[_Column]]
"""The columns of a table for a width (a column may be laid out differently when narrow)."""


class _FittingTable(Table):
    """A borderless table that, when rendered, leaves out the columns that do not fit the width it gets (or WIDTH, if narrower)."""

    def __init__(self, columns_for: ColumnsFor, width: int | None, rows: int, empty: str) -> None:
        """Lay the columns out for WIDTH (for unlimited width when None); show EMPTY as the caption when there are no ROWS."""
        super().__init__(
            box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold", caption=None if rows else empty
        )
        self._columns_for = columns_for
        self._width = width
        self._empty = empty
        self._rows_count = rows
        self._place(self._chosen(width))

    def _chosen(self, width: int | None) -> list[_Column]:
        return self._columns_for(sys.maxsize) if width is None else _fit(self._columns_for(width), width)

    def _place(self, columns: Sequence[_Column]) -> None:
        for column in columns:
            overflow: Literal["fold", "ellipsis"] = "fold" if column.fold_to is not None else "ellipsis"
            self.add_column(column.header, justify=column.justify, no_wrap=not column.shrinks, overflow=overflow)
        for row in zip(*(column.cells for column in columns), strict=True):
            self.add_row(*row)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """This table when it was laid out for the width it gets, else a copy laid out for that width."""
        width = options.max_width if self._width is None else min(self._width, options.max_width)
        narrowed = options.update_width(width)
        if width == self._width:
            yield from super().__rich_console__(console, narrowed)
        else:
            yield from Table.__rich_console__(_FittingTable(self._columns_for, width, self._rows_count, self._empty), console, narrowed)


def _count(value: int, style: str) -> Text:
    """A count, styled when it is not zero."""
    return Text(str(value), style=style if value else "")


def stage_table(stats: Sequence[StageStats], width: int | None = None) -> Table:
    """Per stage: transport and destination, msg/s, p50/p95/p99 handler time, p95 queue wait, errors, retries, depth or lag.

    Columns that do not fit the width the table is rendered at (or WIDTH, when narrower) are
    left out, in this order: p99, retries, wait p95, p50, msg/s, depth/lag, errors, p95, via;
    the stage always stays. Stages of several pipelines are named ``pipeline/stage``.
    """
    several = len({each.pipeline for each in stats}) > 1

    def texts(values: Iterable[str]) -> list[Text]:
        return [shown(Text(value)) for value in values]

    def columns_for(width: int) -> list[_Column]:
        return [
            _Column("stage", texts(f"{s.pipeline}/{s.stage}" if several else s.stage for s in stats), 1, shrinks=True, fold_to=8),
            _Column("via", texts(f"{s.system or '?'} {s.destination or '?'}" for s in stats), 2, shrinks=True),
            _Column("msgs", texts(str(s.messages) for s in stats), 6, "right"),
            _Column("msg/s", texts(format_rate(s.rate_per_s) for s in stats), 7, "right"),
            _Column("p50", texts(format_duration(s.handler_p50_s) for s in stats), 8, "right"),
            _Column("p95", texts(format_duration(s.handler_p95_s) for s in stats), 3, "right"),
            _Column("p99", texts(format_duration(s.handler_p99_s) for s in stats), 11, "right"),
            _Column("wait p95", texts(format_duration(s.queue_wait_p95_s) for s in stats), 9, "right"),
            _Column("errors", [_count(s.errors, "red") for s in stats], 4, "right"),
            _Column("retries", [_count(s.retries, "yellow") for s in stats], 10, "right"),
            _Column("depth/lag", texts(format_number(s.depth) for s in stats), 5, "right"),
        ]

    return _FittingTable(columns_for, width, len(stats), "no stage has processed a message in the window")


def _local_time(time_ns: int) -> str:
    """HH:MM:SS in the local time zone."""
    return time.strftime("%H:%M:%S", time.localtime(time_ns // 1_000_000_000))


def traces_table(summaries: Sequence[TraceSummary], width: int | None = None) -> Table:
    """One line per trace: trace id, job id (short), start (local HH:MM:SS), end-to-end time, the slowest part of its critical
    path (``charge handler 62%``: the longest segment's stage, cause and share), spans, stages, status, and why a flight
    recorder kept it (a column only when one did).

    Status: dead-lettered and failed in red, retried in yellow. Columns that do not fit the
    width the table is rendered at (or WIDTH, when narrower) are left out: kept first, then spans,
    job, stages, start, the slowest part and end-to-end time; trace id and status always stay. Below
    ``WHOLE_TRACE_ID_WIDTH`` cells trace ids fold over two lines.
    """

    def columns_for(width: int) -> list[_Column]:
        whole = width >= WHOLE_TRACE_ID_WIDTH
        return [
            _Column("trace", [shown(Text(s.trace_id)) for s in summaries], 1, shrinks=not whole, fold_to=None if whole else 16),
            _Column("job", [shown(Text(short_id(s.job_id))) for s in summaries], 7),
            _Column("start", [Text(_local_time(s.start_ns)) for s in summaries], 5),
            _Column("e2e", [Text(format_ns(s.end_ns - s.start_ns)) for s in summaries], 3, "right"),
            _Column("slowest part", [shown(Text(s.dominant or NONE)) for s in summaries], 4),
            _Column("spans", [Text(str(s.span_count)) for s in summaries], 8, "right"),
            _Column("stages", [shown(Text(" → ".join(s.stages) or NONE)) for s in summaries], 6, shrinks=True),
            _Column("status", [status_text(s.status) for s in summaries], 2),
            *([_Column("kept", [shown(Text(s.kept or "", style="yellow")) for s in summaries], 9)] if any(s.kept for s in summaries) else []),
        ]

    return _FittingTable(columns_for, width, len(summaries), "no traces yet")
