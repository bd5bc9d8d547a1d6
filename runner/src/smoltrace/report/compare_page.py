"""The compare page (`smoltrace-eval compare --html`): a view model of a comparison document (see
smoltrace.compare) rendered with `compare.html.j2` on the report's layout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .formatting import fmt_pct
from .page import render


@dataclass
class CiBar:
    """A 95 % interval drawn on a scale symmetric around zero (SVG coordinates, 0-200 wide)."""

    lo: str
    hi: str
    mid: str
    zero: str = "100.0"
    cls: str = ""  # "up" (B higher), "down" (B lower) or "" (the interval holds zero)


@dataclass
class MetricRow:
    name: str
    mean_a: str
    mean_b: str
    diff: str
    ci: str
    bar: CiBar | None


@dataclass
class GroupRow:
    name: str
    pairs: int
    a_pass: str
    b_pass: str
    a_only: int
    b_only: int
    p_value: str


def ci_bar(diff: float, ci: Sequence[float] | None) -> CiBar | None:
    if not ci:
        return None
    scale = max(abs(ci[0]), abs(ci[1]), abs(diff)) or 1.0

    def x(v: float) -> str:
        return f"{100 + v / scale * 92:.1f}"

    cls = "up" if ci[0] > 0 else ("down" if ci[1] < 0 else "")
    return CiBar(x(ci[0]), x(ci[1]), x(diff), cls=cls)


def _metric_rows(metrics: Mapping[str, Any]) -> list[MetricRow]:
    from ..compare import fmt_ci, metric_formatter, signed

    rows = []
    for name, m in metrics.items():
        f = metric_formatter(name)
        rows.append(
            MetricRow(
                name, f(m["mean_a"]), f(m["mean_b"]), signed(f, m["mean_diff"]), fmt_ci(f, m["ci95"]), ci_bar(m["mean_diff"], m["ci95"])
            )
        )
    return rows


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} ({fmt_pct(k / n * 100)})" if n else "—"


def _groups(groups: Mapping[str, Any]) -> list[GroupRow]:
    from ..compare import fmt_p

    out = []
    for name, g in groups.items():
        s, n = g["success"], g["pairs"]
        out.append(
            GroupRow(
                name, n, _rate(s["both"] + s["a_only"], n), _rate(s["both"] + s["b_only"], n), s["a_only"], s["b_only"], fmt_p(s["p_value"])
            )
        )
    return out


def render_compare(result: Mapping[str, Any]) -> str:
    """The comparison `result` (smoltrace.compare.compare_runs) as one self-contained HTML page."""
    from ..compare import fmt_p, verdict

    s, n = result["success"], result["pairs"]
    view = {
        "a": result["run_a"],
        "b": result["run_b"],
        "pairs": n,
        "only_in_a": result["only_in_a"],
        "only_in_b": result["only_in_b"],
        "success": s,
        "a_pass": _rate(s["both"] + s["a_only"], n),
        "b_pass": _rate(s["both"] + s["b_only"], n),
        "p_value": fmt_p(s["p_value"]),
        "significant": s["p_value"] < 0.05 and n > 0,
        "verdict": verdict(result),
        "metrics": _metric_rows(result["metrics"]),
        "breakdowns": [("By agent type", _groups(result["by_agent_type"])), ("By difficulty", _groups(result["by_difficulty"]))],
        "discordant": result["discordant"],
        "resamples": result.get("resamples"),
        "seed": result.get("seed"),
    }
    return render("compare.html.j2", v=view)
