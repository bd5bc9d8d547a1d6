"""`smoltrace-eval leaderboard`: the Pareto front on planted runs (per agent type, ties kept, a
figure some run lacks left out), the console/JSON/HTML outputs (inline SVG charts with the front),
and report.html placing a run among the other runs of its folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from smoltrace.cli import main as cli_main
from smoltrace.leaderboard import dominates, leaderboard, pareto_front
from smoltrace.report import render_report
from tests.unit.test_report import XSS, Doc, external_refs, make_metadata, make_row, write_run

# name: (agent, success %, cost/task $, energy/task J, duration/task ms)
PLANTED = {
    "A": ("tool", 90.0, 0.010, 100.0, 1000.0),  # front
    "B": ("tool", 80.0, 0.005, 50.0, 1000.0),  # front
    "C": ("tool", 70.0, 0.020, 200.0, 2000.0),  # dominated by A
    "D": ("tool", 95.0, 0.050, 400.0, 3000.0),  # front (best success)
    "E": ("tool", 80.0, 0.006, 60.0, 1500.0),  # dominated by B
    "G": ("tool", 80.0, 0.005, 50.0, 1000.0),  # B's twin: neither dominates the other
    "F": ("code", 50.0, 0.100, 900.0, 5000.0),  # alone in its agent type: front
}
FRONT = {"A", "B", "D", "G", "F"}


def board(name: str, agent: str, rate: float, cost: float, energy: float, dur: float, tests: int = 20) -> dict[str, Any]:
    return {
        "run_id": f"run-{name}",
        "model": f"model-{name}",
        "provider": "litellm",
        "agent_type": agent,
        "total_tests": tests,
        "successful_tests": int(rate * tests / 100),
        "success_rate": rate,
        "total_cost_usd": cost * tests,
        "avg_duration_ms": dur,
        "energy_j": energy * tests,
        "co2_emissions_g": energy * tests * 1.3e-4,
        "timestamp": "2026-12-04T10:00:00Z",
    }


def plant(folder: Path, runs: dict[str, tuple[str, float, float, float, float]] = PLANTED) -> Path:
    for name, (agent, rate, cost, energy, dur) in runs.items():
        rows = [make_row(i, f"t{i}", agent, i < 2) for i in range(3)]
        write_run(
            folder / f"run_{name}",
            rows=rows,
            traces=[],
            metric_rows=[],
            metadata=make_metadata(1, model=f"model-{name}", run_id=f"run-{name}"),
            leaderboard=board(name, agent, rate, cost, energy, dur),
        )
    return folder


def test_pareto_front_function() -> None:
    assert dominates([90, 1, 1], [80, 1, 1]) and not dominates([80, 1, 1], [80, 1, 1])
    assert not dominates([90, 2], [80, 1]) and not dominates([80, 1], [90, 2])
    assert pareto_front([[90, 1], [80, 1], [80, 0.5], [95, 3], [80, 0.5]]) == [True, False, True, True, True]
    assert pareto_front([]) == [] and pareto_front([[0, 0]]) == [True]


def test_front_on_planted_runs(tmp_path: Path) -> None:
    entries, used = leaderboard([str(plant(tmp_path / "runs"))])
    assert {e.model.removeprefix("model-") for e in entries if e.front} == FRONT
    assert used == {"tool": ["cost_usd", "energy_j", "duration_ms"], "code": ["cost_usd", "energy_j", "duration_ms"]}
    a = next(e for e in entries if e.model == "model-A")
    assert a.cost_usd == pytest.approx(0.01) and a.energy_j == pytest.approx(100.0) and a.duration_ms == 1000.0
    # sorted by agent type, then success rate
    assert [e.model for e in entries][:3] == ["model-F", "model-D", "model-A"]


def test_a_figure_some_run_lacks_is_left_out_of_its_group(tmp_path: Path) -> None:
    runs = plant(tmp_path / "runs", {k: PLANTED[k] for k in ("A", "B", "C")})
    meta = make_metadata(0, model="model-H")
    meta["gpu_metrics"] = {"enabled": False, "reason": "API model"}
    write_run(
        runs / "run_H",
        rows=[make_row(0, "t0", "tool")],
        traces=[],
        metric_rows=[],
        metadata=meta,
        leaderboard=board("H", "tool", 60.0, 0.001, 0.0, 900.0) | {"energy_j": 0.0},
    )
    entries, used = leaderboard([str(runs)])
    h = next(e for e in entries if e.model == "model-H")
    assert h.energy_j is None and h.co2_g is None  # no GPU metrics: not 0 J
    assert used["tool"] == ["cost_usd", "duration_ms"]
    assert {e.model for e in entries if e.front} == {"model-A", "model-B", "model-H"}


def test_cli_console_json_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = plant(tmp_path / "runs")
    assert cli_main(["leaderboard", str(runs), "--json", str(tmp_path / "lb.json"), "--html", str(tmp_path / "lb.html")]) == 0
    out = capsys.readouterr().out
    assert out.count("★") >= len(FRONT)
    doc = json.loads((tmp_path / "lb.json").read_text("utf-8"))
    assert {e["model"] for e in doc["entries"] if e["front"]} == {f"model-{n}" for n in FRONT}
    html_text = (tmp_path / "lb.html").read_text("utf-8")
    assert external_refs(html_text) == []
    charts = re.findall(r'<svg class="chart scatter".*?</svg>', html_text, flags=re.S)
    assert len(charts) == 2
    for svg in charts:
        assert svg.count("<circle") == len(PLANTED)
        assert svg.count('class="run front"') == len(FRONT)  # for these runs the 2-D fronts are the same
        assert len(re.findall(r'<polyline class="front" points="[^"]+"', svg)) == 2  # one per agent type
    assert len(Doc(html_text).find("tr", class_="front")) == len(FRONT)


def test_untrusted_names_are_escaped(tmp_path: Path) -> None:
    runs = plant(tmp_path / "runs", {"A": PLANTED["A"]})
    b = board("X", "tool", 10.0, 0.1, 10.0, 10.0) | {"model": XSS, "provider": XSS}
    write_run(runs / "run_X", rows=[make_row(0, "t0")], traces=[], metric_rows=[], metadata=make_metadata(1, model=XSS), leaderboard=b)
    assert cli_main(["leaderboard", str(runs), "--html", str(tmp_path / "lb.html")]) == 0
    html_text = (tmp_path / "lb.html").read_text("utf-8")
    assert XSS not in html_text and "&lt;script&gt;" in html_text
    assert XSS not in render_report(runs / "run_A")


def test_report_places_the_run_among_its_folder(tmp_path: Path) -> None:
    runs = plant(tmp_path / "runs")
    doc = Doc(render_report(runs / "run_E"))
    here = doc.find("tr", class_="here")
    assert len(here) == 1
    text = " ".join(doc.text)
    assert "Among the runs in this folder" in text and "this run" in text
    assert len(doc.find("tr", class_="front")) == len(FRONT)
    alone = write_run(tmp_path / "alone" / "run")
    assert "Among the runs in this folder" not in render_report(alone)


@pytest.mark.parametrize("source", ["missing", "EMPTY"])
def test_bad_sources_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str) -> None:
    (tmp_path / "EMPTY").mkdir()
    assert cli_main(["leaderboard", str(tmp_path / source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smoltrace-eval leaderboard: error:") and len(err.strip().splitlines()) == 1
