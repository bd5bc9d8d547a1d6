"""The report page's view model, built from a run's typed records (`RunFolder.contents()`: ResultRow,
TraceDoc, MetricRow, GpuSummary, RunMetadata, LeaderboardRow): every value is a plain string or
number ready for display; `report.html.j2` lays it out and escapes it (autoescape is on). A field an
old or damaged file does not give reads as unknown (`Record.given`), never as its default."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..records import ResultRow, RunMetadata, TraceDoc
from .charts import LineChart, line_chart
from .formatting import (
    NOT_MEASURED,
    TEXT_CAP,
    TIMES,
    cut,
    fmt_co2,
    fmt_energy,
    fmt_int,
    fmt_mib,
    fmt_ms,
    fmt_pct,
    fmt_sig,
    fmt_usd,
    fmt_wh,
    fmt_when,
    mapping,
    num,
    parse_iso,
)
from .rundata import CHECKPOINT, GpuSeries, RunData, gpu_series, row_duration_ms, sum_of
from .waterfall import KIND_LEGEND, Waterfall, span_times, waterfall

AGENT_LABELS = {"tool": "ToolCallingAgent", "code": "CodeAgent"}
GPU_METRICS = [
    ("util", "Utilisation", "%", "#6366f1"),
    ("mem", "Memory used", "GiB", "#0ea5e9"),
    ("temp", "Temperature", "°C", "#f97316"),
    ("power", "Power", "W", "#e11d48"),
]


@dataclass
class Card:
    label: str
    value: str
    sub: str = ""
    meter: float | None = None  # a pass-rate bar (0-100) under the value
    cls: str = ""


@dataclass
class RateRow:
    name: str
    detail: str  # shown muted after the name
    passed: str
    rate: str
    meter: float


@dataclass
class Breakdown:
    title: str
    rows: list[RateRow]


@dataclass
class TaskRow:
    index: int
    ok: bool
    task_id: str
    task_sort: str
    anchor: str
    prompt: str
    prompt_full: str
    agent: str
    difficulty: str
    error_type: str
    response: str
    failure_reason: str
    error: str
    tools: list[str]
    tools_more: int
    tools_sort: str
    steps: str
    steps_v: str
    duration: str
    duration_v: str
    tokens: str
    tokens_v: str
    energy: str
    energy_v: str


@dataclass
class TraceView:
    anchor: str
    pill: str  # pass, fail or none
    title: str
    meta: str
    trace_id: str
    body: Waterfall
    open: bool


@dataclass
class GpuChart:
    label: str
    unit: str
    color: str
    stat: str
    chart: LineChart


@dataclass
class GpuView:
    gpu_id: str
    name: str
    facts: str
    charts: list[GpuChart]


@dataclass
class ReportView:
    title: str
    model: str
    status: str
    status_cls: str
    chips: list[tuple[str, str]]
    run_id: str
    folder: str
    notices: list[tuple[str, str]]
    cards: list[Card]
    breakdowns: list[Breakdown]
    failures: list[tuple[str, int]]
    tasks: list[TaskRow]
    has_energy: bool
    traces_empty: str
    traces: list[TraceView]
    traces_count: int
    traces_missing: int
    legend: list[tuple[str, str]]
    gpu_empty: str
    gpu_totals: list[tuple[str, str, str]]
    gpus: list[GpuView]
    environment: list[tuple[str, str]]
    footer: str
    has_rows: bool = True
    placement: list[Any] = field(default_factory=list)  # leaderboard_page.EntryRow of the runs beside this one
    placement_note: str = ""


def rate(passed: int, total: int) -> float | None:
    return passed / total * 100 if total else None


def _gm(md: RunMetadata | None) -> Mapping[str, Any]:
    """metadata.gpu_metrics (a free-form mapping in the record)."""
    return md.gpu_metrics if md is not None else {}


def _status(data: RunData) -> tuple[str, str]:
    """(status word, css class)."""
    md = data.metadata
    status = str(md.given("status") or "") if md is not None else ""
    if status == "completed":
        return "completed", "ok"
    if status == "interrupted":
        return "interrupted", "warn"
    if status == "partial":
        return "partial", "bad"
    if status == "running":
        return "did not finish", "bad"
    if md is None:
        return "unknown", "warn"
    return status or "unknown", "warn"


def energy_totals(data: RunData, gpus: Sequence[GpuSeries]) -> tuple[float | None, float | None, float | None]:
    summary = data.gpu_summary
    if summary is not None and summary.given("gpu_available") is False:
        return None, None, None  # no GPU was measured: unknown, not 0 J
    energy = num(summary.given("energy_joules")) if summary is not None else None
    co2 = num(summary.given("co2_grams")) if summary is not None else None
    cost = num(summary.given("power_cost_usd")) if summary is not None else None
    if energy is None and any(g.energy_j is not None for g in gpus):
        energy = sum(g.energy_j or 0.0 for g in gpus)
    if co2 is None and any(g.co2_g is not None for g in gpus):
        co2 = sum(g.co2_g or 0.0 for g in gpus)
    if cost is None and any(g.cost_usd is not None for g in gpus):
        cost = sum(g.cost_usd or 0.0 for g in gpus)
    board = data.leaderboard
    if energy is None:
        energy = num(board.energy_j if board is not None else None) or sum_of(data.rows, "energy_j")
    if co2 is None:
        co2 = num(board.co2_emissions_g if board is not None else None) or sum_of(data.rows, "co2_g")
    return energy, co2, cost


def _gpu_names(data: RunData, gpus: Sequence[GpuSeries]) -> list[str]:
    names = [g.name for g in gpus]
    if not names:
        listed = _gm(data.metadata).get("devices")
        names = [str(d.get("name") or "GPU") for d in listed if isinstance(d, Mapping)] if isinstance(listed, list) else []
    return [f"{n} {TIMES} {name}" if n > 1 else name for name, n in Counter(names).items()]


def _wall_ms(data: RunData) -> float | None:
    md = data.metadata
    start = parse_iso(md.started_at) if md is not None else None
    end = parse_iso(md.finished_at) if md is not None else None
    if start and end and end >= start:
        return (end - start).total_seconds() * 1000
    starts = [v for v in (num(r.start_time_unix_nano) for r in data.rows) if v]
    ends = [v for v in (num(r.end_time_unix_nano) for r in data.rows) if v]
    if starts and ends:
        return (max(ends) - min(starts)) / 1e6
    return None


def _first(data: RunData, name: str, *, rows: bool = True) -> Any:
    """A run-level value: metadata, else the leaderboard row, else (`rows`) the first row that has it."""
    for record in (data.metadata, data.leaderboard):
        value = record.given(name) if record is not None else None
        if value not in (None, ""):
            return value
    return next((v for v in (r.given(name) for r in data.rows) if v not in (None, "")), None) if rows else None


def _chips(data: RunData) -> list[tuple[str, str]]:
    md = data.metadata
    dataset = _first(data, "dataset_used", rows=False)
    split = md.split if md is not None else None
    started = md.started_at if md is not None else None
    finished = md.finished_at if md is not None else None
    chips = [
        ("provider", _first(data, "provider")),
        ("agents", _first(data, "agent_type", rows=False)),
        ("dataset", f"{dataset} ({split})" if dataset and split else dataset),
        ("started", fmt_when(started) if started else None),
        ("finished", fmt_when(finished) if finished else None),
    ]
    return [(k, str(v)) for k, v in chips if v]


def _notices(data: RunData) -> list[tuple[str, str]]:
    md = data.metadata
    notes: list[tuple[str, str]] = []
    status = md.given("status") if md is not None else None
    planned = num(md.num_planned) if md is not None else None
    done = len(data.rows)
    if status == "partial" and md is not None:
        part = mapping(md.partial)
        notes.append(
            (
                "bad",
                f"Partial run (merged with --allow-partial): shards missing {part.get('missing_shards') or []}, "
                f"not completed {part.get('not_completed') or []}. The numbers below cover the shards present only.",
            )
        )
    if status == "interrupted":
        of = f" of {int(planned):,} planned" if planned is not None else ""
        notes.append(("warn", f"The run was interrupted: {done:,}{of} task executions finished. The numbers below cover those only."))
    elif status == "running" or (data.rows_source == CHECKPOINT):
        where = (
            f"traces and GPU metrics come from the {len(data.segments):,} segment(s) of the run (a segment's are written when its process ends)"
            if data.from_segments
            else "traces and GPU metrics are written only at the end"
        )
        notes.append(
            (
                "bad",
                f"The run did not finish (it crashed or is still running). {done:,} finished executions were read from {CHECKPOINT}; {where}.",
            )
        )
    if md is None and not data.rows and not data.traces and not data.metric_rows:
        notes.append(("bad", "No run data found in this folder (no metadata.json, results.json, traces.json or metrics_rows.json)."))
    elif md is None:
        notes.append(("warn", "metadata.json is missing or empty: model, dataset and timing details are unknown."))
    killed = [s for s in data.segments if s.status == "killed"]
    if killed:
        notes.append(
            (
                "warn",
                f"{len(killed):,} process(es) of this run were killed (segment {', '.join(str(s.index) for s in killed)}): "
                "the executions they finished are kept, their spans and GPU samples are lost.",
            )
        )
    gpu_warning = _gm(md).get("warning")
    if gpu_warning:
        notes.append(("warn", f"GPU metrics: {gpu_warning}"))
    warnings = md.telemetry.get("warnings") if md is not None else None
    for warning in warnings if isinstance(warnings, list) else []:
        notes.append(("warn", f"Telemetry: {warning}"))
    if data.gpu_summary is not None and data.gpu_summary.simulated:
        notes.append(("info", "GPU readings come from the simulated exporter backend (demo data, not a real GPU)."))
    notes.extend(("bad", problem) for problem in data.problems)
    return [(cls, cut(text, 600)) for cls, text in notes]


def _cards(data: RunData, gpus: Sequence[GpuSeries]) -> list[Card]:
    rows = data.rows
    md = data.metadata
    summary = data.gpu_summary
    total = len(rows)
    passed = sum(1 for r in rows if r.success is True)
    pass_rate = rate(passed, total)
    tokens = sum_of(rows, "total_tokens")
    prompt_t, completion_t = sum_of(rows, "prompt_tokens"), sum_of(rows, "completion_tokens")
    cost = sum_of(rows, "cost_usd")
    wall = _wall_ms(data)
    durations = [d for d in (row_duration_ms(r) for r in rows) if d is not None]
    task_ms = sum(durations) if durations else None
    timings = md.timings if md is not None else {}
    energy, co2, power_cost = energy_totals(data, gpus)
    gm = _gm(md)
    gpu_enabled = gm.get("enabled")
    gpu_available = gm.get("gpu_available")
    names = _gpu_names(data, gpus)
    planned = num(md.num_planned) if md is not None else None

    token_sub = []
    if prompt_t is not None or completion_t is not None:
        token_sub.append(f"{fmt_int(prompt_t)} prompt · {fmt_int(completion_t)} completion")
    if tokens is not None and total:
        token_sub.append(f"{fmt_int(tokens / total)} per task")
    duration_sub = []
    active_s, startup_s = num(timings.get("active_s")), num(timings.get("startup_s"))
    if active_s is not None:
        duration_sub.append(f"active {fmt_ms(active_s * 1000)}")
    if startup_s is not None:
        duration_sub.append(f"start-up {fmt_ms(startup_s * 1000)}")
    if task_ms is not None:
        duration_sub.append(f"Σ tasks {fmt_ms(task_ms)}")
    if gpu_enabled is False or (gpu_enabled is None and not gpus and energy is None):
        why = gm.get("reason")
        off = "GPU metrics off" + (f": {why}" if why else "")
        energy_card = Card("Energy", NOT_MEASURED, cut(off, 120))
        co2_card = Card("CO₂", NOT_MEASURED, "GPU metrics off" if gpu_enabled is False else "not measured")
    elif energy is None and co2 is None:
        why = "no GPU was visible" if gpu_available is False else "no energy reading"
        energy_card = Card("Energy", NOT_MEASURED, why)
        co2_card = Card("CO₂", NOT_MEASURED, why)
    else:
        energy_card = Card(
            "Energy", fmt_energy(energy), fmt_wh(energy) + (f" · power cost {fmt_usd(power_cost)}" if power_cost is not None else "")
        )
        intensity = num(summary.given("carbon_intensity_g_per_kwh")) if summary is not None else None
        pue = num(summary.given("pue")) if summary is not None else None
        co2_sub = " · ".join(
            x for x in (f"{fmt_sig(intensity, 3)} gCO₂e/kWh" if intensity else "", f"PUE {fmt_sig(pue, 3)}" if pue else "") if x
        )
        co2_card = Card("CO₂", fmt_co2(co2), co2_sub or "gCO₂e")
    if names:
        method = summary.energy_method if summary is not None else ""
        gpu_card = Card("GPUs", ", ".join(names), f"energy by {method}" if method else f"{len(gpus)} sampled", cls="wide-text")
    elif gpu_enabled and gpu_available is False:
        gpu_card = Card("GPUs", "none", "metrics on, but no GPU was visible")
    else:
        gpu_card = Card("GPUs", "—", "not measured")

    by_agent: dict[str, list[bool]] = {}
    for r in rows:
        by_agent.setdefault(r.agent_type or "unknown", []).append(r.success is True)
    rate_sub = (
        " · ".join(f"{k} {fmt_pct(rate(sum(v), len(v)))}" for k, v in by_agent.items())
        if len(by_agent) > 1
        else f"{passed:,} of {total:,} passed"
    )
    steps = sum_of(rows, "steps")
    task_sub = [f"{passed:,} passed · {total - passed:,} failed"]
    if planned is not None and planned != total:
        task_sub.append(f"{int(planned):,} planned")
    if steps is not None and total:
        task_sub.append(f"{fmt_sig(steps / total, 3)} steps avg")
    return [
        Card("Pass rate", fmt_pct(pass_rate), rate_sub, meter=0.0 if pass_rate is None else pass_rate, cls="accent"),
        Card("Tasks", f"{total:,}", " · ".join(task_sub)),
        Card("Tokens", fmt_int(tokens), " · ".join(token_sub)),
        Card("Cost", fmt_usd(cost), f"{fmt_usd(cost / total)} per task" if cost is not None and total else "model API cost"),
        Card("Duration", fmt_ms(wall), " · ".join(duration_sub) or "wall clock"),
        energy_card,
        co2_card,
        gpu_card,
    ]


def rate_rows(groups: Mapping[str, Sequence[ResultRow]], labels: Mapping[str, str] | None = None) -> list[RateRow]:
    out = []
    for key, items in groups.items():
        passed = sum(1 for r in items if r.success is True)
        r = rate(passed, len(items))
        label = (labels or {}).get(key)
        out.append(RateRow(label or key, key if label else "", f"{passed:,} / {len(items):,}", fmt_pct(r), 0.0 if r is None else r))
    return out


DIFFICULTY_ORDER = {"easy": 0, "medium": 1, "hard": 2}


def by_difficulty_key(key: str) -> tuple[int, str]:
    return (DIFFICULTY_ORDER.get(key, 9), key)


def _breakdowns(rows: Sequence[ResultRow]) -> tuple[list[Breakdown], list[tuple[str, int]]]:
    if not rows:
        return [], []
    by_agent: dict[str, list[ResultRow]] = {}
    by_diff: dict[str, list[ResultRow]] = {}
    for r in rows:
        by_agent.setdefault(r.agent_type or "unknown", []).append(r)
        by_diff.setdefault(r.difficulty or "unspecified", []).append(r)
    panels = [
        Breakdown("By agent type", rate_rows(by_agent, AGENT_LABELS)),
        Breakdown("By difficulty", rate_rows(dict(sorted(by_diff.items(), key=lambda kv: by_difficulty_key(kv[0]))))),
    ]
    failures = Counter(r.error_type or ("error" if r.error else "wrong answer") for r in rows if r.success is not True)
    return panels, failures.most_common(8)


def _v(value: float | None) -> str:
    return "" if value is None else repr(value)


def _tasks(data: RunData, anchors: Mapping[int, str]) -> list[TaskRow]:
    out = []
    for i, r in enumerate(data.rows):
        tools = list(r.tools_used)
        steps, dur, tokens, energy = num(r.given("steps")), row_duration_ms(r), num(r.given("total_tokens")), num(r.energy_j)
        ok = r.success is True
        response = r.response
        out.append(
            TaskRow(
                index=i,
                ok=ok,
                task_id=cut(r.task_id or r.test_case_uid or "?", 120),
                task_sort=r.task_id,
                anchor=anchors.get(i, ""),
                prompt=cut(r.prompt, 140) if r.prompt else "",
                prompt_full=cut(r.prompt, 1000) if r.prompt else "",
                agent=r.agent_type or "—",
                difficulty=r.difficulty or "—",
                error_type="" if ok or not r.error_type else r.error_type,
                response="" if response in (None, "") else cut(response, 240 if ok else 160),
                failure_reason="" if ok or not r.failure_reason else cut(r.failure_reason, TEXT_CAP),
                error="" if ok or not r.error else cut(r.error, TEXT_CAP),
                tools=[cut(t, 60) for t in tools[:12]],
                tools_more=max(len(tools) - 12, 0),
                tools_sort=",".join(tools),
                steps=fmt_int(steps),
                steps_v=_v(steps),
                duration=fmt_ms(dur),
                duration_v=_v(dur),
                tokens=fmt_int(tokens),
                tokens_v=_v(tokens),
                energy=fmt_energy(energy),
                energy_v=_v(energy),
            )
        )
    return out


def match_traces(data: RunData) -> tuple[dict[int, TraceDoc], list[TraceDoc]]:
    by_trace = {t.trace_id: t for t in data.traces if t.trace_id}
    by_uid: dict[str, TraceDoc] = {}
    for t in data.traces:
        for uid in t.test_case_uids:
            by_uid.setdefault(uid, t)
    matched: dict[int, TraceDoc] = {}
    used: set[int] = set()
    for i, r in enumerate(data.rows):
        doc = by_trace.get(str(r.trace_id)) or by_uid.get(r.test_case_uid)
        if doc is not None and id(doc) not in used:
            matched[i] = doc
            used.add(id(doc))
    unmatched = [t for t in data.traces if id(t) not in used]
    return matched, unmatched


def _traces_empty(data: RunData) -> str:
    if data.traces:
        return ""
    md = data.metadata
    otel = md.otel.get("enabled") if md is not None else None
    if otel is False or (otel is None and not (md is not None and md.telemetry.get("tracing"))):
        return "Tracing was off for this run (run with --enable-otel to record spans)."
    return "No spans were received for this run."


def _traces(
    data: RunData, matched: Mapping[int, TraceDoc], unmatched: Sequence[TraceDoc], max_total: int, max_per_trace: int
) -> list[TraceView]:
    budget = max_total
    out: list[TraceView] = []
    entries: list[tuple[str, ResultRow | None, TraceDoc]] = [(f"trace-{i + 1}", data.rows[i], doc) for i, doc in sorted(matched.items())]
    entries += [(f"trace-x{j + 1}", None, doc) for j, doc in enumerate(unmatched)]
    for anchor, row, doc in entries:
        body = waterfall(doc, budget, max_per_trace)
        budget -= body.drawn
        spans = doc.spans
        if row is not None:
            pill = "pass" if row.success is True else "fail"
            title = cut(row.task_id or row.test_case_uid or "?", 120)
            agent = row.agent_type or doc.agent_type or ""
        else:
            pill = "none"
            title = cut(", ".join(doc.test_ids) or "trace without a task row", 120)
            agent = doc.agent_type or ""
        dur = num(doc.given("total_duration_ms"))
        if dur is None:
            times = [t for t in (span_times(s) for s in spans if isinstance(s, Mapping)) if t]
            dur = (max(t[1] for t in times) - min(t[0] for t in times)) / 1e6 if times else None
        meta = [agent, f"{len(spans):,} spans", fmt_ms(dur)]
        if num(doc.given("total_tokens")):
            meta.append(f"{fmt_int(doc.total_tokens)} tokens")
        if num(doc.given("model_calls")):
            meta.append(f"{fmt_int(doc.model_calls)} model calls")
        if doc.incomplete:
            meta.append("incomplete")
        out.append(TraceView(anchor, pill, title, " · ".join(m for m in meta if m), doc.trace_id, body, not out))
    return out


def _stat_line(values: Sequence[float | None], unit: str) -> str:
    vs = [v for v in values if v is not None]
    if not vs:
        return "no readings"
    return f"avg {fmt_sig(sum(vs) / len(vs), 3)} · max {fmt_sig(max(vs), 3)} {unit}"


def _gpu_empty(data: RunData, gpus: Sequence[GpuSeries]) -> str:
    if gpus:
        return ""
    gm = _gm(data.metadata)
    if gm.get("enabled") is False:
        return "GPU metrics were off for this run" + (f" ({gm.get('reason')})." if gm.get("reason") else ".")
    if gm.get("enabled") and gm.get("gpu_available") is False:
        return "GPU metrics were on, but the exporter saw no GPU."
    if gm.get("enabled"):
        return "GPU metrics were on, but no samples were recorded."
    return "No GPU metrics were recorded for this run."


def _gpu_totals(data: RunData, gpus: Sequence[GpuSeries]) -> list[tuple[str, str, str]]:
    energy, co2, cost = energy_totals(data, gpus)
    totals = [("energy", fmt_energy(energy), fmt_wh(energy)), ("CO₂", fmt_co2(co2), "gCO₂e")]
    if cost is not None:
        totals.append(("power cost", fmt_usd(cost), "at the configured price"))
    totals.append(("samples", fmt_int(sum(len(g.t) for g in gpus)), f"{len(gpus)} GPU(s)"))
    return totals


def _gpus(gpus: Sequence[GpuSeries]) -> list[GpuView]:
    x_max = max((g.t[-1] for g in gpus if g.t), default=0.0)
    out = []
    for g in gpus:
        charts = []
        for key, label, unit, color in GPU_METRICS:
            ys: list[float | None] = list(getattr(g, key))
            ref = None
            y_range: tuple[float | None, float | None] = (None, None)
            if key == "util":
                y_range = (0.0, 100.0)
            elif key == "mem":
                ys = [None if v is None else v / 1024 for v in ys]
                total_gib = g.mem_total / 1024 if g.mem_total else None
                ref = (total_gib, f"total {fmt_sig(total_gib, 3)} GiB") if total_gib else None
                y_range = (0.0, None)
            elif key == "power":
                y_range = (0.0, None)
            chart = line_chart(
                g.t,
                ys,
                label=f"GPU {g.gpu_id} {label}",
                unit=unit,
                color=color,
                gpu=g.gpu_id,
                metric=key,
                x_max=x_max,
                y_range=y_range,
                ref=ref,
            )
            charts.append(GpuChart(label, unit, color, _stat_line(ys, unit), chart))
        facts = [f"energy {fmt_energy(g.energy_j)}", f"CO₂ {fmt_co2(g.co2_g)}"]
        if g.mem_total:
            facts.append(f"memory {fmt_mib(g.mem_total)}")
        facts.append(f"{len(g.t):,} samples")
        out.append(GpuView(g.gpu_id, g.name, " · ".join(facts), charts))
    return out


def _environment(data: RunData) -> list[tuple[str, str]]:
    md = data.metadata
    if md is None:
        return []
    rows: list[tuple[str, str]] = []
    for key in ("run_id", "dataset_used", "dataset_revision", "dataset_sha256", "split", "num_tasks_in_dataset", "seed"):
        value = md.given(key)
        if value not in (None, ""):
            rows.append((key, str(value)))
    cfg = md.config
    for key in ("max_steps", "parallel_workers", "limit", "difficulty", "task_timeout", "max_retries"):
        if cfg.get(key) not in (None, "", []):
            rows.append((key, str(cfg[key])))
    if md.versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in md.versions.items())))
    if md.git.get("sha"):
        rows.append(("git", f"{md.git['sha']}{' (dirty)' if md.git.get('dirty') else ''}"))
    if md.platform:
        rows.append(("platform", " / ".join(str(v) for v in md.platform.values())))
    gm = md.gpu_metrics
    if gm.get("reason"):
        rows.append(("gpu metrics", str(gm["reason"])))
    otel = md.otel.get("console")
    if otel:
        rows.append(("otel", str(otel)))
    return [(k, cut(v, 600)) for k, v in rows]


def build_report_view(data: RunData, *, max_spans_total: int, max_spans_per_trace: int) -> ReportView:
    gpus = gpu_series(data)
    matched, unmatched = match_traces(data)
    anchors = {i: f"trace-{i + 1}" for i in matched}
    md = data.metadata
    model = _first(data, "model")
    status, status_cls = _status(data)
    version = md.versions.get("smoltrace") if md is not None else None
    footer = f"smoltrace {version} · " if version else "smoltrace · "
    footer += f"report of {data.path.name}"
    if md is not None and md.finished_at:
        footer += f" · run finished {fmt_when(md.finished_at)}"
    run_id = _first(data, "run_id")
    breakdowns, failures = _breakdowns(data.rows)
    title = next((v for v in (r.given("model") for r in (md, data.leaderboard) if r is not None) if v), None)
    return ReportView(
        title=cut(title or "run", 120),
        model=str(model or "unknown model"),
        status=status,
        status_cls=status_cls,
        chips=_chips(data),
        run_id=str(run_id or "—"),
        folder=data.path.name,
        notices=_notices(data),
        cards=_cards(data, gpus),
        breakdowns=breakdowns,
        failures=failures,
        tasks=_tasks(data, anchors),
        has_energy=any(num(r.energy_j) is not None for r in data.rows),
        traces_empty=_traces_empty(data),
        traces=_traces(data, matched, unmatched, max_spans_total, max_spans_per_trace),
        traces_count=len(data.traces),
        traces_missing=max(len(data.rows) - len(matched), 0),
        legend=KIND_LEGEND,
        gpu_empty=_gpu_empty(data, gpus),
        gpu_totals=_gpu_totals(data, gpus) if gpus else [],
        gpus=_gpus(gpus),
        environment=_environment(data),
        footer=footer,
        has_rows=bool(data.rows),
    )
