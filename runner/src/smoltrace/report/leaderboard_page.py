"""The leaderboard page (`smoltrace-eval leaderboard --html`) and the "among other runs" table of
report.html: view models of leaderboard entries (see smoltrace.leaderboard) rendered with
`leaderboard.html.j2` on the report's layout; the charts are `charts.scatter_chart`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .charts import ScatterChart, ScatterPoint, scatter_chart
from .formatting import fmt_co2, fmt_energy, fmt_ms, fmt_pct, fmt_usd
from .page import render

if TYPE_CHECKING:
    from ..leaderboard import Entry


@dataclass
class EntryRow:
    rank: int
    front: bool
    here: bool
    model: str
    provider: str
    agent_type: str
    tests: int
    success: str
    success_v: str
    cost: str
    cost_v: str
    energy: str
    energy_v: str
    co2: str
    duration: str
    duration_v: str
    label: str

    @property
    def cls(self) -> str:
        return " ".join(c for c, on in (("front", self.front), ("here", self.here)) if on)


def _v(x: float | None) -> str:
    return "" if x is None else repr(x)


def entry_rows(entries: Sequence[Entry], here: str = "") -> list[EntryRow]:
    return [
        EntryRow(
            rank=i + 1,
            front=e.front,
            here=bool(here) and e.path == here,
            model=e.model,
            provider=e.provider,
            agent_type=e.agent_type,
            tests=e.tests,
            success=fmt_pct(e.success_rate),
            success_v=_v(e.success_rate),
            cost=fmt_usd(e.cost_usd),
            cost_v=_v(e.cost_usd),
            energy=fmt_energy(e.energy_j),
            energy_v=_v(e.energy_j),
            co2=fmt_co2(e.co2_g),
            duration=fmt_ms(e.duration_ms),
            duration_v=_v(e.duration_ms),
            label=e.label,
        )
        for i, e in enumerate(entries)
    ]


PLACEMENT_MAX_RUNS = 50


def placement(run_dir: Path) -> tuple[list[EntryRow], str]:
    """This run among the other run folders beside it (the newest `PLACEMENT_MAX_RUNS`), ranked like
    the leaderboard; empty when it is alone or cannot be placed. Never raises: it is a view."""
    from ..leaderboard import entry_from_folder, mark_front, run_folders_in, sort_entries

    try:
        run_dir = run_dir.resolve()
        others = [p for p in run_folders_in(run_dir.parent, PLACEMENT_MAX_RUNS) if p.resolve() != run_dir]
        if not others:
            return [], ""
        entries = [entry_from_folder(p.resolve(), p.name) for p in [*others, run_dir]]
        mark_front(entries)
        entries = sort_entries(entries)
    except Exception:  # noqa: BLE001 - a sibling folder that cannot be read never breaks the report
        return [], ""
    note = (
        f"This run and the {len(others)} other run folder(s) in {run_dir.parent.name}/, ranked by agent type and success rate; "
        "★ marks each agent type's Pareto front (success vs cost, energy and duration per task). "
        "smoltrace-eval leaderboard draws the charts."
    )
    return entry_rows(entries, here=str(run_dir)), note


def front_chart(entries: Sequence[Entry], key: str, label: str, x_label: str, fmt: object) -> ScatterChart:
    """Success rate against `key` with each agent type's two-objective front (success vs `key`)."""
    from ..leaderboard import pareto_front

    usable = [e for e in entries if e.success_rate is not None and getattr(e, key) is not None]
    front: dict[int, bool] = {}
    for agent in sorted({e.agent_type for e in usable}):
        members = [e for e in usable if e.agent_type == agent]
        flags = pareto_front([[e.success_rate or 0.0, float(getattr(e, key))] for e in members])
        front.update({id(e): f for e, f in zip(members, flags, strict=True)})
    points = [
        ScatterPoint(
            x=float(getattr(e, key)),
            y=float(e.success_rate or 0.0),
            title=f"{e.model} ({e.agent_type}): {fmt_pct(e.success_rate)}, {fmt(getattr(e, key))} per task",  # type: ignore[operator]
            front=front[id(e)],
            group=e.agent_type,
        )
        for e in usable
    ]
    return scatter_chart(points, label=label, x_label=x_label)


def render_leaderboard(entries: Sequence[Entry], used: Mapping[str, Sequence[str]]) -> str:
    view = {
        "rows": entry_rows(entries),
        "objectives": [(agent, ", ".join(keys) or "success only") for agent, keys in used.items()],
        "charts": [
            (
                "cost",
                "Success vs cost per task",
                front_chart(entries, "cost_usd", "success rate against cost per task", "cost per task (USD)", fmt_usd),
            ),
            (
                "energy",
                "Success vs energy per task",
                front_chart(entries, "energy_j", "success rate against energy per task", "energy per task (J)", fmt_energy),
            ),
        ],
        "count": len(entries),
    }
    return render("leaderboard.html.j2", v=view)
