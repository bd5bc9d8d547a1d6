"""`smoltrace-eval compare`: pairing by test_case_uid, the exact McNemar p-value and the paired
bootstrap intervals checked against values computed here independently (binomial sums with
math.comb; a numpy percentile bootstrap with another seed), the JSON keys, the console verdict, the
HTML page (self-contained, escaped) and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smoltrace import compare
from smoltrace.cli import main as cli_main
from smoltrace.report.compare_page import render_compare
from smoltrace.sources import read_run
from tests.unit.test_report import XSS, Doc, external_refs, make_row, write_run


def planted(outcomes: list[tuple[bool, bool]], **fields_b: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    a_rows, b_rows = [], []
    for i, (ok_a, ok_b) in enumerate(outcomes):
        agent = "tool" if i % 2 else "code"
        a_rows.append(make_row(i, f"task_{i}", agent, ok_a))
        b_rows.append(make_row(i, f"task_{i}", agent, ok_b, **fields_b))
    return a_rows, b_rows


def two_runs(tmp_path: Path, a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    return (
        write_run(tmp_path / "a", rows=a_rows, traces=[], metric_rows=[]),
        write_run(tmp_path / "b", rows=b_rows, traces=[], metric_rows=[]),
    )


def exact_two_sided(k: int, n: int) -> float:
    """Two-sided binomial(n, 1/2) p-value by hand: twice the smaller tail, capped at 1."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_mcnemar_p_value_matches_binomial_sums(tmp_path: Path) -> None:
    outcomes = [(True, True)] * 5 + [(True, False)] * 9 + [(False, True)] * 2 + [(False, False)] * 4
    random.Random(3).shuffle(outcomes)
    a, b = two_runs(tmp_path, *planted(outcomes))
    result = compare.compare_runs(read_run(str(a)), read_run(str(b)))
    assert result["success"] == {
        "both": 5,
        "a_only": 9,
        "b_only": 2,
        "neither": 4,
        "p_value": pytest.approx(exact_two_sided(2, 11), rel=1e-12),
    }
    assert result["success"]["p_value"] == pytest.approx(134 / 2048, rel=1e-12)  # 2 * (1 + 11 + 55) / 2**11
    assert compare.mcnemar_exact(0, 0) == 1.0
    assert compare.mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)
    assert compare.mcnemar_exact(7, 8) == 1.0
    assert len(result["discordant"]) == 11
    assert {d["a_success"] for d in result["discordant"]} == {True, False}


def test_bootstrap_interval_matches_an_independent_bootstrap() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(1000.0, 150.0, 60)
    b = a + rng.normal(-80.0, 60.0, 60)  # B about 80 lower, paired
    ci = compare.paired_bootstrap_ci(list(a), list(b), resamples=5000, seed=0)
    assert ci is not None
    diff = b - a
    # an independent percentile bootstrap of the paired differences (numpy only, another seed)
    idx = np.random.default_rng(12345).integers(0, len(diff), size=(40_000, len(diff)))
    ref_lo, ref_hi = np.percentile(diff[idx].mean(axis=1), [2.5, 97.5])
    width = ref_hi - ref_lo
    assert abs(ci[0] - ref_lo) < 0.05 * width and abs(ci[1] - ref_hi) < 0.05 * width, (ci, ref_lo, ref_hi)
    # and the normal approximation agrees to within 10 % of the width
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(ci[0] - (diff.mean() - 1.96 * se)) < 0.1 * width and abs(ci[1] - (diff.mean() + 1.96 * se)) < 0.1 * width
    assert ci[1] < 0  # B is lower: the interval excludes zero
    assert compare.paired_bootstrap_ci(list(a), list(b), resamples=5000, seed=0) == ci  # seeded
    assert compare.paired_bootstrap_ci([1.0], [2.0]) is None
    assert compare.paired_bootstrap_ci([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]) == [1.0, 1.0]


