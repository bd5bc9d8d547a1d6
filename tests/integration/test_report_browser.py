"""The HTML report in a real browser (Debian's /usr/bin/chromium driven by Playwright; never a
downloaded browser): opened from file://, it logs no console error, throws no page error, makes no
request but for the file itself, runs no planted script, shows the summary, the task rows and every
GPU chart at a non-zero size, and still shows them with JavaScript off. One slow test renders the
report of a real `smoltrace-eval` run (fake OpenAI server, OTel on, simulated 2-GPU exporter).

Skipped, with the reason, where /usr/bin/chromium is not installed (`apt-get install -y chromium`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from smoltrace.report import write_report
from tests.unit.test_report import ATTR_XSS, XSS, demo_rows, make_metadata, make_metric_rows, make_row, make_trace, write_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium); the report's browser checks need it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Opened:
    page: Any
    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.requests == [self.url], self.requests
        assert self.console_errors == []
        assert self.page_errors == []
        assert self.dialogs == []


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Opened]]:
    """Open an HTML file from its file:// URL, recording requests, console errors and dialogs."""
    contexts: list[Any] = []

    def opener(path: Path, javascript: bool = True) -> Opened:
        url = path.resolve().as_uri()
        context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=javascript)
        contexts.append(context)
        page = context.new_page()
        opened = Opened(page, url)
        page.on("request", lambda r: opened.requests.append(r.url))
        page.on("console", lambda m: opened.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: opened.page_errors.append(str(e)))

        def on_dialog(dialog: Any) -> None:
            opened.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(url, wait_until="load")
        page.wait_for_timeout(100)  # let any late request or error surface
        return opened

    yield opener
    for context in contexts:
        context.close()


@pytest.fixture
def open_report(open_page: Callable[..., Opened]) -> Callable[..., Opened]:
    def opener(run_dir: Path, javascript: bool = True) -> Opened:
        return open_page(write_report(run_dir), javascript)

    return opener


def assert_charts_rendered(page: Any, expected: int) -> None:
    charts = page.locator("svg.chart")
    assert charts.count() == expected
    for i in range(expected):
        box = charts.nth(i).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50, box
        assert charts.nth(i).locator("polyline").count() == 1


def test_demo_report_is_clean_and_complete(tmp_path: Path, open_report: Callable[..., Opened]) -> None:
    opened = open_report(write_run(tmp_path / "run"))
    opened.assert_clean()
    page = opened.page
    assert page.title() == "openai/fake · smoltrace report"
    cards = page.locator(".cards .card")
    assert cards.count() == 8
    for i in range(cards.count()):
        assert cards.nth(i).is_visible()
    assert "50%" in cards.first.inner_text()
    rows = page.locator("table.tasks tbody tr")
    assert rows.count() == 4
    for i in range(4):
        assert rows.nth(i).is_visible()
    assert_charts_rendered(page, 8)
    # the first waterfall is open, the others are collapsed
    assert page.locator("details.trace").first.locator(".wf-row").first.is_visible()
    assert not page.locator("details.trace").nth(1).locator(".wf-row").first.is_visible()


def test_sorting_and_trace_links(tmp_path: Path, open_report: Callable[..., Opened]) -> None:
    opened = open_report(write_run(tmp_path / "run"))
    page = opened.page

    def column(index: int) -> list[str]:
        return [t.strip() for t in page.locator(f"table.tasks tbody tr td:nth-child({index})").all_inner_texts()]

    page.locator("table.tasks th", has_text="tokens").click()
    assert column(10) == ["1,265", "1,266", "1,267", "1,268"]
    page.locator("table.tasks th", has_text="tokens").click()
    assert column(10) == ["1,268", "1,267", "1,266", "1,265"]
    page.locator("table.tasks th", has_text="result").click()
    assert column(2)[:2] == ["FAIL", "FAIL"]
    page.locator("a.task-id", has_text="code_square_root").click()
    details = page.locator("details#trace-4")
    # the link's handler opens the trace after the navigation to its anchor: wait for it
    page.wait_for_function("document.getElementById('trace-4').open === true", timeout=5000)
    assert details.get_attribute("open") is not None
    assert details.locator(".wf-row").first.is_visible()
    opened.assert_clean()


