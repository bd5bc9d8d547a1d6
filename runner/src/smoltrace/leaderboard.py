"""`smoltrace-eval leaderboard [SOURCE...]`: runs side by side with their Pareto front.

A SOURCE is a run folder, a folder of run folders, or a Hub leaderboard dataset
(`hub:owner/smoltrace-leaderboard`, one row per run). Each run is one entry, from its leaderboard
row (`leaderboard_row.json`; computed from the rows for a run that never wrote one): model,
provider, agent type, success rate, and per task: cost, energy, CO2, duration. Within each agent
type, the runs on the Pareto front are those no other run beats on success rate (higher) and
cost, energy and duration per task (lower) at once; a figure some run of the group lacks is left
out of that group's comparison. `--html PATH` draws success-vs-cost and success-vs-energy charts
with the front; `--json PATH` writes the entries."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .records import LeaderboardRow, RunMetadata
from .report.formatting import get_path, num
from .report.rundata import duration_ms
from .run_folder import LEADERBOARD_ROW, METADATA, RunFolder
from .sources import HUB_PREFIX, SourceError, is_run_folder, read_hub_rows, read_run_folder

OBJECTIVES = ("cost_usd", "energy_j", "duration_ms")  # per task, lower is better
MAX_RUNS_IN_FOLDER = 500


@dataclass
class Entry:
    label: str
    model: str
    provider: str
    agent_type: str
    run_id: str
    timestamp: str
    tests: int
    success_rate: float | None  # percent
    cost_usd: float | None  # per task
    energy_j: float | None  # per task
    co2_g: float | None  # per task
    duration_ms: float | None  # mean per task
    front: bool = False
    path: str = ""


def _per_task(total: Any, tests: int) -> float | None:
    value = num(total)
    return None if value is None or tests <= 0 else value / tests


def _gpu_measured(board: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> bool:
    """Whether the run's energy figures are measurements (the leaderboard row holds 0.0, not null,
    for a run without GPU metrics)."""
    if metadata:
        return bool(get_path(metadata, "gpu_metrics", "summary"))
    return num(board.get("energy_j")) not in (None, 0.0) or num(board.get("gpu_utilization_avg")) is not None


def entry_from_board(board: Mapping[str, Any], label: str, metadata: Mapping[str, Any] | None = None, path: str = "") -> Entry:
    tests = int(num(board.get("total_tests")) or 0)
    measured = _gpu_measured(board, metadata)
    rate = num(board.get("success_rate"))
    return Entry(
        label=label,
        model=str(board.get("model") or "unknown model"),
        provider=str(board.get("provider") or ""),
        agent_type=str(board.get("agent_type") or "unknown"),
        run_id=str(board.get("run_id") or ""),
        timestamp=str(board.get("timestamp") or ""),
        tests=tests,
        success_rate=rate if tests else None,
        cost_usd=_per_task(board.get("total_cost_usd"), tests),
        energy_j=_per_task(board.get("energy_j"), tests) if measured else None,
        co2_g=_per_task(board.get("co2_emissions_g"), tests) if measured else None,
        duration_ms=num(board.get("avg_duration_ms")) if tests else None,
        path=path,
    )


def entry_from_folder(path: Path, label: str | None = None) -> Entry:
    """A run folder's entry: its leaderboard row (and metadata), else figures from its rows. Both
    records are read through RunFolder as far as they go (what the file gave, as a mapping)."""
    label = label or path.name
    folder, problems = RunFolder(path), list[str]()
    row = folder.read_record_lenient(LEADERBOARD_ROW, LeaderboardRow, problems)
    meta = folder.read_record_lenient(METADATA, RunMetadata, problems)
    board: Mapping[str, Any] = row.model_dump(mode="json", exclude_unset=True) if row is not None else {}
    metadata: dict[str, Any] = meta.model_dump(mode="json", exclude_unset=True) if meta is not None else {}
    if "success_rate" not in board or "total_tests" not in board:
        run = read_run_folder(path, label)
        rows = run.rows
        durations = [d for d in (duration_ms(r) for r in rows) if d is not None]
        costs = [c for c in (num(r.get("cost_usd")) for r in rows) if c is not None]
        summary = get_path(metadata, "gpu_metrics", "summary") or {}
        board = {
            "model": run.model,
            "provider": run.first("provider"),
            "agent_type": metadata.get("agent_type") or run.first("agent_type"),
            "run_id": run.first("run_id"),
            "timestamp": metadata.get("finished_at") or metadata.get("started_at"),
            "total_tests": len(rows),
            "success_rate": 100.0 * sum(1 for r in rows if r.get("success") is True) / len(rows) if rows else None,
            "total_cost_usd": sum(costs) if costs else None,
            "avg_duration_ms": sum(durations) / len(durations) if durations else None,
            "energy_j": summary.get("energy_joules") if isinstance(summary, Mapping) else None,
            "co2_emissions_g": summary.get("co2_grams") if isinstance(summary, Mapping) else None,
        }
    return entry_from_board(board, label, metadata, str(path))


def run_folders_in(folder: Path, limit: int = MAX_RUNS_IN_FOLDER) -> list[Path]:
    """The run folders directly inside `folder`, newest name last (at most `limit`, the newest)."""
    try:
        children = sorted(p for p in folder.iterdir() if is_run_folder(p))
    except OSError:
        return []
    return children[-limit:]


def read_entries(spec: str) -> list[Entry]:
    if spec.startswith(HUB_PREFIX):
        return [entry_from_board(row, f"{spec}#{row.get('run_id') or i}") for i, row in enumerate(read_hub_rows(spec[len(HUB_PREFIX) :]))]
    path = Path(spec)
    if is_run_folder(path):
        return [entry_from_folder(path, spec)]
    if not path.is_dir():
        raise SourceError(f"{spec}: not a folder (give run folders, a folder of runs or hub:owner/smoltrace-leaderboard)")
    folders = run_folders_in(path)
    if not folders:
        raise SourceError(f"{spec}: holds no smoltrace run folder")
    return [entry_from_folder(p, str(p)) for p in folders]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b: no worse on every objective and better on one (first is higher-better,
    the rest lower-better)."""
    no_worse = a[0] >= b[0] and all(x <= y for x, y in zip(a[1:], b[1:], strict=True))
    better = a[0] > b[0] or any(x < y for x, y in zip(a[1:], b[1:], strict=True))
    return no_worse and better


