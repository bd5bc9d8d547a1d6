"""Render a run folder's HTML report and screenshot it (full page) with Debian's Chromium.

    python scripts/report_screenshot.py RUN_DIR OUT.png [--width 1280] [--open-traces N]
    python scripts/report_screenshot.py PAGE.html OUT.png      (an existing page: compare, leaderboard)

Writes RUN_DIR/report.html (smoltrace.report.write_report), opens it from its file:// URL in a
headless /usr/bin/chromium driven by Playwright (never Playwright's downloaded browsers), and saves
a full-page PNG. `--open-traces N` expands the first N trace waterfalls before the shot (default 2).
The page must make no network request; the script fails if it does or logs a console error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def screenshot(run_dir: Path, out: Path, width: int = 1280, open_traces: int = 2) -> list[str]:
    """Write the report, screenshot it to `out`; returns the problems seen (requests, errors)."""
    from playwright.sync_api import sync_playwright

    from smoltrace.report import write_report

    report = run_dir if run_dir.is_file() else write_report(run_dir)
    url = report.resolve().as_uri()
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
            page.on("request", lambda r: problems.append(f"request: {r.url}") if r.url != url else None)
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(url, wait_until="load")
            page.evaluate(
                "n => document.querySelectorAll('details.trace').forEach((d, i) => { d.open = i < n; })",
                open_traces,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--open-traces", type=int, default=2)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"report_screenshot: {CHROMIUM} is missing (apt-get install -y chromium)", file=sys.stderr)
        return 2
    if not args.run_dir.is_dir() and not (args.run_dir.is_file() and args.run_dir.suffix == ".html"):
        print(f"report_screenshot: {args.run_dir} is neither a run folder nor an .html page", file=sys.stderr)
        return 2
    problems = screenshot(args.run_dir, args.out, args.width, args.open_traces)
    for problem in problems:
        print(f"report_screenshot: {problem}", file=sys.stderr)
    print(args.out)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