def test_report_works_without_javascript(tmp_path: Path, open_report: Callable[..., Opened]) -> None:
    opened = open_report(write_run(tmp_path / "run"), javascript=False)
    opened.assert_clean()
    assert opened.page.locator("table.tasks tbody tr").count() == 4
    assert opened.page.locator(".cards").is_visible()
    assert_charts_rendered(opened.page, 8)
    opened.page.locator("details.trace summary").nth(2).click()  # <details> opens without JS
    assert opened.page.locator("details.trace").nth(2).locator(".wf-row").first.is_visible()


def test_planted_scripts_do_not_run(tmp_path: Path, open_report: Callable[..., Opened]) -> None:
    rows = [
        make_row(0, XSS, success=False, response=XSS, error=XSS, prompt=ATTR_XSS, failure_reason="<img src=x onerror=alert(2)>"),
        make_row(1, ATTR_XSS, response="see https://example.com/pixel.png", tools_used=[XSS]),
    ]
    traces = [make_trace(r) for r in rows]
    for span in traces[0]["spans"]:
        span["name"] = XSS
        span["attributes"]["output.value"] = "<iframe src=https://example.com></iframe>"
    metrics = make_metric_rows(1, 4)
    for m in metrics:
        m["gpu_name"] = XSS
    opened = open_report(write_run(tmp_path / "run", rows=rows, traces=traces, metric_rows=metrics, metadata=make_metadata(1, model=XSS)))
    opened.assert_clean()
    page = opened.page
    assert page.locator("script").count() == 1
    assert page.locator("img, iframe, object, embed").count() == 0
    assert XSS in page.locator("h1").inner_text()
    assert page.locator("table.tasks tbody tr").first.locator("a.task-id").inner_text() == XSS
    assert_charts_rendered(page, 4)
    page.locator("table.tasks tbody tr").first.hover()
    page.locator(".wf-row").first.hover()
    assert opened.dialogs == []


@pytest.mark.parametrize(
    "variant",
    ["zero_tasks", "no_traces_no_gpu", "interrupted", "crashed", "empty"],
)
def test_degenerate_runs_render_cleanly(tmp_path: Path, open_report: Callable[..., Opened], variant: str) -> None:
    run = tmp_path / "run"
    if variant == "zero_tasks":
        write_run(run, rows=[], traces=[], metric_rows=[])
        expected_rows, expected_charts = 0, 0
    elif variant == "no_traces_no_gpu":
        meta = make_metadata(0, otel={"enabled": False})
        meta["gpu_metrics"] = {"enabled": False, "reason": "API models don't use the local GPU"}
        write_run(run, traces=[], metric_rows=[], metadata=meta)
        expected_rows, expected_charts = 4, 0
    elif variant == "interrupted":
        write_run(run, rows=demo_rows()[:2], metadata=make_metadata(status="interrupted", num_planned=9))
        expected_rows, expected_charts = 2, 8
    elif variant == "crashed":
        write_run(run, rows=None, traces=None, metric_rows=None, leaderboard=None, metadata=make_metadata(status="running"))
        (run / "checkpoint.jsonl").write_text("\n".join(json.dumps(r) for r in demo_rows()[:3]) + '\n{"torn', "utf-8")
        expected_rows, expected_charts = 3, 0
    else:
        run.mkdir()
        expected_rows, expected_charts = 0, 0
    opened = open_report(run)
    opened.assert_clean()
    page = opened.page
    assert page.locator(".cards").is_visible()
    assert page.locator("table.tasks tbody tr").count() == expected_rows
    assert_charts_rendered(page, expected_charts)
    if variant in ("interrupted", "crashed", "empty"):
        assert page.locator(".notice").first.is_visible()


