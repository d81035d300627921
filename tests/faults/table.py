"""The fault table: one row per scenario, in markdown, for the terminal and the README."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    """One line of the fault table."""

    fault: str
    published: int
    lost: list[str]
    """Job ids published and never delivered to the outbox."""
    duplicates: int
    dead_lettered: list[str]
    """Job ids of the messages parked on a dead-letter queue or topic (a final outcome, for a human to look at)."""
    from_fault_s: float | None
    """Seconds from the fault to the last job; None when not every job arrived."""
    from_restart_s: float | None
    """Seconds from the restart (or the end of the outage) to the last job."""
    redeliveries: int
    spans: tuple[int, int]
    """Spans received of the published jobs' traces, and 8 per job."""
    note: str = ""

    HEADER = (
        "| fault | lost | duplicates | dead letters | last job, after the fault | after the restart | redeliveries | spans received | notes |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )

    def markdown(self) -> str:
        """The row as a markdown table line."""
        lost = f"**{len(self.lost)}** of {self.published}" if self.lost else f"0 of {self.published}"
        if parked := [job for job in self.lost if job in self.dead_lettered]:
            lost += f" ({len(parked)} dead-lettered)"
        return (
            f"| {self.fault} | {lost} | {self.duplicates} | {len(self.dead_lettered)} | {_seconds(self.from_fault_s)} | "
            f"{_seconds(self.from_restart_s)} | {self.redeliveries} | {self.spans[0]} of {self.spans[1]} | {self.note} |"
        )


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


ROWS: list[Row] = []
"""Every row of this session, in order, for the table at the end."""