def pareto_front(points: Sequence[Sequence[float]]) -> list[bool]:
    """For each point (success, cost-like...), whether no other point dominates it."""
    return [not any(dominates(q, p) for j, q in enumerate(points) if j != i) for i, p in enumerate(points)]


def mark_front(entries: Sequence[Entry], objectives: Sequence[str] = OBJECTIVES) -> dict[str, list[str]]:
    """Set `front` on every entry, per agent type; returns the objectives used per agent type."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        e.front = False
        if e.success_rate is not None:
            groups.setdefault(e.agent_type, []).append(e)
    used: dict[str, list[str]] = {}
    for agent, members in groups.items():
        keys = [k for k in objectives if all(getattr(m, k) is not None for m in members)]
        used[agent] = keys
        points = [[m.success_rate or 0.0, *(float(getattr(m, k)) for k in keys)] for m in members]
        for m, on in zip(members, pareto_front(points), strict=True):
            m.front = on
    return used


def leaderboard(specs: Sequence[str]) -> tuple[list[Entry], dict[str, list[str]]]:
    entries: list[Entry] = []
    for spec in specs:
        entries.extend(read_entries(spec))
    used = mark_front(entries)
    return sort_entries(entries), used


def sort_entries(entries: Sequence[Entry]) -> list[Entry]:
    """By agent type, then success rate (highest first), then cost per task, then label."""
    return sorted(
        entries, key=lambda e: (e.agent_type, -(e.success_rate if e.success_rate is not None else -1.0), e.cost_usd or 0.0, e.label)
    )


# -- console -----------------------------------------------------------------------------------
def print_console(entries: Sequence[Entry], used: Mapping[str, Sequence[str]], out: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from .report.formatting import fmt_co2, fmt_energy, fmt_ms, fmt_pct, fmt_usd

    console = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 180
    table = Table(title="smoltrace leaderboard (★ = on the Pareto front of its agent type)")
    for col in ("", "model", "provider", "agent", "tasks", "success", "cost/task", "energy/task", "CO2/task", "duration/task", "run"):
        table.add_column(
            col, justify="right" if col in ("tasks", "success", "cost/task", "energy/task", "CO2/task", "duration/task") else "left"
        )
    for e in entries:
        table.add_row(
            "★" if e.front else "",
            e.model,
            e.provider,
            e.agent_type,
            str(e.tests),
            fmt_pct(e.success_rate),
            fmt_usd(e.cost_usd),
            fmt_energy(e.energy_j),
            fmt_co2(e.co2_g),
            fmt_ms(e.duration_ms),
            e.label,
        )
    console.print(table)
    for agent, keys in used.items():
        console.print(
            f"Pareto front for {agent}: success rate (higher) vs {', '.join(keys) or 'nothing else'} per task (lower)", markup=False
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoltrace-eval leaderboard",
        description="Runs side by side with the Pareto front of success rate against cost, energy and duration.",
    )
    parser.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="run folders, folders of runs, or hub:owner/smoltrace-leaderboard (default: ./smoltrace_results)",
    )
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the entries as JSON")
    parser.add_argument("--html", dest="html_path", metavar="PATH", help="write a self-contained HTML page with charts")
    return parser


def main(argv: Sequence[str]) -> int:
    from .atomic import write_text_atomic
    from .config import DEFAULT_OUTPUT_DIR

    args = build_parser().parse_args(argv)
    try:
        entries, used = leaderboard(args.sources or [DEFAULT_OUTPUT_DIR])
    except SourceError as err:
        print(f"smoltrace-eval leaderboard: error: {err}", file=sys.stderr)
        return 2
    print_console(entries, used)
    try:
        if args.json_path:
            doc = {"entries": [asdict(e) for e in entries], "objectives": used}
            write_text_atomic(Path(args.json_path), json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            print(f"JSON:   {args.json_path}")
        if args.html_path:
            from .report.leaderboard_page import render_leaderboard

            write_text_atomic(Path(args.html_path), render_leaderboard(entries, used))
            print(f"HTML:   {args.html_path}")
    except OSError as err:
        print(f"smoltrace-eval leaderboard: error: cannot write: {err.strerror or err} ({err.filename or ''})", file=sys.stderr)
        return 2
    return 0
