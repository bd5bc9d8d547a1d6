"""The HTML report of a run: one self-contained file (`report.html` in the run folder).

`render_report(run_dir)` reads the run folder's JSON files (results, traces, GPU metric rows,
metadata, leaderboard row; the checkpoint when a run died before writing its results) and returns
the page; `write_report(run_dir)` writes it atomically. The page loads nothing: CSS, the charts
(inline SVG drawn here), and a few lines of optional JS (table sorting, opening a linked trace)
are all inline, and a Content-Security-Policy forbids any fetch. Every string taken from the run
(prompts, responses, errors, span names and attributes, GPU names) is HTML-escaped. The size stays
bounded: long texts are cut, each waterfall shows at most `MAX_SPANS_PER_TRACE` spans and the
whole page at most `MAX_SPANS_TOTAL`, and GPU series are thinned to `MAX_CHART_POINTS` points.

Usage from a shell: `python -m smoltrace.report RUN_DIR` (prints the path it wrote).
"""

from __future__ import annotations

import html
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic

REPORT = "report.html"
RESULTS = "results.json"
TRACES = "traces.json"
METRIC_ROWS = "metrics_rows.json"
METADATA = "metadata.json"
LEADERBOARD_ROW = "leaderboard_row.json"
CHECKPOINT = "checkpoint.jsonl"

MAX_SPANS_PER_TRACE = 200
MAX_SPANS_TOTAL = 5000
MAX_CHART_POINTS = 600
TEXT_CAP = 400
ATTR_CAP = 200

TIMES = "\u00d7"
AGENT_LABELS = {"tool": "ToolCallingAgent", "code": "CodeAgent"}


# -- small helpers ----------------------------------------------------------------------------
def esc(value: Any) -> str:
    """HTML-escape anything (quotes included, so the result is safe in attribute values too)."""
    return html.escape("" if value is None else str(value), quote=True)


def cut(text: Any, limit: int = TEXT_CAP) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def num(value: Any) -> float | None:
    """A finite float, or None (bools, strings that are not numbers, NaN and inf are None)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def fmt_sig(value: float, digits: int = 3) -> str:
    """`digits` significant digits, thousands separators, never scientific notation."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = min(max(digits - 1 - magnitude, 0), 8)
    text = f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def fmt_int(value: Any) -> str:
    n = num(value)
    return "—" if n is None else f"{round(n):,}"


def fmt_pct(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}%" if abs(value - round(value)) < 1e-9 else f"{value:.1f}%"


def fmt_ms(value: Any) -> str:
    ms = num(value)
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{fmt_sig(ms, 3)} ms"
    s = ms / 1000
    if s < 60:
        return f"{fmt_sig(s, 3)} s"
    if s < 3600 - 0.5:
        whole = round(s)
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = round(s / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def fmt_energy(value: Any) -> str:
    j = num(value)
    if j is None:
        return "—"
    if abs(j) < 1000:
        return f"{fmt_sig(j, 4)} J"
    if abs(j) < 1e6:
        return f"{fmt_sig(j / 1e3, 4)} kJ"
    return f"{fmt_sig(j / 1e6, 4)} MJ"


def fmt_wh(value: Any) -> str:
    j = num(value)
    if j is None:
        return "—"
    wh = j / 3600
    return f"{fmt_sig(wh / 1000, 3)} kWh" if wh >= 1000 else f"{fmt_sig(wh, 3)} Wh"


def fmt_co2(value: Any) -> str:
    g = num(value)
    if g is None:
        return "—"
    return f"{fmt_sig(g / 1000, 3)} kg" if abs(g) >= 1000 else f"{fmt_sig(g, 3)} g"


def fmt_usd(value: Any) -> str:
    usd = num(value)
    if usd is None:
        return "—"
    if usd == 0:
        return "$0.00"
    if abs(usd) >= 0.01:
        return f"${usd:,.2f}"
    return f"${fmt_sig(usd, 2)}"


def fmt_mib(value: Any) -> str:
    mib = num(value)
    if mib is None:
        return "—"
    return f"{fmt_sig(mib / 1024, 3)} GiB" if mib >= 1024 else f"{fmt_sig(mib, 3)} MiB"


def parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def fmt_when(text: Any) -> str:
    dt = parse_iso(text)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else (str(text) if text else "—")


# -- reading the run folder -------------------------------------------------------------------
@dataclass
class RunData:
    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)
    metric_rows: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    leaderboard: dict[str, Any] = field(default_factory=dict)
    rows_source: str = RESULTS
    problems: list[str] = field(default_factory=list)


def _read(path: Path, kind: type, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text("utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} could not be read ({type(exc).__name__}); its part of the report is empty")
        return None
    if not isinstance(value, kind):
        problems.append(f"{path.name} does not hold a JSON {kind.__name__}; ignored")
        return None
    return value


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [dict(item) for item in items or () if isinstance(item, Mapping)]


def _read_checkpoint(path: Path) -> list[dict[str, Any]]:
    """Finished executions from the checkpoint journal (a torn last line is skipped)."""
    rows: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, Mapping):
            rows[str(row.get("test_case_uid") or row.get("task_id") or len(rows))] = dict(row)
    return sorted(rows.values(), key=lambda r: (num(r.get("test_index")) or 0.0, str(r.get("test_case_uid", ""))))


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    data = RunData(run_dir)
    p = data.problems
    data.metadata = _read(run_dir / METADATA, dict, p) or {}
    data.leaderboard = _read(run_dir / LEADERBOARD_ROW, dict, p) or {}
    results = _read(run_dir / RESULTS, list, p)
    if results is None and (run_dir / CHECKPOINT).is_file():
        data.rows = _read_checkpoint(run_dir / CHECKPOINT)
        data.rows_source = CHECKPOINT
    else:
        data.rows = _dicts(results)
        data.rows_source = RESULTS if results is not None else ""
    traces = _read(run_dir / TRACES, list, p)
    data.traces = [t for t in _dicts(traces) if isinstance(t.get("spans", []), list)]
    data.metric_rows = _dicts(_read(run_dir / METRIC_ROWS, list, p))
    return data


# -- run-level numbers ------------------------------------------------------------------------
def _sum(rows: Iterable[Mapping[str, Any]], key: str) -> float | None:
    values = [v for v in (num(r.get(key)) for r in rows) if v is not None]
    return sum(values) if values else None


def _duration_ms(row: Mapping[str, Any]) -> float | None:
    d = num(row.get("duration_ms"))
    return d if d is not None else num(row.get("execution_time_ms"))


@dataclass
class GpuSeries:
    gpu_id: str
    name: str
    uuid: str
    t: list[float] = field(default_factory=list)  # seconds since the first sample of the run
    util: list[float | None] = field(default_factory=list)
    mem: list[float | None] = field(default_factory=list)  # MiB
    temp: list[float | None] = field(default_factory=list)
    power: list[float | None] = field(default_factory=list)
    mem_total: float | None = None  # MiB
    energy_j: float | None = None
    co2_g: float | None = None
    cost_usd: float | None = None


def _sample_ns(row: Mapping[str, Any]) -> float | None:
    ns = num(row.get("timestamp_unix_nano"))
    if ns is not None:
        return ns
    dt = parse_iso(row.get("timestamp"))
    return dt.timestamp() * 1e9 if dt else None