def test_metrics_are_means_over_pairs_where_both_have_them(tmp_path: Path) -> None:
    outcomes = [(True, True)] * 6
    a_rows, b_rows = planted(outcomes)
    for i, (ra, rb) in enumerate(zip(a_rows, b_rows, strict=True)):
        ra["cost_usd"], rb["cost_usd"] = 0.01 * (i + 1), 0.02 * (i + 1)
        ra["total_tokens"], rb["total_tokens"] = 100 + i, 300 + 2 * i
        rb["energy_j"] = None  # B has no energy: energy_j and co2 only where both have them
        rb.pop("co2_g")
    result = compare.compare_runs(read_run(str(two_runs(tmp_path, a_rows, b_rows)[0])), read_run(str(tmp_path / "b")))
    assert set(result["metrics"]) == {"duration_ms", "total_tokens", "cost_usd"}
    cost = result["metrics"]["cost_usd"]
    assert cost["mean_a"] == pytest.approx(0.035) and cost["mean_b"] == pytest.approx(0.07)
    assert cost["mean_diff"] == pytest.approx(0.035)
    lo, hi = cost["ci95"]
    assert 0.01 < lo <= cost["mean_diff"] <= hi < 0.07
    tokens = result["metrics"]["total_tokens"]
    assert tokens["mean_diff"] == pytest.approx(sum(200 + i for i in range(6)) / 6)
    assert set(cost) == {"mean_a", "mean_b", "mean_diff", "ci95"}


def test_different_task_sets_compare_on_the_intersection(tmp_path: Path) -> None:
    a_rows, b_rows = planted([(True, False)] * 5)
    a_rows.append(make_row(9, "only_a", "tool", True))
    b_rows += [make_row(10, "only_b1", "tool", True), make_row(11, "only_b2", "code", True)]
    result = compare.compare_runs(*(read_run(str(p)) for p in two_runs(tmp_path, a_rows, b_rows)))
    assert (result["pairs"], result["only_in_a"], result["only_in_b"]) == (5, 1, 2)
    assert set(result["by_agent_type"]) == {"code", "tool"}
    assert sum(g["pairs"] for g in result["by_difficulty"].values()) == 5
    assert {"pairs", "only_in_a", "only_in_b", "success", "metrics"} <= set(result)


def test_cli_console_json_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = [(False, True)] * 12 + [(True, True)] * 3
    a_rows, b_rows = planted(outcomes)
    a_rows[0]["task_id"] = b_rows[0]["task_id"] = XSS
    a, b = two_runs(tmp_path, a_rows, b_rows)
    code = cli_main(["compare", str(a), str(b), "--json", str(tmp_path / "c.json"), "--html", str(tmp_path / "c.html")])
    out = capsys.readouterr().out
    assert code == 0
    verdict = next(line for line in out.splitlines() if line.startswith("Verdict: "))
    assert verdict.startswith("Verdict: B succeeds on significantly more of these tasks at the 0.05 level")
    assert "p = 0.000488" in verdict  # 2 / 2**12
    doc = json.loads((tmp_path / "c.json").read_text("utf-8"))
    assert doc["success"]["p_value"] == pytest.approx(2 / 2**12)
    html_text = (tmp_path / "c.html").read_text("utf-8")
    assert XSS not in html_text and "&lt;script&gt;" in html_text
    assert external_refs(html_text) == []
    parsed = Doc(html_text)
    assert parsed.find("meta", http_equiv="Content-Security-Policy")
    assert len(parsed.find("svg", class_="ci-bar")) >= 2
    assert "B succeeds on significantly more" in " ".join(parsed.text)


def test_no_difference_is_never_called_significant(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path, *planted([(True, False)] * 3 + [(False, True)] * 2 + [(True, True)] * 10))
    result = compare.compare_runs(read_run(str(a)), read_run(str(b)))
    text = compare.verdict(result)
    assert text.startswith("No significant difference in success at the 0.05 level")
    assert "too few discordant pairs" in text
    assert "significantly" not in text
    assert "Both runs passed and failed the same tasks" not in render_compare(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing_a", "missing_b"], "missing_a: not a folder"),
        (["EMPTY", "EMPTY"], "not a smoltrace run folder"),
        (["A", "A", "--resamples", "10"], "--resamples must be at least 2000"),
        (["A", "hub:not-a-repo-id"], "expected hub:owner/dataset"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    (tmp_path / "EMPTY").mkdir()
    write_run(tmp_path / "A")
    args = [str(tmp_path / x) if x in ("EMPTY", "A") else x for x in args]
    assert cli_main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_no_common_tasks_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", rows=[make_row(0, "x")], traces=[], metric_rows=[])
    b = write_run(tmp_path / "b", rows=[make_row(0, "y")], traces=[], metric_rows=[])
    assert cli_main(["compare", str(a), str(b)]) == 2
    assert "No tasks in common" in capsys.readouterr().out
