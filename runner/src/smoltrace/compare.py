"""`smoltrace-eval compare RUN_A RUN_B`: a paired comparison of two runs on the tasks they share.

Executions are paired by `test_case_uid`. Success is compared with the 2x2 table of the pairs and
the exact McNemar test (a two-sided binomial test on the discordant pairs, `scipy.stats.binomtest`);
`duration_ms`, `total_tokens`, `cost_usd`, `energy_j` and `co2_g` (where both runs have them) with
the means of A and B, the mean paired difference B - A and a 95 % paired bootstrap interval
(`scipy.stats.bootstrap`, percentile method, seeded). The same is given per agent type and per
difficulty, with the list of discordant tasks. Outputs: a console table with a one-line verdict,
`--json PATH` and `--html PATH` (the report's layout)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report.formatting import num
from .report.rundata import duration_ms
from .sources import RunSource, SourceError, read_run

METRICS = ("duration_ms", "total_tokens", "cost_usd", "energy_j", "co2_g")
ALPHA = 0.05
RESAMPLES = 5000
SEED = 0


def metric_value(row: Mapping[str, Any], name: str) -> float | None:
    return duration_ms(row) if name == "duration_ms" else num(row.get(name))


@dataclass
class Pair:
    uid: str
    a: Mapping[str, Any]
    b: Mapping[str, Any]

    @property
    def a_ok(self) -> bool:
        return self.a.get("success") is True

    @property
    def b_ok(self) -> bool:
        return self.b.get("success") is True

    def group(self, key: str) -> str:
        return str(self.a.get(key) or self.b.get(key) or "unspecified")


def pair_rows(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> tuple[list[Pair], int, int]:
    """(pairs in A's order, executions only in A, executions only in B); a uid seen twice in a run
    keeps its last row (a retried execution)."""

    def by_uid(rows: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
        out: dict[str, Mapping[str, Any]] = {}
        for r in rows:
            uid = r.get("test_case_uid")
            if uid not in (None, ""):
                out[str(uid)] = r
        return out

    ua, ub = by_uid(a), by_uid(b)
    pairs = [Pair(uid, ra, ub[uid]) for uid, ra in ua.items() if uid in ub]
    return pairs, len(ua.keys() - ub.keys()), len(ub.keys() - ua.keys())


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of a_only successes in the discordant pairs."""
    from scipy.stats import binomtest

    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> list[float] | None:
    """95 % percentile bootstrap interval of mean(B - A), resampling pairs; None under 2 pairs."""
    import numpy as np
    from scipy.stats import bootstrap

    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2:
        return None
    diff = xb - xa
    if np.ptp(diff) == 0:  # every pair differs by the same amount: the interval is that point
        return [float(diff[0]), float(diff[0])]

    def mean_diff(x: Any, y: Any, axis: int = -1) -> Any:
        return np.mean(y - x, axis=axis)

    res = bootstrap(
        (xa, xb),
        mean_diff,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def group_stats(pairs: Sequence[Pair], resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    both = sum(1 for p in pairs if p.a_ok and p.b_ok)
    a_only = sum(1 for p in pairs if p.a_ok and not p.b_ok)
    b_only = sum(1 for p in pairs if p.b_ok and not p.a_ok)
    neither = len(pairs) - both - a_only - b_only
    metrics: dict[str, Any] = {}
    for name in METRICS:
        values = [(va, vb) for p in pairs if (va := metric_value(p.a, name)) is not None and (vb := metric_value(p.b, name)) is not None]
        if not values:
            continue
        xa, xb = [v[0] for v in values], [v[1] for v in values]
        metrics[name] = {
            "mean_a": math.fsum(xa) / len(xa),
            "mean_b": math.fsum(xb) / len(xb),
            "mean_diff": math.fsum(y - x for x, y in values) / len(values),
            "ci95": paired_bootstrap_ci(xa, xb, resamples, seed),
        }
    return {
        "pairs": len(pairs),
        "success": {"both": both, "a_only": a_only, "b_only": b_only, "neither": neither, "p_value": mcnemar_exact(a_only, b_only)},
        "metrics": metrics,
    }


def _breakdown(pairs: Sequence[Pair], key: str, resamples: int, seed: int) -> dict[str, Any]:
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.group(key), []).append(p)
    return {name: group_stats(members, resamples, seed) for name, members in sorted(groups.items())}


def compare_runs(a: RunSource, b: RunSource, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """The comparison as the JSON document `--json` writes."""
    pairs, only_a, only_b = pair_rows(a.rows, b.rows)
    out: dict[str, Any] = {"run_a": {"source": a.label, "model": a.model}, "run_b": {"source": b.label, "model": b.model}}
    overall = group_stats(pairs, resamples, seed)
    out.update(pairs=overall["pairs"], only_in_a=only_a, only_in_b=only_b, success=overall["success"], metrics=overall["metrics"])
    out["by_agent_type"] = _breakdown(pairs, "agent_type", resamples, seed)
    out["by_difficulty"] = _breakdown(pairs, "difficulty", resamples, seed)
    out["discordant"] = [
        {
            "test_case_uid": p.uid,
            "task_id": p.a.get("task_id") or p.b.get("task_id"),
            "agent_type": p.group("agent_type"),
            "difficulty": p.group("difficulty"),
            "a_success": p.a_ok,
            "b_success": p.b_ok,
        }
        for p in pairs
        if p.a_ok != p.b_ok
    ]
    out["resamples"], out["seed"] = resamples, seed
    return out


def fmt_p(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.3g}"


def verdict(result: Mapping[str, Any]) -> str:
    """One line that says what the test shows and no more."""
    n = result["pairs"]
    s = result["success"]
    if n == 0:
        return "No tasks in common: nothing to compare."
    a_pass, b_pass = s["both"] + s["a_only"], s["both"] + s["b_only"]
    discordant = s["a_only"] + s["b_only"]
    counts = f"A passed {a_pass}/{n}, B passed {b_pass}/{n}; {discordant} discordant pair(s); exact McNemar p = {fmt_p(s['p_value'])}"
    if s["p_value"] < ALPHA:
        better = "B" if s["b_only"] > s["a_only"] else "A"
        return f"{better} succeeds on significantly more of these tasks at the 0.05 level ({counts})."
    tail = "; too few discordant pairs for any difference to reach 0.05" if discordant < 6 else ""
    return f"No significant difference in success at the 0.05 level ({counts}{tail})."


# -- console -----------------------------------------------------------------------------------
def metric_formatter(name: str) -> Callable[[Any], str]:
    from .report.formatting import fmt_co2, fmt_energy, fmt_int, fmt_ms, fmt_usd

    return {"duration_ms": fmt_ms, "total_tokens": fmt_int, "cost_usd": fmt_usd, "energy_j": fmt_energy, "co2_g": fmt_co2}[name]


def signed(fmt: Callable[[Any], str], value: float | None) -> str:
    if value is None:
        return "—"
    text = fmt(abs(value))
    return text if value == 0 else ("+" if value > 0 else "-") + text


def fmt_ci(fmt: Callable[[Any], str], ci: Sequence[float] | None) -> str:
    return "—" if not ci else f"[{signed(fmt, ci[0])}, {signed(fmt, ci[1])}]"


def print_console(result: Mapping[str, Any], out: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
    console.print(f"A: {result['run_a']['model']}  ({result['run_a']['source']})", markup=False)
    console.print(f"B: {result['run_b']['model']}  ({result['run_b']['source']})", markup=False)
    console.print(
        f"{result['pairs']} paired task execution(s); left out: {result['only_in_a']} only in A, {result['only_in_b']} only in B",
        markup=False,
    )
    s = result["success"]
    table = Table(title="Success (pairs)")
    for col in ("", "B passed", "B failed"):
        table.add_column(col, justify="right")
    table.add_row("A passed", str(s["both"]), str(s["a_only"]))
    table.add_row("A failed", str(s["b_only"]), str(s["neither"]))
    console.print(table)
    if result["metrics"]:
        mt = Table(title="Per-task means (pairs where both runs have the figure)")
        for col in ("metric", "A", "B", "B - A", "95% CI (bootstrap)"):
            mt.add_column(col, justify="right" if col != "metric" else "left")
        for name, m in result["metrics"].items():
            f = metric_formatter(name)
            mt.add_row(name, f(m["mean_a"]), f(m["mean_b"]), signed(f, m["mean_diff"]), fmt_ci(f, m["ci95"]))
        console.print(mt)
    for key, title in (("by_agent_type", "By agent type"), ("by_difficulty", "By difficulty")):
        groups = result[key]
        if len(groups) < 2:
            continue
        bt = Table(title=title)
        for col in ("group", "pairs", "A passed", "B passed", "p (McNemar)"):
            bt.add_column(col, justify="left" if col == "group" else "right")
        for name, g in groups.items():
            gs = g["success"]
            bt.add_row(name, str(g["pairs"]), str(gs["both"] + gs["a_only"]), str(gs["both"] + gs["b_only"]), fmt_p(gs["p_value"]))
        console.print(bt)
    if result["discordant"]:
        shown = result["discordant"][:20]
        console.print(
            "Discordant tasks: " + ", ".join(f"{d['task_id']} ({'A' if d['a_success'] else 'B'} only)" for d in shown), markup=False
        )
        if len(result["discordant"]) > 20:
            console.print(f"… and {len(result['discordant']) - 20} more (see --json)", markup=False)
    console.print("Verdict: " + verdict(result), markup=False)


# -- command -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoltrace-eval compare",
        description="Compare two runs task by task: success with an exact McNemar test, cost/tokens/time/energy with paired bootstrap intervals.",
    )
    parser.add_argument("run_a", metavar="RUN_A", help="run folder or hub:owner/smoltrace-results-…")
    parser.add_argument("run_b", metavar="RUN_B", help="run folder or hub:owner/smoltrace-results-…")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the comparison as JSON")
    parser.add_argument("--html", dest="html_path", metavar="PATH", help="write a self-contained HTML page")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES}, at least 2000)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"bootstrap seed (default {SEED})")
    return parser


def _write(path: Path, text: str) -> None:
    from .atomic import write_text_atomic

    write_text_atomic(path, text)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.resamples < 2000:
        print("smoltrace-eval compare: error: --resamples must be at least 2000", file=sys.stderr)
        return 2
    try:
        a, b = read_run(args.run_a), read_run(args.run_b)
    except SourceError as err:
        print(f"smoltrace-eval compare: error: {err}", file=sys.stderr)
        return 2
    result = compare_runs(a, b, args.resamples, args.seed)
    print_console(result)
    try:
        if args.json_path:
            _write(Path(args.json_path), json.dumps(result, indent=2, ensure_ascii=False) + "\n")
            print(f"JSON:   {args.json_path}")
        if args.html_path:
            from .report.compare_page import render_compare

            _write(Path(args.html_path), render_compare(result))
            print(f"HTML:   {args.html_path}")
    except OSError as err:
        print(f"smoltrace-eval compare: error: cannot write: {err.strerror or err} ({err.filename or ''})", file=sys.stderr)
        return 2
    return 0 if result["pairs"] else 2