def gpu_series(data: RunData) -> list[GpuSeries]:
    """One series per GPU from metrics_rows.json (sorted by time), with totals from the summary."""
    samples: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
    for row in data.metric_rows:
        ns = _sample_ns(row)
        if ns is None:
            continue
        samples.setdefault(str(row.get("gpu_id", "?")), []).append((ns, row))
    devices = _get(data.metadata, "gpu_metrics", "summary", "devices") or _get(data.metadata, "gpu_metrics", "devices") or []
    by_key: dict[str, Mapping[str, Any]] = {}
    for dev in devices if isinstance(devices, list) else []:
        if isinstance(dev, Mapping):
            by_key.setdefault(str(dev.get("index")), dev)
            if dev.get("uuid"):
                by_key.setdefault(str(dev["uuid"]), dev)
    t0 = min((ns for rows in samples.values() for ns, _ in rows), default=0.0)

    def sort_key(gpu_id: str) -> tuple[int, float, str]:
        n = num(gpu_id)
        return (0, n, "") if n is not None else (1, 0.0, gpu_id)

    out: list[GpuSeries] = []
    for gpu_id in sorted(samples, key=sort_key):
        rows = sorted(samples[gpu_id], key=lambda item: item[0])
        last = rows[-1][1]
        uuid = str(last.get("gpu_uuid") or "")
        dev = by_key.get(uuid) or by_key.get(gpu_id) or {}
        s = GpuSeries(gpu_id, str(last.get("gpu_name") or dev.get("name") or "GPU"), uuid)
        for ns, row in rows:
            s.t.append((ns - t0) / 1e9)
            s.util.append(num(row.get("gpu_utilization_percent")))
            s.mem.append(num(row.get("gpu_memory_used_mib")))
            s.temp.append(num(row.get("gpu_temperature_celsius")))
            s.power.append(num(row.get("gpu_power_watts")))
        totals = [v for v in (num(r.get("gpu_memory_total_mib")) for _, r in rows) if v]
        dev_total = num(dev.get("memory_total_bytes"))
        s.mem_total = max(totals) if totals else (dev_total / 2**20 if dev_total else None)

        def cumulative(key: str, rows: list[tuple[float, Mapping[str, Any]]] = rows) -> float | None:
            values = [v for v in (num(r.get(key)) for _, r in rows) if v is not None]
            return max(values) if values else None

        s.energy_j = num(dev.get("energy_joules")) if dev else None
        s.energy_j = s.energy_j if s.energy_j is not None else cumulative("gpu_energy_joules")
        s.co2_g = num(dev.get("co2_grams")) if dev else None
        s.co2_g = s.co2_g if s.co2_g is not None else cumulative("co2_emissions_gco2e")
        s.cost_usd = num(dev.get("power_cost_usd")) if dev else None
        s.cost_usd = s.cost_usd if s.cost_usd is not None else cumulative("power_cost_usd")
        out.append(s)
    return out


# -- SVG charts -------------------------------------------------------------------------------
def nice_step(span: float, target: int = 5) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(target, 1)
    base = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * base:
            return mult * base
    return 10 * base


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    step = nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _tick_label(value: float, step: float) -> str:
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6 * max(step * 10**decimals, 1):
        decimals += 1
    return f"{value:,.{decimals}f}"


