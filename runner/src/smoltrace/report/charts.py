"""Charts as view models: the numbers (ticks, coordinates, labels) are computed here and the
`charts.html.j2` macros turn them into inline SVG. A time-series line chart for the GPU panels and a
scatter chart with a Pareto front line for the leaderboard."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .formatting import fmt_sig

MAX_CHART_POINTS = 600


def nice_step(span: float, target: int = 5) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(target, 1)
    base = 10.0 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * base:
            return mult * base
    return 10 * base


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    step = nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    ticks: list[float] = []
    v = first
    while v <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(v, 10))
        v += step
    return ticks


def tick_label(value: float, step: float) -> str:
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


def time_axis(span_s: float) -> tuple[float, str]:
    """(divisor from seconds, unit) for an x axis covering span_s seconds."""
    if span_s < 2:
        return 1e-3, "ms"
    if span_s <= 300:
        return 1.0, "s"
    if span_s <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


@dataclass
class Tick:
    pos: str  # pixel coordinate along the axis, formatted
    label: str


@dataclass
class Marker:
    x: str
    y: str
    title: str
    cls: str = ""


@dataclass
class Frame:
    """The plot area of a chart: SVG size, margins, ticks and axis labels."""

    width: float
    height: float
    left: float
    top: float
    plot_w: float
    plot_h: float
    label: str
    x_label: str
    y_label: str
    yticks: list[Tick] = field(default_factory=list)
    xticks: list[Tick] = field(default_factory=list)

    @property
    def right_x(self) -> float:
        return self.left + self.plot_w

    @property
    def bottom_y(self) -> float:
        return self.top + self.plot_h


@dataclass
class LineChart:
    frame: Frame
    color: str
    gpu: str
    metric: str
    coords: str = ""
    area: str = ""
    markers: list[Marker] = field(default_factory=list)
    ref_y: str = ""
    ref_label: str = ""
    empty: bool = False


def _f(v: float) -> str:
    return f"{v:.1f}"


def line_chart(
    xs: Sequence[float],
    ys: Sequence[float | None],
    *,
    label: str,
    unit: str,
    color: str,
    gpu: str,
    metric: str,
    x_max: float | None = None,
    y_range: tuple[float | None, float | None] = (None, None),
    ref: tuple[float, str] | None = None,
) -> LineChart:
    """A small time-series chart: one polyline for the series, y grid and labels, x axis in time
    since the run's first sample, an optional dashed reference line."""
    w, h = 300.0, 172.0
    left, right, top, bottom = 46.0, 12.0, 10.0, 36.0
    pw, ph = w - left - right, h - top - bottom
    pts = thin(xs, ys)
    values = [y for _, y in pts]
    span_x = x_max if x_max is not None else (max(xs) if xs else 0.0)
    if span_x <= 0:
        span_x = 1.0
    div, tunit = time_axis(span_x)
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

    xticks = nice_ticks(0.0, x_hi_units, 4)
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
    frame = Frame(
        w,
        h,
        left,
        top,
        pw,
        ph,
        label=f"{label} over time",
        x_label=f"time since start ({tunit})",
        y_label=unit,
        yticks=[Tick(_f(py(tv)), tick_label(tv, ystep)) for tv in yticks],
        xticks=[Tick(_f(left + tv / x_hi_units * pw), tick_label(tv, xstep)) for tv in xticks],
    )
    chart = LineChart(frame, color, gpu, metric)
    if ref is not None and lo <= ref[0] <= hi:
        chart.ref_y, chart.ref_label = _f(py(ref[0])), ref[1]
    chart.coords = " ".join(f"{px(x):.1f},{py(min(max(y, lo), hi)):.1f}" for x, y in pts)
    if len(pts) >= 2:
        base = top + ph
        chart.area = f"{px(pts[0][0]):.1f},{base:.1f} {chart.coords} {px(pts[-1][0]):.1f},{base:.1f}"
    if len(pts) <= 40:
        chart.markers = [Marker(_f(px(x)), _f(py(min(max(y, lo), hi))), f"{fmt_sig(y, 4)} {unit} at {fmt_sig(x, 3)} s") for x, y in pts]
    chart.empty = not pts
    return chart


@dataclass
class ScatterPoint:
    x: float
    y: float
    title: str
    front: bool
    group: str = ""


@dataclass
class ScatterChart:
    frame: Frame
    markers: list[Marker] = field(default_factory=list)
    fronts: list[str] = field(default_factory=list)  # one polyline (points) per group's Pareto front
    empty: bool = False


def _axis(lo: float, hi: float, target: int = 4) -> tuple[float, float, list[float], float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    step = nice_step(hi - lo, target)
    lo2 = math.floor(lo / step) * step
    hi2 = math.ceil(hi / step) * step
    ticks = nice_ticks(lo2, hi2, target)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else step
    return lo2, hi2, ticks, step


def scatter_chart(points: Sequence[ScatterPoint], *, label: str, x_label: str, y_label: str = "success rate (%)") -> ScatterChart:
    """Success rate (y, 0-100) against a cost-like x (lower is better); the front of each group is
    drawn as a step line through its points in x order."""
    w, h = 420.0, 260.0
    left, right, top, bottom = 52.0, 16.0, 12.0, 40.0
    pw, ph = w - left - right, h - top - bottom
    xs = [p.x for p in points]
    x_lo, x_hi, xticks, xstep = _axis(min([*xs, 0.0]), max(xs) if xs else 1.0)
    y_lo, y_hi, yticks, ystep = 0.0, 100.0, [0.0, 25.0, 50.0, 75.0, 100.0], 25.0

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y: float) -> float:
        return top + ph - (y - y_lo) / (y_hi - y_lo) * ph

    frame = Frame(
        w,
        h,
        left,
        top,
        pw,
        ph,
        label=label,
        x_label=x_label,
        y_label=y_label,
        yticks=[Tick(_f(py(t)), tick_label(t, ystep)) for t in yticks],
        xticks=[Tick(_f(px(t)), tick_label(t, xstep)) for t in xticks],
    )
    chart = ScatterChart(frame, empty=not points)
    chart.markers = [Marker(_f(px(p.x)), _f(py(p.y)), p.title, "front" if p.front else "") for p in points]
    groups: dict[str, list[ScatterPoint]] = {}
    for p in points:
        if p.front:
            groups.setdefault(p.group, []).append(p)
    for members in groups.values():
        members.sort(key=lambda p: (p.x, -p.y))
        coords: list[str] = []
        for i, p in enumerate(members):
            if i:
                coords.append(f"{px(p.x):.1f},{py(members[i - 1].y):.1f}")
            coords.append(f"{px(p.x):.1f},{py(p.y):.1f}")
        chart.fronts.append(" ".join(coords))
    return chart
