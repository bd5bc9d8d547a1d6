"""The run record's rows, computed: result rows, per-task telemetry, the leaderboard row.

Pure functions over the records (`records.py`); files are written by `RunFolder`
(`run_folder.py`). Column names follow SMOLTRACE's so existing consumers (TraceMind UI) keep working.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .atomic import write_json_atomic
from .costs import task_cost
from .executor import TaskResult
from .records import LEADERBOARD_SCHEMA_VERSION, GpuSummary, LeaderboardRow, ResultRow, TraceDoc, order_rows
from .run_folder import (
    CHECKPOINT,
    LEADERBOARD_ROW,
    METADATA,
    METRIC_ROWS,
    METRICS,
    RESULTS,
    TRACES,
    Checkpoint,
    RunUnion,
    iso,
    run_dir_name,
    utc_now,
)

__all__ = [
    "CHECKPOINT",
    "GPU_COLUMN_RULES",
    "LEADERBOARD_ROW",
    "LEADERBOARD_SCHEMA_VERSION",
    "METADATA",
    "METRICS",
    "METRIC_ROWS",
    "RESULTS",
    "TRACES",
    "Checkpoint",
    "RowsReport",
    "enrich_rows",
    "gpu_columns",
    "iso",
    "leaderboard_row",
    "order_rows",
    "read_json",
    "result_row",
    "run_dir_name",
    "segment_energy",
    "utc_now",
    "write_json_atomic",
]


def read_json(path: Any) -> Any:
    from pathlib import Path

    return json.loads(Path(path).read_text("utf-8"))


# -- result rows ------------------------------------------------------------------------------
def _trace_info(trace_id: str | None, root: str | None, tokens: int, duration_ms: float, cost: float | None, spans: int) -> str:
    return json.dumps(
        {
            "trace_id": trace_id,
            "root_span_id": root,
            "total_tokens": tokens,
            "duration_ms": duration_ms,
            "cost_usd": cost,
            "span_count": spans,
        }
    )


def result_row(result: TaskResult, model: str, run_id: str, provider: str) -> ResultRow:
    """One results.json row from a finished execution."""
    e = result.execution
    task = e.task
    duration = round(result.duration_ms, 3)
    cost = task_cost(provider, model, result.prompt_tokens, result.completion_tokens)
    return ResultRow(
        model=model,
        evaluation_date=result.finished_at,
        task_id=task.id,
        test_case_uid=e.uid,
        agent_type=e.agent_type,
        difficulty=task.difficulty,
        prompt=task.prompt,
        success=result.score.success,
        tool_called=result.score.tool_called,
        correct_tool=result.score.correct_tool,
        final_answer_called=result.score.final_answer_called,
        response_correct=result.score.response_correct,
        tools_used=list(result.tools_used),
        steps=result.steps,
        response=result.response,
        error=result.error,
        trace_id=result.trace_id,
        span_id=result.span_id,
        run_id=run_id,
        execution_time_ms=duration,
        total_tokens=result.total_tokens,
        cost_usd=cost,
        enhanced_trace_info=_trace_info(result.trace_id, result.span_id, result.total_tokens, duration, cost, 0),
        provider=provider,
        test_index=e.index,
        expected_tool=task.expected_tool,
        expected_tool_calls=task.expected_tool_calls,
        expected_keywords=list(task.expected_keywords),
        expected_answer=None if task.expected_answer is None else str(task.expected_answer),
        failure_reason=result.score.reason,
        error_type=result.error_type,
        attempts=result.attempts,
        retries=result.retries,
        duration_ms=duration,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        started_at=result.started_at,
        finished_at=result.finished_at,
        start_time_unix_nano=result.start_unix_ns,
        end_time_unix_nano=result.end_unix_ns,
    )


# -- leaderboard row --------------------------------------------------------------------------
def _avg(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# The leaderboard's GPU columns: one rule each, over the run's GPUs (summary["devices"], each
# with its own avg/max). Averages and maxima are per GPU; a total only where the name says so
# (energy, CO2 and cost are the run's, over all its GPUs). The per-GPU values stay in the metrics
# dataset and metadata.json. Stated in the leaderboard's dataset card and README. A MIG instance
# counts as a GPU of its own (its memory; its utilisation, temperature and power are its parent's),
# except one whose GPU the run also samples (split_method in_parent): the GPU already holds it.
GPU_COLUMN_RULES: dict[str, str] = {
    "gpu_utilization_avg": "mean over the run's GPUs of each GPU's average utilisation (%)",
    "gpu_utilization_max": "the highest utilisation any one GPU reached (%)",
    "gpu_memory_avg_mib": "mean over the run's GPUs of each GPU's average memory in use (MiB per GPU)",
    "gpu_memory_max_mib": "the most memory any one GPU held (MiB)",
    "gpu_temperature_avg": "mean over the run's GPUs of each GPU's average temperature (°C)",
    "gpu_temperature_max": "the hottest any one GPU got (°C)",
    "gpu_power_avg_w": "mean over the run's GPUs of each GPU's average power draw (W per GPU)",
    "energy_j": "the run's GPU energy, total over its GPUs (J; a GPU shared with other runs is split between them)",
    "co2_emissions_g": "CO2 of energy_j, total (gCO2e)",
    "power_cost_total_usd": "electricity cost of energy_j, total (USD)",
}
_GPU_GAUGES = {
    "gpu_utilization_avg": ("utilization_percent", "avg", 1.0),
    "gpu_utilization_max": ("utilization_percent", "max", 1.0),
    "gpu_memory_avg_mib": ("memory_used_bytes", "avg", 1 / (1024 * 1024)),
    "gpu_memory_max_mib": ("memory_used_bytes", "max", 1 / (1024 * 1024)),
    "gpu_temperature_avg": ("temperature_celsius", "avg", 1.0),
    "gpu_temperature_max": ("temperature_celsius", "max", 1.0),
    "gpu_power_avg_w": ("power_watts", "avg", 1.0),
}


def gpu_columns(summary: Mapping[str, Any] | None) -> dict[str, float | None]:
    """The leaderboard's gauge columns by GPU_COLUMN_RULES: `avg` columns the mean of the per-GPU
    averages, `max` columns the largest per-GPU maximum; None when no GPU reported the reading."""
    from smoltrace_proto.summary import SPLIT_IN_PARENT  # here: importing outputs must not load protobuf

    devices = [
        d
        for d in (summary or {}).get("devices") or []
        if isinstance(d, Mapping) and not d.get("failed") and d.get("split_method") != SPLIT_IN_PARENT  # a MIG instance inside its GPU
    ]
    out: dict[str, float | None] = {}
    for column, (key, part, scale) in _GPU_GAUGES.items():
        values = [float(st[part]) for d in devices if (st := d.get(key) or {}) and st.get("count")]
        if not values and summary and not devices:  # a summary without per-device figures: the run's own
            st = summary.get(key) or {}
            values = [float(st[part])] if st and st.get("count") else []
        if not values:
            out[column] = None
            continue
        value = sum(values) / len(values) if part == "avg" else max(values)
        out[column] = round(value * scale, 2)
    return out


def leaderboard_row(
    rows: Sequence[ResultRow],
    *,
    run_id: str,
    model: str,
    agent_type: str,
    provider: str,
    dataset_used: str,
    submitted_by: str,
    grouping: Mapping[str, str | None],
    datasets: Mapping[str, str],
    gpu_summary: GpuSummary | None,
    timestamp: datetime,
    status: str = "completed",
) -> LeaderboardRow:
    total = len(rows)
    passed = sum(1 for r in rows if r.success)
    durations = [float(r.duration_ms or 0.0) for r in rows]
    tokens = [int(r.total_tokens or 0) for r in rows]
    costs = [r.cost_usd for r in rows]
    priced = [float(c) for c in costs if c is not None]
    known = bool(rows) and len(priced) == len(costs)  # an unknown price is not a price of 0
    gpu = gpu_summary if gpu_summary is not None and gpu_summary.gpu_available else None  # else energy and CO2 are unknown
    return LeaderboardRow(
        schema_version=LEADERBOARD_SCHEMA_VERSION,
        run_id=run_id,
        model=model,
        agent_type=agent_type,
        provider=provider,
        timestamp=iso(timestamp),
        submitted_by=submitted_by,
        use_case=grouping.get("use_case"),
        team=grouping.get("team"),
        purpose=grouping.get("purpose"),
        suite_version=grouping.get("suite_version"),
        results_dataset=datasets.get("results"),
        traces_dataset=datasets.get("traces"),
        metrics_dataset=datasets.get("metrics"),
        dataset_used=dataset_used,
        total_tests=total,
        successful_tests=passed,
        failed_tests=total - passed,
        success_rate=round(100.0 * passed / total, 2) if total else 0.0,
        avg_steps=round(_avg([float(r.steps or 0) for r in rows]), 2),
        avg_duration_ms=round(_avg(durations), 3),
        total_duration_ms=round(sum(durations), 3),
        total_tokens=sum(tokens),
        avg_tokens_per_test=int(_avg(tokens)),
        total_cost_usd=round(sum(priced), 6) if known else None,
        avg_cost_per_test_usd=round(_avg(priced), 6) if known else None,
        co2_emissions_g=round(gpu.co2_grams, 4) if gpu else None,
        power_cost_total_usd=round(gpu.power_cost_usd, 6) if gpu else None,
        energy_j=round(gpu.energy_joules, 3) if gpu else None,
        **gpu_columns(gpu.to_json() if gpu else None),  # one rule per column: GPU_COLUMN_RULES
        notes=f"Evaluation on {timestamp.astimezone(UTC).date().isoformat()}; {total} tests",
        status=status,  # completed, interrupted, failed, partial (a merge of some shards, --allow-partial)
    )


# -- telemetry into the rows ------------------------------------------------------------------
def segment_energy(
    rows: Sequence[ResultRow], energy_series: Sequence[tuple[int, float]], gpu_summary: GpuSummary | None
) -> tuple[dict[str, float], float | None]:
    """Per-task energy within one segment: the segment's energy series apportioned over the
    windows of the executions it ran (they sum to the segment's total), and g CO2e per joule."""
    from .collector.documents import apportion_energy

    if not energy_series or gpu_summary is None or not gpu_summary.gpu_available:
        return {}, None
    total_j = gpu_summary.energy_joules
    windows = {r.test_case_uid: w for r in rows if (w := r.window) is not None}
    shares = apportion_energy(energy_series, windows, total_j)
    return {uid: round(j, 6) for uid, j in shares.items()}, (gpu_summary.co2_grams / total_j if total_j else 0.0)


@dataclass(slots=True)
class RowsReport:
    """What enriching the rows found (for metadata `telemetry.rows`)."""

    rows_without_trace: list[str] = field(default_factory=list)
    lost_with_killed_segment: list[str] = field(default_factory=list)
    energy_attributed: bool = False
    energy_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_without_trace": self.rows_without_trace,
            "lost_with_killed_segment": self.lost_with_killed_segment,
            "energy_attributed": self.energy_attributed,
            "energy_rows": self.energy_rows,
        }


