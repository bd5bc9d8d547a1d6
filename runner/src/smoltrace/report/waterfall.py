"""Trace waterfalls as view models: spans in tree order with their bar position, colour class,
tooltip and error mark, plus the time axis and the error summary (`macros.html.j2` draws them)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..records import TraceDoc
from .charts import nice_ticks, tick_label
from .formatting import cut, fmt_ms, mapping, num, parse_iso

ATTR_CAP = 200

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
    attrs = mapping(span.get("attributes"))
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
    status = mapping(span.get("status"))
    lines = [
        cut(span.get("name"), 120),
        f"{cls} · {span.get('kind') or 'INTERNAL'} · status {status.get('code') or 'UNSET'}",
        f"starts +{fmt_ms(offset_ms)} · lasts {fmt_ms(dur_ms)}",
    ]
    if status.get("description"):
        lines.append("error: " + cut(status["description"], ATTR_CAP))
    attrs = mapping(span.get("attributes"))
    seen = set()
    for key, label in TOOLTIP_ATTRS:
        if key in attrs and label not in seen and attrs[key] not in (None, ""):
            seen.add(label)
            value = attrs[key]
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            lines.append(f"{label}: {cut(' '.join(text.split()), ATTR_CAP)}")
    return "\n".join(lines)


def span_times(span: Mapping[str, Any]) -> tuple[float, float] | None:
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
        t = span_times(s)
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


def is_error(span: Mapping[str, Any]) -> bool:
    status = mapping(span.get("status"))
    return str(status.get("code", "")).upper() in ("ERROR", "STATUS_CODE_ERROR", "2")


@dataclass
class WaterfallRow:
    name: str
    cls: str
    error: bool
    tooltip: str
    indent_px: int
    left: str  # percent, formatted
    width: str
    duration: str


@dataclass
class AxisTick:
    pct: str
    align: str
    label: str


@dataclass
class Waterfall:
    """What a trace's body shows: a message (no spans, no times, left out) or the waterfall."""

    message: str = ""
    message_cls: str = "muted"
    tick_pct: str = ""
    axis: list[AxisTick] = field(default_factory=list)
    rows: list[WaterfallRow] = field(default_factory=list)
    shown_note: str = ""
    errors: list[tuple[str, int]] = field(default_factory=list)
    error_count: int = 0
    drawn: int = 0


def waterfall(doc: TraceDoc, budget: int, per_trace: int) -> Waterfall:
    """A trace as a waterfall (at most `per_trace` spans, and `budget` for the rest of the page)."""
    spans: list[Mapping[str, Any]] = [s for s in doc.spans if isinstance(s, Mapping)]
    if not spans:
        return Waterfall(message="This trace holds no spans.")
    ordered = ordered_spans(spans)
    limit = min(per_trace, budget)
    if limit <= 0:
        return Waterfall(
            message=f"Waterfall left out to keep the report small ({len(spans):,} spans; see traces.json).", message_cls="note"
        )
    times = [t for t in (span_times(s) for s in spans) if t]
    if not times:
        return Waterfall(message="The spans of this trace carry no timestamps.")
    t0 = min(t[0] for t in times)
    t1 = max(t[1] for t in times)
    total_ms = max((t1 - t0) / 1e6, 1e-6)
    ticks = nice_ticks(0.0, total_ms, 6)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else total_ms
    wf = Waterfall(tick_pct=f"{step / total_ms * 100:.3f}")
    for tv in ticks:
        pct = tv / total_ms * 100
        align = "start" if pct < 4 else ("end" if pct > 92 else "mid")
        wf.axis.append(AxisTick(f"{pct:.2f}", align, f"{tick_label(tv, step)} ms"))
    root_ids = {doc.root_span_id} if doc.root_span_id else set()
    errors: Counter[str] = Counter()
    for s in spans:
        if is_error(s):
            status = mapping(s.get("status"))
            errors[cut(str(status.get("description") or s.get("name") or "error").split("\n")[0], 160)] += 1
    for depth, s in ordered[:limit]:
        t = span_times(s) or (t0, t0)
        offset = (t[0] - t0) / 1e6
        dur = num(s.get("duration_ms"))
        dur = dur if dur is not None else (t[1] - t[0]) / 1e6
        left = offset / total_ms * 100
        width = max(min((t[1] - t[0]) / 1e6 / total_ms * 100, 100 - left), 0.25)
        cls = span_class(s, depth == 0 and (not root_ids or str(s.get("span_id")) in root_ids))
        wf.rows.append(
            WaterfallRow(
                name=cut(s.get("name") or "(unnamed)", 80),
                cls=cls,
                error=is_error(s),
                tooltip=_span_tooltip(s, cls, offset, dur),
                indent_px=6 + min(depth, 14) * 14,
                left=f"{left:.2f}",
                width=f"{width:.2f}",
                duration=fmt_ms(dur),
            )
        )
    if len(ordered) > limit:
        wf.shown_note = f"Showing the first {limit:,} of {len(ordered):,} spans (tree order); the rest are in traces.json."
    wf.errors = errors.most_common(4)
    wf.error_count = sum(errors.values())
    wf.drawn = min(limit, len(ordered))
    return wf
