"""The HTML report of a run: one self-contained file (`report.html` in the run folder).

`render_report(run_dir)` reads the run folder (results, traces, GPU metric rows, metadata,
leaderboard row; the checkpoint when a run died before writing its results), builds the page's view
model (`views.py`) and renders it with Jinja2 templates (`templates/`, autoescape on);
`write_report(run_dir)` writes it atomically. The page loads nothing: the CSS and a few lines of
optional JS (table sorting, opening a linked trace) are package files (`static/`) inlined in the
page, the charts are inline SVG, and a Content-Security-Policy (`page.CSP`) forbids any fetch. The
size stays bounded: long texts are cut, each waterfall shows at most `MAX_SPANS_PER_TRACE` spans and
the whole page at most `MAX_SPANS_TOTAL`, and GPU series are thinned to `MAX_CHART_POINTS` points.
The compare and leaderboard pages share the layout (`templates/layout.html.j2`).

Usage from a shell: `python -m smoltrace.report RUN_DIR` (prints the path it wrote).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_text_atomic
from ..run_folder import RunFolder
from .charts import MAX_CHART_POINTS, nice_ticks
from .charts import tick_label as _tick_label
from .formatting import TEXT_CAP, TIMES, fmt_co2, fmt_energy, fmt_int, fmt_ms, fmt_pct, fmt_sig, fmt_usd
from .leaderboard_page import placement
from .page import CSP, CSS, JS, render
from .rundata import REPORT, RunData, load_run
from .views import build_report_view

MAX_SPANS_PER_TRACE = 200
MAX_SPANS_TOTAL = 5000

__all__ = [
    "CSP",
    "CSS",
    "JS",
    "MAX_CHART_POINTS",
    "TEXT_CAP",
    "TIMES",
    "RunData",
    "_tick_label",
    "fmt_co2",
    "fmt_energy",
    "fmt_int",
    "fmt_ms",
    "fmt_pct",
    "fmt_sig",
    "fmt_usd",
    "load_run",
    "main",
    "nice_ticks",
    "render_report",
    "write_report",
]


def render_report(run_dir: Path, folder: RunFolder | None = None) -> str:
    """The report of the run in `run_dir` as one self-contained HTML document. `folder`: the
    `RunFolder` that just wrote the run (its records are not read back from disk)."""
    data = folder.contents() if folder is not None else load_run(Path(run_dir))
    view = build_report_view(data, max_spans_total=MAX_SPANS_TOTAL, max_spans_per_trace=MAX_SPANS_PER_TRACE)
    view.placement, view.placement_note = placement(Path(run_dir))
    return render("report.html.j2", v=view)


def write_report(run_dir: Path, folder: RunFolder | None = None) -> Path:
    """Render the report and write `<run_dir>/report.html` atomically (temp file, fsync, rename)."""
    run_dir = Path(run_dir)
    text = render_report(run_dir, folder)
    path = run_dir / REPORT
    write_text_atomic(path, text)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m smoltrace.report RUN_DIR   (writes RUN_DIR/report.html)", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    if not run_dir.is_dir():
        print(f"smoltrace.report: error: {run_dir} is not a folder", file=sys.stderr)
        return 2
    print(write_report(run_dir))
    return 0