def thin(xs: Sequence[float], ys: Sequence[float | None], limit: int = MAX_CHART_POINTS) -> list[tuple[float, float]]:
    """Drop missing values; above `limit` points keep each bucket's min and max (peaks survive)."""
    points = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None]
    if len(points) <= limit:
        return points
    buckets = max(limit // 2, 1)
    size = len(points) / buckets
    out: list[tuple[float, float]] = []
    for b in range(buckets):
        chunk = points[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        lo = min(chunk, key=lambda p: p[1])
        hi = max(chunk, key=lambda p: p[1])
        out.extend(sorted({lo, hi}, key=lambda p: p[0]))
    return out


def _time_axis(span_s: float) -> tuple[float, str]:
    """(divisor from seconds, unit) for an x axis covering span_s seconds."""
    if span_s < 2:
        return 1e-3, "ms"
    if span_s <= 300:
        return 1.0, "s"
    if span_s <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def line_chart(
    xs: Sequence[float],
    ys: Sequence[float | None],
    *,
    label: str,
    unit: str,
    color: str,
    x_max: float | None = None,
    y_range: tuple[float | None, float | None] = (None, None),
    ref: tuple[float, str] | None = None,
    data_attrs: str = "",
) -> str:
    """A small time-series chart as inline SVG: one <polyline> for the series, y grid and labels,
    x axis in time since the run's first sample, an optional dashed reference line."""
    w, h = 300.0, 172.0
    left, right, top, bottom = 46.0, 12.0, 10.0, 36.0
    pw, ph = w - left - right, h - top - bottom
    pts = thin(xs, ys)
    values = [y for _, y in pts]
    span_x = x_max if x_max is not None else (max(xs) if xs else 0.0)
    if span_x <= 0:
        span_x = 1.0
    div, tunit = _time_axis(span_x)
    x_hi_units = span_x / div
    lo, hi = y_range
    vmin = min(values) if values else 0.0
    vmax = max(values) if values else 1.0
    if ref is not None:
        vmax = max(vmax, ref[0])
    pad = max((vmax - vmin) * 0.15, abs(vmax) * 0.05, 1.0)
    raw_lo = lo if lo is not None else vmin - pad
    raw_hi = hi if hi is not None else vmax + pad
    if raw_hi <= raw_lo:
        raw_hi = raw_lo + 1.0
    ystep = nice_step(raw_hi - raw_lo, 4)
    lo = raw_lo if lo is not None else math.floor(raw_lo / ystep) * ystep
    hi = raw_hi if hi is not None else math.ceil(raw_hi / ystep) * ystep
    yticks = nice_ticks(lo, hi, 4)
    ystep = yticks[1] - yticks[0] if len(yticks) > 1 else ystep

    def px(x_s: float) -> float:
        return left + (x_s / div) / x_hi_units * pw

    def py(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    parts = [
        f'<svg class="chart" viewBox="0 0 {w:.0f} {h:.0f}" width="{w:.0f}" height="{h:.0f}" role="img" '
        f'aria-label="{esc(label)} over time"{data_attrs}>'
    ]
    parts.append(f'<rect class="plot" x="{left}" y="{top}" width="{pw}" height="{ph}"/>')
    for tv in yticks:
        y = py(tv)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 5}" y="{y + 3.5:.1f}" text-anchor="end">{esc(_tick_label(tv, ystep))}</text>')
    xticks = nice_ticks(0.0, x_hi_units, 4)
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
    for tv in xticks:
        x = left + tv / x_hi_units * pw
        parts.append(f'<line class="xtick" x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{top + ph + 15}" text-anchor="middle">{esc(_tick_label(tv, xstep))}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}"/>')
    parts.append(f'<text class="axis-label" x="{left + pw / 2:.1f}" y="{h - 4}" text-anchor="middle">time since start ({tunit})</text>')
    parts.append(
        f'<text class="axis-label" transform="translate(11 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{esc(unit)}</text>'
    )
    if ref is not None and lo <= ref[0] <= hi:
        y = py(ref[0])
        parts.append(f'<line class="ref" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="ref-label" x="{left + pw - 3}" y="{y - 4:.1f}" text-anchor="end">{esc(ref[1])}</text>')
    coords = " ".join(f"{px(x):.1f},{py(min(max(y, lo), hi)):.1f}" for x, y in pts)
    if len(pts) >= 2:
        base = top + ph
        parts.append(
            f'<polygon class="area" fill="{color}" points="{px(pts[0][0]):.1f},{base:.1f} {coords} {px(pts[-1][0]):.1f},{base:.1f}"/>'
        )
    parts.append(f'<polyline class="series" stroke="{color}" points="{coords}"/>')
    if len(pts) <= 40:
        for x, y in pts:
            parts.append(
                f'<circle class="pt" cx="{px(x):.1f}" cy="{py(min(max(y, lo), hi)):.1f}" r="2.6" fill="{color}">'
                f"<title>{esc(fmt_sig(y, 4))} {esc(unit)} at {esc(fmt_sig(x, 3))} s</title></circle>"
            )
    if not pts:
        parts.append(f'<text class="empty" x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" text-anchor="middle">no readings</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- trace waterfalls -------------------------------------------------------------------------
KIND_CLASSES = {
    "AGENT": "agent",
    "CHAIN": "step",
    "LLM": "llm",
    "TOOL": "tool",
    "EMBEDDING": "llm",
    "RETRIEVER": "tool",
    "RERANKER": "tool",
    "GUARDRAIL": "tool",
    "EVALUATOR": "eval",
}
KIND_LEGEND = [
    ("eval", "evaluation"),
    ("agent", "agent run"),
    ("step", "agent step"),
    ("llm", "model call"),
    ("tool", "tool"),
    ("client", "client / other"),
]


def span_class(span: Mapping[str, Any], is_root: bool) -> str:
    attrs = span.get("attributes") if isinstance(span.get("attributes"), Mapping) else {}
    oi = str(attrs.get("openinference.span.kind") or "").upper()
    if oi in KIND_CLASSES:
        return KIND_CLASSES[oi]
    if attrs.get("gen_ai.operation.name") or attrs.get("gen_ai.request.model") or attrs.get("llm.model_name"):
        return "llm"
    if attrs.get("tool.name") or attrs.get("gen_ai.tool.name"):
        return "tool"
    if is_root or span.get("name") == "test_evaluation":
        return "eval"
    kind = str(span.get("kind") or "").upper().replace("SPAN_KIND_", "")
    return "client" if kind in ("CLIENT", "SERVER", "PRODUCER", "CONSUMER") else "internal"


TOOLTIP_ATTRS = [
    ("test.id", "task"),
    ("tool.name", "tool"),
    ("gen_ai.tool.name", "tool"),
    ("llm.model_name", "model"),
    ("gen_ai.request.model", "model"),
    ("llm.token_count.prompt", "prompt tokens"),
    ("llm.token_count.completion", "completion tokens"),
    ("gen_ai.usage.input_tokens", "input tokens"),
    ("gen_ai.usage.output_tokens", "output tokens"),
    ("llm.finish_reason", "finish reason"),
    ("input.value", "input"),
    ("output.value", "output"),
]


def _span_tooltip(span: Mapping[str, Any], cls: str, offset_ms: float, dur_ms: float) -> str:
    status = span.get("status") if isinstance(span.get("status"), Mapping) else {}
    lines = [
        cut(span.get("name"), 120),
        f"{cls} · {span.get('kind') or 'INTERNAL'} · status {status.get('code') or 'UNSET'}",
        f"starts +{fmt_ms(offset_ms)} · lasts {fmt_ms(dur_ms)}",
    ]
    if status.get("description"):
        lines.append("error: " + cut(status["description"], ATTR_CAP))
    attrs = span.get("attributes") if isinstance(span.get("attributes"), Mapping) else {}
    seen = set()
    for key, label in TOOLTIP_ATTRS:
        if key in attrs and label not in seen and attrs[key] not in (None, ""):
            seen.add(label)
            value = attrs[key]
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            lines.append(f"{label}: {cut(' '.join(text.split()), ATTR_CAP)}")
    return "\n".join(lines)


def _span_times(span: Mapping[str, Any]) -> tuple[float, float] | None:
    start = num(span.get("start_time"))
    end = num(span.get("end_time"))
    dur = num(span.get("duration_ms"))
    if start is None:
        dt = parse_iso(span.get("start_time_iso"))
        start = dt.timestamp() * 1e9 if dt else None
    if start is None:
        return None
    if end is None or end < start:
        end = start + (dur or 0.0) * 1e6
    return start, end


def ordered_spans(spans: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """(depth, span) in tree order: parents before children, siblings by start time; spans whose
    parent is not in the document are roots."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for s in spans:
        if s.get("span_id") is not None:
            by_id.setdefault(str(s["span_id"]), s)
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for s in spans:
        parent = s.get("parent_span_id")
        parent = str(parent) if parent is not None and str(parent) in by_id and str(parent) != str(s.get("span_id")) else None
        children.setdefault(parent, []).append(s)

    def start_of(s: Mapping[str, Any]) -> float:
        t = _span_times(s)
        return t[0] if t else float("inf")

    out: list[tuple[int, Mapping[str, Any]]] = []
    visited: set[int] = set()
    stack: list[tuple[int, Mapping[str, Any]]] = [(0, s) for s in sorted(children.get(None, []), key=start_of, reverse=True)]
    while stack:
        depth, s = stack.pop()
        if id(s) in visited:
            continue
        visited.add(id(s))
        out.append((depth, s))
        kids = children.get(str(s.get("span_id")), []) if s.get("span_id") is not None else []
        stack.extend((depth + 1, k) for k in sorted(kids, key=start_of, reverse=True))
    # Cycles (a parent chain that never reaches a root) are not reachable above: list them flat.
    out.extend((0, s) for s in spans if id(s) not in visited)
    return out


def waterfall(doc: Mapping[str, Any], budget: int) -> tuple[str, int]:
    """A trace as a waterfall (HTML grid, CSS-positioned bars); returns (html, spans drawn)."""
    spans = [s for s in doc.get("spans") or [] if isinstance(s, Mapping)]
    if not spans:
        return '<p class="muted">This trace holds no spans.</p>', 0
    ordered = ordered_spans(spans)
    limit = min(MAX_SPANS_PER_TRACE, budget)
    if limit <= 0:
        return f'<p class="note">Waterfall left out to keep the report small ({len(spans):,} spans; see traces.json).</p>', 0
    times = [t for t in (_span_times(s) for s in spans) if t]
    if not times:
        return '<p class="muted">The spans of this trace carry no timestamps.</p>', 0
    t0 = min(t[0] for t in times)
    t1 = max(t[1] for t in times)
    total_ms = max((t1 - t0) / 1e6, 1e-6)
    ticks = nice_ticks(0.0, total_ms, 6)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else total_ms
    tick_pct = step / total_ms * 100
    rows = []
    axis = []
    for tv in ticks:
        pct = tv / total_ms * 100
        align = "start" if pct < 4 else ("end" if pct > 92 else "mid")
        axis.append(f'<span class="wf-tick {align}" style="left:{pct:.2f}%">{esc(_tick_label(tv, step))} ms</span>')
    root_ids = {str(doc.get("root_span_id"))} if doc.get("root_span_id") else set()
    errors: Counter[str] = Counter()
    for s in spans:
        status = s.get("status") if isinstance(s.get("status"), Mapping) else {}
        if str(status.get("code", "")).upper() in ("ERROR", "STATUS_CODE_ERROR", "2"):
            errors[cut(str(status.get("description") or s.get("name") or "error").split("\n")[0], 160)] += 1
    for depth, s in ordered[:limit]:
        t = _span_times(s) or (t0, t0)
        offset = (t[0] - t0) / 1e6
        dur = num(s.get("duration_ms"))
        dur = dur if dur is not None else (t[1] - t[0]) / 1e6
        left = offset / total_ms * 100
        width = max(min((t[1] - t[0]) / 1e6 / total_ms * 100, 100 - left), 0.25)
        status = s.get("status") if isinstance(s.get("status"), Mapping) else {}
        err = str(status.get("code", "")).upper() in ("ERROR", "STATUS_CODE_ERROR", "2")
        cls = span_class(s, depth == 0 and (not root_ids or str(s.get("span_id")) in root_ids))
        tip = _span_tooltip(s, cls, offset, dur)
        mark = ' <b class="err-mark">error</b>' if err else ""
        rows.append(
            f'<div class="wf-row k-{cls}{" err" if err else ""}" title="{esc(tip)}">'
            f'<div class="wf-name" style="padding-left:{6 + min(depth, 14) * 14}px"><i class="dot"></i>'
            f"{esc(cut(s.get('name') or '(unnamed)', 80))}{mark}</div>"
            f'<div class="wf-track"><div class="bar" style="left:{left:.2f}%;width:{width:.2f}%"></div></div>'
            f'<div class="wf-dur">{esc(fmt_ms(dur))}</div></div>'
        )
    parts = [
        f'<div class="wf" style="--tick:{tick_pct:.3f}%">',
        '<div class="wf-head"><div class="wf-name">span</div>',
        f'<div class="wf-track wf-axis">{"".join(axis)}</div><div class="wf-dur">duration</div></div>',
        *rows,
        "</div>",
    ]
    if len(ordered) > limit:
        parts.append(
            f'<p class="note">Showing the first {limit:,} of {len(ordered):,} spans (tree order); the rest are in traces.json.</p>'
        )
    if errors:
        items = "".join(
            f"<li><code>{esc(msg)}</code>{f' <span class=muted>{TIMES} {n}</span>' if n > 1 else ''}</li>"
            for msg, n in errors.most_common(4)
        )
        parts.append(f'<div class="span-errors"><b>{sum(errors.values())} span(s) with errors</b><ul>{items}</ul></div>')
    return "".join(parts), min(limit, len(ordered))


# -- page sections ----------------------------------------------------------------------------
def _status(data: RunData) -> tuple[str, str]:
    """(status word, css class)."""
    status = str(data.metadata.get("status") or "")
    if status == "completed":
        return "completed", "ok"
    if status == "interrupted":
        return "interrupted", "warn"
    if status == "running":
        return "did not finish", "bad"
    if not data.metadata:
        return "unknown", "warn"
    return status or "unknown", "warn"


def _card(label: str, value: str, sub: str = "", extra: str = "", cls: str = "") -> str:
    return (
        f'<div class="card{(" " + cls) if cls else ""}"><div class="card-label">{esc(label)}</div>'
        f'<div class="card-value">{value}</div>{extra}<div class="card-sub">{sub}</div></div>'
    )


def _rate(passed: int, total: int) -> float | None:
    return passed / total * 100 if total else None


def _rate_bar(rate: float | None) -> str:
    width = 0.0 if rate is None else max(min(rate, 100.0), 0.0)
    return f'<div class="meter"><div class="meter-fill" style="width:{width:.1f}%"></div></div>'


def _energy_totals(data: RunData, gpus: Sequence[GpuSeries]) -> tuple[float | None, float | None, float | None]:
    summary = _get(data.metadata, "gpu_metrics", "summary") or {}
    energy = num(summary.get("energy_joules")) if isinstance(summary, Mapping) else None
    co2 = num(summary.get("co2_grams")) if isinstance(summary, Mapping) else None
    cost = num(summary.get("power_cost_usd")) if isinstance(summary, Mapping) else None
    if energy is None and any(g.energy_j is not None for g in gpus):
        energy = sum(g.energy_j or 0.0 for g in gpus)
    if co2 is None and any(g.co2_g is not None for g in gpus):
        co2 = sum(g.co2_g or 0.0 for g in gpus)
    if cost is None and any(g.cost_usd is not None for g in gpus):
        cost = sum(g.cost_usd or 0.0 for g in gpus)
    if energy is None:
        energy = num(data.leaderboard.get("energy_j")) or _sum(data.rows, "energy_j")
    if co2 is None:
        co2 = num(data.leaderboard.get("co2_emissions_g")) or _sum(data.rows, "co2_g")
    return energy, co2, cost


def _gpu_names(data: RunData, gpus: Sequence[GpuSeries]) -> list[str]:
    names = [g.name for g in gpus]
    if not names:
        devices = _get(data.metadata, "gpu_metrics", "devices") or []
        names = [str(d.get("name") or "GPU") for d in devices if isinstance(d, Mapping)] if isinstance(devices, list) else []
    return [f"{n} {TIMES} {name}" if n > 1 else name for name, n in Counter(names).items()]


def _wall_ms(data: RunData) -> float | None:
    start, end = parse_iso(data.metadata.get("started_at")), parse_iso(data.metadata.get("finished_at"))
    if start and end and end >= start:
        return (end - start).total_seconds() * 1000
    starts = [v for v in (num(r.get("start_time_unix_nano")) for r in data.rows) if v]
    ends = [v for v in (num(r.get("end_time_unix_nano")) for r in data.rows) if v]
    if starts and ends:
        return (max(ends) - min(starts)) / 1e6
    return None


def header_section(data: RunData) -> str:
    md = data.metadata
    model = md.get("model") or data.leaderboard.get("model") or next((r.get("model") for r in data.rows if r.get("model")), None)
    status, status_cls = _status(data)
    dataset = md.get("dataset_used") or data.leaderboard.get("dataset_used")
    split = md.get("split")
    chips = [
        ("provider", md.get("provider") or data.leaderboard.get("provider") or next((r.get("provider") for r in data.rows), None)),
        ("agents", md.get("agent_type") or data.leaderboard.get("agent_type")),
        ("dataset", f"{dataset} ({split})" if dataset and split else dataset),
        ("started", fmt_when(md.get("started_at")) if md.get("started_at") else None),
        ("finished", fmt_when(md.get("finished_at")) if md.get("finished_at") else None),
    ]
    chip_html = "".join(f'<span class="chip"><span class="chip-k">{esc(k)}</span> {esc(v)}</span>' for k, v in chips if v)
    run_id = md.get("run_id") or data.leaderboard.get("run_id") or next((r.get("run_id") for r in data.rows if r.get("run_id")), None)
    return (
        '<header class="top"><div class="brand">smoltrace · evaluation report</div>'
        f'<h1>{esc(model or "unknown model")} <span class="status {status_cls}">{esc(status)}</span></h1>'
        f'<div class="chips">{chip_html}</div>'
        f'<div class="runid">run <code>{esc(run_id or "—")}</code> · folder <code>{esc(data.run_dir.name)}</code></div></header>'
    )


def notices_section(data: RunData) -> str:
    md = data.metadata
    notes: list[tuple[str, str]] = []
    status = md.get("status")
    planned = num(md.get("num_planned"))
    done = len(data.rows)
    if status == "interrupted":
        of = f" of {int(planned):,} planned" if planned is not None else ""
        notes.append(("warn", f"The run was interrupted: {done:,}{of} task executions finished. The numbers below cover those only."))
    elif status == "running" or (data.rows_source == CHECKPOINT):
        notes.append(
            (
                "bad",
                f"The run did not finish (it crashed or is still running). {done:,} finished executions were read from "
                f"{CHECKPOINT}; traces and GPU metrics are written only at the end.",
            )
        )
    if not md and not data.rows and not data.traces and not data.metric_rows:
        notes.append(("bad", "No run data found in this folder (no metadata.json, results.json, traces.json or metrics_rows.json)."))
    elif not md:
        notes.append(("warn", "metadata.json is missing or empty: model, dataset and timing details are unknown."))
    gpu_warning = _get(md, "gpu_metrics", "warning")
    if gpu_warning:
        notes.append(("warn", f"GPU metrics: {gpu_warning}"))
    for warning in _get(md, "telemetry", "warnings") or []:
        notes.append(("warn", f"Telemetry: {warning}"))
    if _get(md, "gpu_metrics", "summary", "simulated"):
        notes.append(("info", "GPU readings come from the simulated exporter backend (demo data, not a real GPU)."))
    for problem in data.problems:
        notes.append(("bad", problem))
    if not notes:
        return ""
    items = "".join(f'<div class="notice {cls}">{esc(cut(text, 600))}</div>' for cls, text in notes)
    return f'<section class="notices">{items}</section>'


def summary_section(data: RunData, gpus: Sequence[GpuSeries]) -> str:
    rows = data.rows
    total = len(rows)
    passed = sum(1 for r in rows if r.get("success") is True)
    rate = _rate(passed, total)
    tokens = _sum(rows, "total_tokens")
    prompt_t, completion_t = _sum(rows, "prompt_tokens"), _sum(rows, "completion_tokens")
    cost = _sum(rows, "cost_usd")
    wall = _wall_ms(data)
    task_ms = _sum((dict(r, d=_duration_ms(r)) for r in rows), "d")
    timings = data.metadata.get("timings") if isinstance(data.metadata.get("timings"), Mapping) else {}
    energy, co2, power_cost = _energy_totals(data, gpus)
    gpu_enabled = _get(data.metadata, "gpu_metrics", "enabled")
    gpu_available = _get(data.metadata, "gpu_metrics", "gpu_available")
    names = _gpu_names(data, gpus)
    planned = num(data.metadata.get("num_planned"))

    sub_tasks = f"{passed:,} of {total:,} passed"
    token_sub = []
    if prompt_t is not None or completion_t is not None:
        token_sub.append(f"{fmt_int(prompt_t)} prompt · {fmt_int(completion_t)} completion")
    if tokens is not None and total:
        token_sub.append(f"{fmt_int(tokens / total)} per task")
    duration_sub = []
    if num(timings.get("active_s")) is not None:
        duration_sub.append(f"active {fmt_ms(num(timings.get('active_s')) * 1000)}")  # type: ignore[operator]
    if num(timings.get("startup_s")) is not None:
        duration_sub.append(f"start-up {fmt_ms(num(timings.get('startup_s')) * 1000)}")  # type: ignore[operator]
    if task_ms is not None:
        duration_sub.append(f"Σ tasks {fmt_ms(task_ms)}")
    if gpu_enabled is False or (gpu_enabled is None and not gpus and energy is None):
        why = _get(data.metadata, "gpu_metrics", "reason")
        off = "GPU metrics off" + (f": {why}" if why else "")
        energy_card = _card("Energy", "—", esc(cut(off, 120)))
        co2_card = _card("CO₂", "—", esc("GPU metrics off" if gpu_enabled is False else "not measured"))
    elif energy is None and co2 is None:
        why = "no GPU was visible" if gpu_available is False else "no energy reading"
        energy_card = _card("Energy", "—", esc(why))
        co2_card = _card("CO₂", "—", esc(why))
    else:
        energy_card = _card(
            "Energy",
            esc(fmt_energy(energy)),
            esc(fmt_wh(energy) + (f" · power cost {fmt_usd(power_cost)}" if power_cost is not None else "")),
        )
        intensity = num(_get(data.metadata, "gpu_metrics", "summary", "carbon_intensity_g_per_kwh"))
        pue = num(_get(data.metadata, "gpu_metrics", "summary", "pue"))
        co2_sub = " · ".join(
            x for x in (f"{fmt_sig(intensity, 3)} gCO₂e/kWh" if intensity else "", f"PUE {fmt_sig(pue, 3)}" if pue else "") if x
        )
        co2_card = _card("CO₂", esc(fmt_co2(co2)), esc(co2_sub or "gCO₂e"))
    if names:
        method = _get(data.metadata, "gpu_metrics", "summary", "energy_method")
        gpu_card = _card("GPUs", esc(", ".join(names)), esc(f"energy by {method}" if method else f"{len(gpus)} sampled"), cls="wide-text")
    elif gpu_enabled and gpu_available is False:
        gpu_card = _card("GPUs", "none", "metrics on, but no GPU was visible")
    else:
        gpu_card = _card("GPUs", "—", "not measured")

    by_agent: dict[str, list[bool]] = {}
    for r in rows:
        by_agent.setdefault(str(r.get("agent_type") or "unknown"), []).append(r.get("success") is True)
    rate_sub = " · ".join(f"{k} {fmt_pct(_rate(sum(v), len(v)))}" for k, v in by_agent.items()) if len(by_agent) > 1 else sub_tasks
    steps = _sum(rows, "steps")
    task_sub = [f"{passed:,} passed · {total - passed:,} failed"]
    if planned is not None and planned != total:
        task_sub.append(f"{int(planned):,} planned")
    if steps is not None and total:
        task_sub.append(f"{fmt_sig(steps / total, 3)} steps avg")
    cards = [
        _card("Pass rate", esc(fmt_pct(rate)), esc(rate_sub), _rate_bar(rate), cls="accent"),
        _card("Tasks", esc(f"{total:,}"), esc(" · ".join(task_sub))),
        _card("Tokens", esc(fmt_int(tokens)), esc(" · ".join(token_sub))),
        _card("Cost", esc(fmt_usd(cost)), esc(f"{fmt_usd(cost / total)} per task" if cost is not None and total else "model API cost")),
        _card("Duration", esc(fmt_ms(wall)), esc(" · ".join(duration_sub) or "wall clock")),
        energy_card,
        co2_card,
        gpu_card,
    ]
    return f'<section class="cards">{"".join(cards)}</section>' + breakdown_section(rows)


def _breakdown_table(title: str, groups: Mapping[str, list[Mapping[str, Any]]], labels: Mapping[str, str] | None = None) -> str:
    body = []
    for key, items in groups.items():
        passed = sum(1 for r in items if r.get("success") is True)
        rate = _rate(passed, len(items))
        label = (labels or {}).get(key)
        name = f"{esc(label)} <span class=muted>({esc(key)})</span>" if label else esc(key)
        body.append(
            f"<tr><td>{name}</td><td class=num>{passed:,} / {len(items):,}</td>"
            f'<td><div class="rate">{_rate_bar(rate)}<span class="rate-num">{esc(fmt_pct(rate))}</span></div></td></tr>'
        )
    return (
        f'<div class="panel"><h3>{esc(title)}</h3><table class="mini"><thead><tr><th></th><th class=num>passed</th>'
        f"<th>pass rate</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def breakdown_section(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    by_agent: dict[str, list[Mapping[str, Any]]] = {}
    by_difficulty: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_agent.setdefault(str(r.get("agent_type") or "unknown"), []).append(r)
        by_difficulty.setdefault(str(r.get("difficulty") or "unspecified"), []).append(r)
    panels = [_breakdown_table("By agent type", by_agent, AGENT_LABELS)]
    order = {"easy": 0, "medium": 1, "hard": 2}
    panels.append(_breakdown_table("By difficulty", dict(sorted(by_difficulty.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))))
    failures = Counter(
        str(r.get("error_type") or ("error" if r.get("error") else "wrong answer")) for r in rows if r.get("success") is not True
    )
    if failures:
        items = "".join(f"<tr><td>{esc(k)}</td><td class=num>{n:,}</td></tr>" for k, n in failures.most_common(8))
        panels.append(f'<div class="panel"><h3>Failures by type</h3><table class="mini"><tbody>{items}</tbody></table></div>')
    else:
        panels.append('<div class="panel"><h3>Failures by type</h3><p class="muted">No failures.</p></div>')
    return f'<section class="panels">{"".join(panels)}</section>'


def _outcome_cell(row: Mapping[str, Any]) -> str:
    parts = []
    if row.get("success") is True:
        if row.get("response") not in (None, ""):
            parts.append(f'<div class="answer">→ {esc(cut(row.get("response"), 240))}</div>')
    else:
        if row.get("failure_reason"):
            parts.append(f'<div class="reason">{esc(cut(row.get("failure_reason"), TEXT_CAP))}</div>')
        if row.get("error"):
            parts.append(f'<div class="error"><code>{esc(cut(row.get("error"), TEXT_CAP))}</code></div>')
        if row.get("response") not in (None, ""):
            parts.append(f'<div class="answer muted">answered: {esc(cut(row.get("response"), 160))}</div>')
        if not parts:
            parts.append('<div class="reason">failed (no reason recorded)</div>')
        if row.get("error_type"):
            parts.insert(0, f'<span class="tag">{esc(row.get("error_type"))}</span>')
    return "".join(parts)


def tasks_section(data: RunData, trace_anchor: Mapping[int, str]) -> str:
    rows = data.rows
    if not rows:
        return '<section><h2>Tasks</h2><p class="empty-state">No task executions were recorded for this run.</p></section>'
    has_energy = any(num(r.get("energy_j")) is not None for r in rows)
    head = [
        ("#", "num"),
        ("result", "str"),
        ("task", "str"),
        ("agent", "str"),
        ("difficulty", "str"),
        ("answer / why it failed", ""),
        ("tools used", "str"),
        ("steps", "num"),
        ("duration", "num"),
        ("tokens", "num"),
    ]
    if has_energy:
        head.append(("energy", "num"))
    ths = "".join(
        f"<th{f' data-sort={kind}' if kind else ''}{' class=num' if kind == 'num' else ''}>{esc(label)}</th>" for label, kind in head
    )
    body = []
    for i, r in enumerate(rows):
        ok = r.get("success") is True
        result = '<span class="pill pass">pass</span>' if ok else '<span class="pill fail">fail</span>'
        task_id = esc(cut(r.get("task_id") or r.get("test_case_uid") or "?", 120))
        anchor = trace_anchor.get(i)
        task_html = f'<a href="#{anchor}" class="task-id">{task_id}</a>' if anchor else f'<span class="task-id">{task_id}</span>'
        prompt = r.get("prompt")
        if prompt:
            task_html += f'<div class="prompt" title="{esc(cut(prompt, 1000))}">{esc(cut(prompt, 140))}</div>'
        tools = r.get("tools_used") if isinstance(r.get("tools_used"), list) else []
        tools_html = " ".join(f'<span class="tool">{esc(cut(t, 60))}</span>' for t in tools[:12]) or '<span class="muted">none</span>'
        if len(tools) > 12:
            tools_html += f' <span class="muted">+{len(tools) - 12}</span>'
        steps, dur, tokens, energy = num(r.get("steps")), _duration_ms(r), num(r.get("total_tokens")), num(r.get("energy_j"))
        cells = [
            f'<td class=num data-v="{i}">{i + 1}</td>',
            f'<td data-v="{1 if ok else 0}">{result}</td>',
            f'<td data-v="{esc(r.get("task_id") or "")}">{task_html}</td>',
            f"<td>{esc(r.get('agent_type') or '—')}</td>",
            f"<td>{esc(r.get('difficulty') or '—')}</td>",
            f'<td class="outcome">{_outcome_cell(r)}</td>',
            f'<td data-v="{esc(",".join(map(str, tools)))}">{tools_html}</td>',
            f'<td class=num data-v="{"" if steps is None else steps}">{esc(fmt_int(steps))}</td>',
            f'<td class=num data-v="{"" if dur is None else dur}">{esc(fmt_ms(dur))}</td>',
            f'<td class=num data-v="{"" if tokens is None else tokens}">{esc(fmt_int(tokens))}</td>',
        ]
        if has_energy:
            cells.append(f'<td class=num data-v="{"" if energy is None else energy}">{esc(fmt_energy(energy))}</td>')
        body.append(f'<tr class="{"ok" if ok else "ko"}">{"".join(cells)}</tr>')
    return (
        f'<section><h2>Tasks <span class="count">{len(rows):,}</span></h2>'
        '<p class="hint">Click a column header to sort; a task id opens its trace.</p>'
        f'<div class="table-wrap"><table class="tasks sortable"><thead><tr>{ths}</tr></thead><tbody>{"".join(body)}</tbody></table></div></section>'
    )


def _match_traces(data: RunData) -> tuple[dict[int, Mapping[str, Any]], list[Mapping[str, Any]]]:
    by_trace = {str(t.get("trace_id")): t for t in data.traces if t.get("trace_id")}
    by_uid: dict[str, Mapping[str, Any]] = {}
    for t in data.traces:
        for uid in t.get("test_case_uids") or []:
            by_uid.setdefault(str(uid), t)
    matched: dict[int, Mapping[str, Any]] = {}
    used: set[int] = set()
    for i, r in enumerate(data.rows):
        doc = by_trace.get(str(r.get("trace_id"))) or by_uid.get(str(r.get("test_case_uid")))
        if doc is not None and id(doc) not in used:
            matched[i] = doc
            used.add(id(doc))
    unmatched = [t for t in data.traces if id(t) not in used]
    return matched, unmatched


def traces_section(data: RunData, matched: Mapping[int, Mapping[str, Any]], unmatched: Sequence[Mapping[str, Any]]) -> str:
    otel = _get(data.metadata, "otel", "enabled")
    if not data.traces:
        if otel is False or (otel is None and not _get(data.metadata, "telemetry", "tracing")):
            why = "Tracing was off for this run (run with --enable-otel to record spans)."
        else:
            why = "No spans were received for this run."
        return f'<section><h2>Traces</h2><p class="empty-state">{esc(why)}</p></section>'
    legend = "".join(f'<span class="legend-item k-{cls}"><i class="dot"></i>{esc(label)}</span>' for cls, label in KIND_LEGEND)
    budget = MAX_SPANS_TOTAL
    blocks = []
    first = True
    entries: list[tuple[str, Mapping[str, Any] | None, Mapping[str, Any]]] = [
        (f"trace-{i + 1}", data.rows[i], doc) for i, doc in sorted(matched.items())
    ]
    entries += [(f"trace-x{j + 1}", None, doc) for j, doc in enumerate(unmatched)]
    for anchor, row, doc in entries:
        body, drawn = waterfall(doc, budget)
        budget -= drawn
        spans = doc.get("spans") or []
        if row is not None:
            ok = row.get("success") is True
            pill = '<span class="pill pass">pass</span>' if ok else '<span class="pill fail">fail</span>'
            title = esc(cut(row.get("task_id") or row.get("test_case_uid") or "?", 120))
            agent = esc(row.get("agent_type") or doc.get("agent_type") or "")
        else:
            pill = '<span class="pill none">trace</span>'
            ids = doc.get("test_ids") or []
            title = esc(cut(", ".join(map(str, ids)) or "trace without a task row", 120))
            agent = esc(doc.get("agent_type") or "")
        dur = num(doc.get("total_duration_ms"))
        if dur is None:
            times = [t for t in (_span_times(s) for s in spans if isinstance(s, Mapping)) if t]
            dur = (max(t[1] for t in times) - min(t[0] for t in times)) / 1e6 if times else None
        meta = [agent, f"{len(spans):,} spans", fmt_ms(dur)]
        if num(doc.get("total_tokens")):
            meta.append(f"{fmt_int(doc.get('total_tokens'))} tokens")
        if num(doc.get("model_calls")):
            meta.append(f"{fmt_int(doc.get('model_calls'))} model calls")
        if doc.get("incomplete"):
            meta.append("incomplete")
        meta_html = " · ".join(esc(m) for m in meta if m)
        blocks.append(
            f'<details class="trace" id="{anchor}"{" open" if first else ""}><summary>{pill}<span class="trace-title">{title}</span>'
            f'<span class="trace-meta">{meta_html}</span><code class="trace-id">{esc(doc.get("trace_id") or "")}</code></summary>'
            f'<div class="trace-body">{body}</div></details>'
        )
        first = False
    missing = len(data.rows) - len(matched)
    note = f'<p class="hint">{missing:,} task execution(s) have no trace.</p>' if missing > 0 else ""
    return (
        f'<section><h2>Traces <span class="count">{len(data.traces):,}</span></h2>'
        f'<div class="legend">{legend}<span class="legend-item err-legend"><i class="dot"></i>error status</span></div>'
        f"{note}{''.join(blocks)}</section>"
    )


GPU_METRICS = [
    ("util", "Utilisation", "%", "#6366f1"),
    ("mem", "Memory used", "GiB", "#0ea5e9"),
    ("temp", "Temperature", "°C", "#f97316"),
    ("power", "Power", "W", "#e11d48"),
]


def _stat_line(values: Sequence[float | None], unit: str, scale: float = 1.0) -> str:
    vs = [v * scale for v in values if v is not None]
    if not vs:
        return "no readings"
    return f"avg {fmt_sig(sum(vs) / len(vs), 3)} · max {fmt_sig(max(vs), 3)} {unit}"


def gpu_section(data: RunData, gpus: Sequence[GpuSeries]) -> str:
    gm = data.metadata.get("gpu_metrics") if isinstance(data.metadata.get("gpu_metrics"), Mapping) else {}
    if not gpus:
        if gm.get("enabled") is False:
            why = "GPU metrics were off for this run" + (f" ({gm.get('reason')})." if gm.get("reason") else ".")
        elif gm.get("enabled") and gm.get("gpu_available") is False:
            why = "GPU metrics were on, but the exporter saw no GPU."
        elif gm.get("enabled"):
            why = "GPU metrics were on, but no samples were recorded."
        else:
            why = "No GPU metrics were recorded for this run."
        return f'<section><h2>GPU</h2><p class="empty-state">{esc(why)}</p></section>'
    energy, co2, cost = _energy_totals(data, gpus)
    x_max = max((g.t[-1] for g in gpus if g.t), default=0.0)
    totals = [
        ("energy", fmt_energy(energy), fmt_wh(energy)),
        ("CO₂", fmt_co2(co2), "gCO₂e"),
        ("power cost", fmt_usd(cost), "at the configured price") if cost is not None else None,
        ("samples", fmt_int(sum(len(g.t) for g in gpus)), f"{len(gpus)} GPU(s)"),
    ]
    totals_html = "".join(
        f'<div class="total"><span class="total-k">{esc(k)}</span><span class="total-v">{esc(v)}</span><span class="total-s">{esc(s)}</span></div>'
        for item in totals
        if item
        for k, v, s in [item]
    )
    blocks = []
    for g in gpus:
        charts = []
        for key, label, unit, color in GPU_METRICS:
            ys: list[float | None] = list(getattr(g, key))
            ref = None
            y_range: tuple[float | None, float | None] = (None, None)
            stat = _stat_line(ys, unit)
            if key == "util":
                y_range = (0.0, 100.0)
            elif key == "mem":
                ys = [None if v is None else v / 1024 for v in ys]
                stat = _stat_line(ys, unit)
                total_gib = g.mem_total / 1024 if g.mem_total else None
                ref = (total_gib, f"total {fmt_sig(total_gib, 3)} GiB") if total_gib else None
                y_range = (0.0, None)
            elif key == "power":
                y_range = (0.0, None)
            attrs = f' data-gpu="{esc(g.gpu_id)}" data-metric="{key}"'
            svg = line_chart(
                g.t, ys, label=f"GPU {g.gpu_id} {label}", unit=unit, color=color, x_max=x_max, y_range=y_range, ref=ref, data_attrs=attrs
            )
            charts.append(
                f'<figure class="chart-box"><figcaption><span class="chart-title"><i class="swatch" style="background:{color}"></i>{esc(label)}'
                f' <span class="unit">({esc(unit)})</span></span><span class="chart-stat">{esc(stat)}</span></figcaption>{svg}</figure>'
            )
        facts = [f"energy {fmt_energy(g.energy_j)}", f"CO₂ {fmt_co2(g.co2_g)}"]
        if g.mem_total:
            facts.append(f"memory {fmt_mib(g.mem_total)}")
        facts.append(f"{len(g.t):,} samples")
        blocks.append(
            f'<div class="gpu"><div class="gpu-head"><h3>GPU {esc(g.gpu_id)} <span class="gpu-name">{esc(g.name)}</span></h3>'
            f'<span class="gpu-facts">{esc(" · ".join(facts))}</span></div><div class="charts">{"".join(charts)}</div></div>'
        )
    return f'<section><h2>GPU</h2><div class="totals">{totals_html}</div>{"".join(blocks)}</section>'


def environment_section(data: RunData) -> str:
    md = data.metadata
    rows: list[tuple[str, str]] = []
    for key in ("run_id", "dataset_used", "dataset_revision", "dataset_sha256", "split", "num_tasks_in_dataset", "seed"):
        if md.get(key) not in (None, ""):
            rows.append((key, str(md[key])))
    cfg = md.get("config") if isinstance(md.get("config"), Mapping) else {}
    for key in ("max_steps", "parallel_workers", "limit", "difficulty", "task_timeout", "max_retries"):
        if cfg.get(key) not in (None, "", []):
            rows.append((key, str(cfg[key])))
    versions = md.get("versions") if isinstance(md.get("versions"), Mapping) else {}
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    git = md.get("git") if isinstance(md.get("git"), Mapping) else {}
    if git.get("sha"):
        rows.append(("git", f"{git['sha']}{' (dirty)' if git.get('dirty') else ''}"))
    plat = md.get("platform") if isinstance(md.get("platform"), Mapping) else {}
    if plat:
        rows.append(("platform", " / ".join(str(v) for v in plat.values())))
    gm = md.get("gpu_metrics") if isinstance(md.get("gpu_metrics"), Mapping) else {}
    if gm.get("reason"):
        rows.append(("gpu metrics", str(gm["reason"])))
    otel = _get(md, "otel", "console")
    if otel:
        rows.append(("otel", str(otel)))
    if not rows:
        return ""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(cut(v, 600))}</td></tr>" for k, v in rows)
    return f'<section><details class="env"><summary>Run details</summary><table class="kv">{body}</table></details></section>'


# -- the page ---------------------------------------------------------------------------------
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

CSS = """
:root{--fg:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f6f7fb;--card:#fff;--pass:#15803d;--pass-bg:#dcfce7;--fail:#b91c1c;--fail-bg:#fee2e2;
--accent:#4f46e5;--eval:#64748b;--agent:#6366f1;--step:#38bdf8;--llm:#f59e0b;--tool:#10b981;--client:#a855f7;--internal:#94a3b8}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","Liberation Sans",Arial,sans-serif}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono","DejaVu Sans Mono",monospace;font-size:12px}
main{max-width:1240px;margin:0 auto;padding:28px 28px 48px}
h1{font-size:26px;margin:2px 0 10px;letter-spacing:-.01em;display:flex;align-items:center;gap:12px;flex-wrap:wrap;word-break:break-all}
h2{font-size:18px;margin:34px 0 12px;display:flex;align-items:center;gap:8px}
h3{font-size:14px;margin:0 0 8px}
.count{font-size:12px;font-weight:600;color:var(--muted);background:#e9edf5;border-radius:10px;padding:1px 8px}
.top{border-bottom:1px solid var(--line);padding-bottom:16px}
.brand{font-size:12px;text-transform:uppercase;letter-spacing:.08em;color:var(--accent);font-weight:700}
.status{font-size:12px;font-weight:600;border-radius:999px;padding:2px 10px;letter-spacing:.02em}
.status.ok{background:var(--pass-bg);color:var(--pass)}.status.warn{background:#fef3c7;color:#92400e}.status.bad{background:var(--fail-bg);color:var(--fail)}
.chips{display:flex;flex-wrap:wrap;gap:6px}
.chip{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:3px 9px;font-size:13px;word-break:break-word}
.chip-k{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.05em;margin-right:2px}
.runid{margin-top:10px;color:var(--muted);font-size:12px;word-break:break-all}
.notices{margin-top:16px;display:grid;gap:8px}
.notice{border-radius:8px;padding:9px 12px;font-size:13px;border:1px solid}
.notice.info{background:#eef2ff;border-color:#c7d2fe;color:#3730a3}.notice.warn{background:#fffbeb;border-color:#fde68a;color:#92400e}
.notice.bad{background:#fef2f2;border-color:#fecaca;color:#991b1b}
.cards{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:12px;margin-top:20px}
@media (max-width:900px){.cards{grid-template-columns:repeat(2,minmax(0,1fr))}}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;min-width:0}
.card.accent{border-top:3px solid var(--accent)}
.card-label{font-size:11px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted);font-weight:600}
.card-value{font-size:26px;font-weight:700;margin:4px 0 2px;font-variant-numeric:tabular-nums;letter-spacing:-.01em;overflow-wrap:anywhere}
.card.wide-text .card-value{font-size:17px;line-height:1.3;margin:8px 0 6px}
.card-sub{font-size:12px;color:var(--muted);overflow-wrap:anywhere}
.meter{height:6px;background:#e9edf5;border-radius:3px;overflow:hidden;margin:6px 0 6px}
.meter-fill{height:100%;background:linear-gradient(90deg,#22c55e,#16a34a);border-radius:3px}
.panels{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:12px;margin-top:12px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
table{border-collapse:collapse;width:100%}
.mini td,.mini th{padding:5px 6px;border-bottom:1px solid #f1f5f9;font-size:13px;text-align:left}
.mini th{font-size:11px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.05em}
.mini tr:last-child td{border-bottom:0}
.rate{display:flex;align-items:center;gap:8px;min-width:110px}.rate .meter{flex:1;margin:0}
.mini td:first-child{white-space:nowrap}
.rate-num{font-variant-numeric:tabular-nums;min-width:44px;text-align:right;font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.muted{color:var(--muted)}.hint{color:var(--muted);font-size:12px;margin:-6px 0 10px}
.empty-state{background:var(--card);border:1px dashed #cbd5e1;border-radius:10px;padding:18px;color:var(--muted);text-align:center}
.table-wrap{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow-x:auto}
.tasks th{position:sticky;top:0;background:#f8fafc;font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);text-align:left;padding:9px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
.tasks th[data-sort]{cursor:pointer;user-select:none}
.tasks th[data-sort]:hover{color:var(--fg)}
.tasks th[aria-sort=ascending]::after{content:" ▲";font-size:9px}.tasks th[aria-sort=descending]::after{content:" ▼";font-size:9px}
.tasks td{padding:9px 10px;border-bottom:1px solid #f1f5f9;vertical-align:top;font-size:13px}
.tasks tbody tr:last-child td{border-bottom:0}
.tasks tbody tr:hover{background:#fafbff}
.tasks tr.ko{box-shadow:inset 3px 0 0 #f87171}.tasks tr.ok{box-shadow:inset 3px 0 0 #4ade80}
.task-id{font-weight:600;color:var(--fg);text-decoration:none;word-break:break-word}a.task-id:hover{color:var(--accent);text-decoration:underline}
.prompt{color:var(--muted);font-size:12px;margin-top:2px;max-width:300px;overflow-wrap:anywhere}
.tasks td:nth-child(3){min-width:210px}
.outcome{max-width:380px;overflow-wrap:anywhere}
.reason{color:#7f1d1d}.error code{color:var(--fail);background:#fef2f2;border-radius:4px;padding:1px 4px;display:inline-block;margin-top:3px;white-space:pre-wrap;overflow-wrap:anywhere}
.answer{color:#334155}
.pill{display:inline-block;font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.05em;border-radius:999px;padding:2px 9px}
.pill.pass{background:var(--pass-bg);color:var(--pass)}.pill.fail{background:var(--fail-bg);color:var(--fail)}.pill.none{background:#e2e8f0;color:#334155}
.tag{display:inline-block;font-size:11px;font-weight:600;background:#fef3c7;color:#92400e;border-radius:4px;padding:0 6px;margin-bottom:3px}
.tool{display:inline-block;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:11.5px;background:#ecfdf5;color:#065f46;border:1px solid #a7f3d0;border-radius:4px;padding:0 5px;margin:1px 0}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:0 0 12px;font-size:12px;color:var(--muted)}
.legend-item{display:inline-flex;align-items:center;gap:5px}
.dot{display:inline-block;width:9px;height:9px;border-radius:2px;background:var(--internal);flex:none}
.k-eval .dot,.k-eval .bar{background:var(--eval)}.k-agent .dot,.k-agent .bar{background:var(--agent)}.k-step .dot,.k-step .bar{background:var(--step)}
.k-llm .dot,.k-llm .bar{background:var(--llm)}.k-tool .dot,.k-tool .bar{background:var(--tool)}.k-client .dot,.k-client .bar{background:var(--client)}
.err-legend .dot{background:#fff;border:2px solid #dc2626}
details.trace{background:var(--card);border:1px solid var(--line);border-radius:10px;margin-bottom:8px}
details.trace>summary{cursor:pointer;padding:10px 14px;display:flex;align-items:center;gap:10px;flex-wrap:wrap;list-style:none}
details.trace>summary::-webkit-details-marker{display:none}
details.trace>summary::before{content:"▸";color:var(--muted);font-size:12px;transition:transform .15s}
details.trace[open]>summary::before{transform:rotate(90deg)}
details.trace[open]>summary{border-bottom:1px solid var(--line)}
.trace-title{font-weight:600;word-break:break-word}.trace-meta{color:var(--muted);font-size:12px}
.trace-id{margin-left:auto;color:#94a3b8;font-size:11px}
.trace-body{padding:10px 14px 14px}
.wf{font-size:12px}
.wf-head,.wf-row{display:grid;grid-template-columns:minmax(170px,30%) 1fr 78px;align-items:center}
.wf-head{color:var(--muted);font-size:11px;border-bottom:1px solid var(--line);padding-bottom:4px;margin-bottom:2px}
.wf-row{min-height:22px}
.wf-row:hover{background:#f8fafc}
.wf-name{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;display:flex;align-items:center;gap:6px;padding-right:8px}
.wf-track{position:relative;height:22px;background-image:repeating-linear-gradient(to right,#eef1f6 0 1px,transparent 1px var(--tick))}
.wf-axis{background:none;height:16px}
.wf-tick{position:absolute;top:0;white-space:nowrap;font-variant-numeric:tabular-nums}
.wf-tick.mid{transform:translateX(-50%)}.wf-tick.end{transform:translateX(-100%)}
.bar{position:absolute;top:5px;height:12px;border-radius:3px;min-width:2px;opacity:.92}
.wf-row.err .bar{background-image:repeating-linear-gradient(135deg,rgba(220,38,38,.55) 0 3px,transparent 3px 6px);box-shadow:0 0 0 1.5px #dc2626}
.err-mark{font-size:10px;color:#fff;background:#dc2626;border-radius:3px;padding:0 4px;font-weight:600}
.wf-dur{text-align:right;color:#475569;font-variant-numeric:tabular-nums}
.note{color:#92400e;font-size:12px;margin:8px 0 0}
.span-errors{margin-top:10px;font-size:12px;background:#fef2f2;border:1px solid #fecaca;border-radius:8px;padding:8px 12px;color:#7f1d1d}
.span-errors ul{margin:4px 0 0;padding-left:18px}.span-errors code{white-space:pre-wrap;overflow-wrap:anywhere}
.totals{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:12px}
.total{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 16px;display:flex;flex-direction:column;min-width:150px}
.total-k{font-size:11px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted);font-weight:600}
.total-v{font-size:20px;font-weight:700;font-variant-numeric:tabular-nums}.total-s{font-size:12px;color:var(--muted)}
.gpu{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin-bottom:12px}
.gpu-head{display:flex;align-items:baseline;justify-content:space-between;gap:12px;flex-wrap:wrap;margin-bottom:8px}
.gpu-head h3{margin:0;font-size:15px}.gpu-name{font-weight:500;color:#334155;margin-left:4px}
.gpu-facts{color:var(--muted);font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px 16px}
.chart-box{margin:0;min-width:0}
.chart-box figcaption{display:flex;flex-direction:column;font-size:12px;margin-bottom:4px;padding-left:4px}
.chart-title{font-weight:600;display:inline-flex;align-items:center;gap:6px}.unit{color:var(--muted);font-weight:400}
.swatch{display:inline-block;width:10px;height:3px;border-radius:2px}
.chart-stat{color:var(--muted);font-variant-numeric:tabular-nums;font-size:11.5px}
svg.chart{display:block;width:100%;height:auto;overflow:visible}
svg.chart .plot{fill:#fbfcfe}
svg.chart .grid{stroke:#e8ecf3;stroke-width:1}
svg.chart .axis{stroke:#94a3b8;stroke-width:1}svg.chart .xtick{stroke:#94a3b8}
svg.chart .tick{fill:#64748b;font-size:10px;font-variant-numeric:tabular-nums}
svg.chart .axis-label{fill:#64748b;font-size:10px}
svg.chart .series{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg.chart .area{opacity:.1}
svg.chart .ref{stroke:#94a3b8;stroke-dasharray:4 3}svg.chart .ref-label{fill:#64748b;font-size:9.5px}
svg.chart .empty{fill:#94a3b8;font-size:11px}
details.env{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 14px}
details.env summary{cursor:pointer;font-weight:600}
.kv{margin-top:8px}.kv th{text-align:left;color:var(--muted);font-weight:500;padding:4px 12px 4px 0;white-space:nowrap;vertical-align:top;font-size:12px}
.kv td{padding:4px 0;font-size:12px;overflow-wrap:anywhere}
footer{margin-top:36px;color:#94a3b8;font-size:12px;text-align:center}
@media print{body{background:#fff}details.trace{break-inside:avoid}.table-wrap{overflow:visible}}
"""

JS = """
(function(){
  function key(td,type){var v=td.getAttribute('data-v');if(v===null)v=td.textContent;
    if(type==='num'){var n=parseFloat(v);return isNaN(n)?-Infinity:n;}return v.toLowerCase();}
  function sortBy(th){
    var table=th.closest('table'),tbody=table.tBodies[0];
    var idx=Array.prototype.indexOf.call(th.parentNode.children,th),type=th.getAttribute('data-sort');
    var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
    Array.prototype.forEach.call(th.parentNode.children,function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',dir===1?'ascending':'descending');
    var rows=Array.prototype.slice.call(tbody.rows);
    rows.sort(function(a,b){var x=key(a.cells[idx],type),y=key(b.cells[idx],type);return (x<y?-1:x>y?1:0)*dir;});
    rows.forEach(function(r){tbody.appendChild(r);});
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable th[data-sort]'),function(th){
    th.tabIndex=0;
    th.addEventListener('click',function(){sortBy(th);});
    th.addEventListener('keydown',function(e){if(e.key==='Enter'||e.key===' '){e.preventDefault();sortBy(th);}});
  });
  function openHash(){var id=decodeURIComponent(location.hash.slice(1));if(!id)return;
    var el=document.getElementById(id);if(el&&el.tagName==='DETAILS'){el.open=true;}}
  window.addEventListener('hashchange',openHash);openHash();
})();
"""


def render_report(run_dir: Path) -> str:
    """The report of the run in `run_dir` as one self-contained HTML document."""
    data = load_run(Path(run_dir))
    gpus = gpu_series(data)
    matched, unmatched = _match_traces(data)
    anchors = {i: f"trace-{i + 1}" for i in matched}
    model = data.metadata.get("model") or data.leaderboard.get("model") or "run"
    version = _get(data.metadata, "versions", "smoltrace")
    footer = f"smoltrace {version} · " if version else "smoltrace · "
    footer += f"report of {data.run_dir.name}"
    if data.metadata.get("finished_at"):
        footer += f" · run finished {fmt_when(data.metadata.get('finished_at'))}"
    page = "".join(
        [
            "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name=viewport content="width=device-width,initial-scale=1">',
            "<meta name=color-scheme content=light>",
            '<meta name=referrer content="no-referrer">',
            '<link rel=icon href="data:,">',
            f"<title>{esc(cut(model, 120))} · smoltrace report</title>",
            f"<style>{CSS}</style></head><body><main>",
            header_section(data),
            notices_section(data),
            summary_section(data, gpus),
            tasks_section(data, anchors),
            traces_section(data, matched, unmatched),
            gpu_section(data, gpus),
            environment_section(data),
            f"<footer>{esc(footer)}</footer>",
            f"</main><script>{JS}</script></body></html>\n",
        ]
    )
    # Lone surrogates from odd JSON would make the file unwritable: replace them.
    return page.encode("utf-8", "replace").decode("utf-8")


def write_report(run_dir: Path) -> Path:
    """Render the report and write `<run_dir>/report.html` atomically (temp file, fsync, rename)."""
    run_dir = Path(run_dir)
    text = render_report(run_dir)
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


if __name__ == "__main__":
    raise SystemExit(main())
