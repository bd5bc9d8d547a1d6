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


def failures_by_type(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Every failed row counted once, by its error_type (a wrong answer without an error is
    `wrong_answer`), most frequent first."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if not row.get("success"):
            counts[str(row.get("error_type") or "wrong_answer")] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summary_caption(rows: Sequence[Mapping[str, Any]], gpu_summary: Mapping[str, Any] | None) -> str:
    """The lines under the table: failures by type, and the GPU energy and CO2 when measured."""
    lines = []
    failed = failures_by_type(rows)
    if failed:
        lines.append(f"failed: {sum(failed.values())} ({', '.join(f'{k} {v}' for k, v in failed.items())})")
    if gpu_summary and gpu_summary.get("gpu_available") and gpu_summary.get("energy_joules") is not None:
        energy = float(gpu_summary.get("energy_joules") or 0.0)
        co2 = gpu_summary.get("co2_grams")
        lines.append(f"GPU energy {energy:,.1f} J" + (f", CO2 {float(co2):.4f} g" if co2 is not None else ""))
    return "\n".join(lines)


def summary_table(rows: Sequence[Mapping[str, Any]], gpu_summary: Mapping[str, Any] | None = None) -> Table:
    by_type: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_type[row["agent_type"]].append(row)
    table = Table(title="smoltrace summary", show_lines=False, caption=summary_caption(rows, gpu_summary) or None)
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
            str(sum(1 for r in group if not r.get("success") and r.get("error_type"))),
        )

    for agent_type in sorted(by_type):
        add(agent_type, by_type[agent_type])
    if len(by_type) > 1:
        add("all", list(rows))
    return table
