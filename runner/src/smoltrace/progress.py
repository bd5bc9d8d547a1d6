"""Console: a live progress bar with the pass rate, and the final summary table (rich)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .executor import TaskResult


class RunProgress:
    def __init__(self, console: Console, total: int, enabled: bool = True) -> None:
        self.enabled = enabled and total > 0
        self.done = 0
        self.passed = 0
        self._progress = Progress(
            TextColumn("[bold]evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pass {task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not self.enabled,
        )
        self._task = self._progress.add_task("run", total=total, rate="-")

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.enabled:
            self._progress.stop()

    def advance(self, result: TaskResult) -> None:
        self.done += 1
        self.passed += int(result.score.success)
        rate = f"{100.0 * self.passed / self.done:.0f}% ({self.passed}/{self.done})"
        self._progress.update(self._task, advance=1, rate=rate)


def summary_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    by_type: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_type[row["agent_type"]].append(row)
    table = Table(title="smoltrace summary", show_lines=False)
    for column in ("agent", "tasks", "passed", "pass rate", "avg steps", "avg ms", "tokens", "errors"):
        table.add_column(column, justify="right" if column != "agent" else "left")

    def add(name: str, group: Sequence[Mapping[str, Any]]) -> None:
        n = len(group)
        passed = sum(1 for r in group if r.get("success"))
        table.add_row(
            name,
            str(n),
            str(passed),
            f"{100.0 * passed / n:.1f}%" if n else "-",
            f"{sum(r.get('steps') or 0 for r in group) / n:.1f}" if n else "-",
            f"{sum(r.get('duration_ms') or 0 for r in group) / n:.0f}" if n else "-",
            str(sum(r.get("total_tokens") or 0 for r in group)),
            str(sum(1 for r in group if r.get("error"))),
        )

    for agent_type in sorted(by_type):
        add(agent_type, by_type[agent_type])
    if len(by_type) > 1:
        add("all", list(rows))
    return table