@pytest.mark.slow
def test_report_of_a_real_run(tmp_path: Path, open_report: Callable[..., Opened]) -> None:
    """`smoltrace-eval` against the fake OpenAI server with OTel and the simulated 2-GPU exporter."""
    from tests.fakes.chat_servers import FakeOpenAIServer
    from tests.fakes.runner_fixtures import run_subprocess, standard_script, subprocess_env

    server = FakeOpenAIServer(standard_script()).start()
    try:
        args = ["--model", "openai/fake", "--api-base", server.api_base, "--output-dir", str(tmp_path / "out"), "--limit", "2"]
        args += ["--enable-otel", "--enable-gpu-metrics", "--parallel-workers", "2", "--quiet"]
        proc = run_subprocess(args, timeout=90, env=subprocess_env(SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:2"))
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    opened = open_report(run)
    opened.assert_clean()
    page = opened.page
    assert page.locator("table.tasks tbody tr").count() == 4
    assert re.search(r"\d+%", page.locator(".cards .card").first.inner_text())
    assert page.locator("details.trace").count() == 4
    assert page.locator(".wf-row").count() >= 4 * 5
    assert_charts_rendered(page, 8)
    assert "Simulated GPU 80GB" in page.locator(".gpu").first.inner_text()
    assert page.locator(".notice.info", has_text="simulated").is_visible()


def test_compare_page_is_clean(tmp_path: Path, open_page: Callable[..., Opened]) -> None:
    from smoltrace.cli import main as cli_main
    from tests.unit.test_compare import planted, two_runs

    a_rows, b_rows = planted([(False, True)] * 7 + [(True, True)] * 3 + [(True, False)] * 1)
    a_rows[0]["task_id"] = b_rows[0]["task_id"] = XSS
    for i, r in enumerate(b_rows):
        r["cost_usd"], r["total_tokens"] = 0.002 * (i % 3), 900 + 50 * i
    a, b = two_runs(tmp_path, a_rows, b_rows)
    assert cli_main(["compare", str(a), str(b), "--html", str(tmp_path / "compare.html")]) == 0
    opened = open_page(tmp_path / "compare.html")
    opened.assert_clean()
    page = opened.page
    assert "vs" in page.locator("h1").inner_text()
    assert page.locator(".verdict").is_visible()
    assert page.locator("table.two-by-two td[data-cell=b_only]").inner_text() == "7"
    bars = page.locator("svg.ci-bar")
    assert bars.count() >= 4
    for i in range(bars.count()):
        box = bars.nth(i).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 10
        assert bars.nth(i).locator("line.ci").count() == 1
    assert page.locator("table.discordant tbody tr").count() == 8
    page.locator("table.discordant th", has_text="passed in").click()  # the shared sorting script runs
    opened.assert_clean()
    assert opened.dialogs == []


def test_leaderboard_page_and_report_placement(
    tmp_path: Path, open_page: Callable[..., Opened], open_report: Callable[..., Opened]
) -> None:
    from smoltrace.cli import main as cli_main
    from tests.unit.test_leaderboard import FRONT, PLANTED, plant

    runs = plant(tmp_path / "runs")
    assert cli_main(["leaderboard", str(runs), "--html", str(tmp_path / "lb.html")]) == 0
    opened = open_page(tmp_path / "lb.html")
    opened.assert_clean()
    page = opened.page
    charts = page.locator("svg.chart.scatter")
    assert charts.count() == 2
    for i in range(2):
        chart = charts.nth(i)
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100, box
        assert chart.locator("circle.run").count() == len(PLANTED)
        assert chart.locator("circle.run.front").count() == len(FRONT)
        fronts = chart.locator("polyline.front")
        assert fronts.count() == 2  # one per agent type; the tool front joins 4 points
        assert max((fronts.nth(j).bounding_box() or {"width": 0})["width"] for j in range(2)) > 50
    assert page.locator("table.leaderboard tbody tr.front").count() == len(FRONT)
    page.locator("table.leaderboard th", has_text="success").click()
    opened.assert_clean()
    report = open_report(runs / "run_C")
    report.assert_clean()
    assert report.page.locator("section.placement tr.here").is_visible()
    assert_charts_rendered(report.page, 0)  # the placement is a table: no chart added to the report