def enrich_rows(rows: Sequence[ResultRow], union: RunUnion) -> tuple[list[ResultRow], RowsReport]:
    """Per-task figures from the run's traces (root-span duration, model-span tokens, cost) and
    each task's energy and CO2 as its segment apportioned them."""
    by_trace = {d.trace_id: d for d in union.traces}
    by_uid: dict[str, TraceDoc] = {uid: d for d in union.traces for uid in d.test_case_uids}
    executed_by_finished = {uid for s in union.segments if s.status not in ("running", "killed") for uid in s.executed}
    report = RowsReport(energy_attributed=bool(union.task_energy_j))
    out: list[ResultRow] = []
    for row in rows:
        changes: dict[str, Any] = {}
        doc = by_trace.get(row.trace_id or "") or by_uid.get(row.test_case_uid)
        if doc is None:
            if row.trace_id:
                report.rows_without_trace.append(row.test_case_uid)
                if row.test_case_uid not in executed_by_finished:
                    report.lost_with_killed_segment.append(row.test_case_uid)
        else:
            changes.update(trace_id=doc.trace_id, span_id=doc.root_span_id, execution_time_ms=round(doc.total_duration_ms, 3))
            if doc.model_calls:
                changes.update(prompt_tokens=doc.prompt_tokens, completion_tokens=doc.completion_tokens, total_tokens=doc.total_tokens)
            changes["cost_usd"] = task_cost(
                row.provider,
                row.model,
                changes.get("prompt_tokens", row.prompt_tokens),
                changes.get("completion_tokens", row.completion_tokens),
            )
            changes["enhanced_trace_info"] = _trace_info(
                doc.trace_id,
                doc.root_span_id,
                int(changes.get("total_tokens", row.total_tokens)),
                changes["execution_time_ms"],
                changes["cost_usd"],
                doc.span_count,
            )
        joules = union.task_energy_j.get(row.test_case_uid)
        changes["energy_j"] = None if joules is None else round(joules, 6)
        co2 = union.task_co2_g.get(row.test_case_uid)
        changes["co2_g"] = None if co2 is None else round(co2, 9)
        if joules is not None:
            report.energy_rows += 1
        out.append(row.with_(**changes))
    return out, report
