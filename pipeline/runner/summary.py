"""What one run of a stage did (`Summary`, written as `status/<stage>/summary.json`), and its
table on stderr."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Summary:
    stage: str
    total: int = 0  # items in this part
    already: int = 0  # complete (done or skipped) before this run
    done: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count (this run)
    failed: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("failures")
        out["skipped"] = dict(self.skipped)
        return out


def print_summary(summary: Summary) -> None:
    """A table: done, skipped by reason, failed (stderr, so stdout stays clean)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"fd2talk-prep {summary.stage}: {summary.total} items, {summary.seconds:.1f} s"
    )
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("complete before this run", str(summary.already))
    table.add_row("done", str(summary.done))
    for reason, n in sorted(summary.skipped.items()):
        table.add_row(f"skipped: {reason}", str(n))
    table.add_row(
        "failed (unexpected)", str(summary.failed), style="bold red" if summary.failed else None
    )
    console = Console(stderr=True)
    console.print(table)
    for rec in summary.failures:
        if rec["status"] == "failed":
            console.print(f"[red]failed[/red] {rec['key']}: {rec['error']}")
