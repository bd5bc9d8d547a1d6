"""Local outputs of a run: the run folder, the checkpoint, results, leaderboard row, metadata.

Everything is written atomically (temp file in the same folder, fsync, rename), so a crash never
leaves half a file. The checkpoint (`checkpoint.jsonl`) gets one line per finished execution,
flushed and fsynced before the next is reported: `--resume RUN_DIR` reads it back, ignoring a
torn last line, and runs only what is missing.
Column names follow SMOLTRACE's so existing consumers (TraceMind UI) keep working.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic  # noqa: F401 - re-exported for evaluate and merge
from .costs import task_cost
from .executor import TaskResult

RESULTS = "results.json"
TRACES = "traces.json"
METRICS = "metrics.json"
METRIC_ROWS = "metrics_rows.json"
LEADERBOARD_ROW = "leaderboard_row.json"
METADATA = "metadata.json"
CHECKPOINT = "checkpoint.jsonl"
LEADERBOARD_SCHEMA_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_dir_name(model: str, agent_type: str, started: datetime) -> str:
    """`<model>_<agent type>_<UTC YYYYmmdd_HHMMSS>`; a local model folder is named by its last part."""
    if ("/" in model or os.sep in model) and Path(model).expanduser().exists():
        model = Path(model).expanduser().resolve().name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")[:80] or "model"
    return f"{safe}_{agent_type}_{started.astimezone(UTC).strftime('%Y%m%d_%H%M%S')}"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


# -- result rows ------------------------------------------------------------------------------
def result_row(result: TaskResult, model: str, run_id: str, provider: str) -> dict[str, Any]:
    """One results.json row: SMOLTRACE's columns, then ours."""
    e = result.execution
    task = e.task
    cost = task_cost(provider, model, result.prompt_tokens, result.completion_tokens)
    trace_info = {
        "trace_id": result.trace_id,
        "root_span_id": result.span_id,
        "total_tokens": result.total_tokens,
        "duration_ms": round(result.duration_ms, 3),
        "cost_usd": cost,
        "span_count": 0,
    }
    return {
        "model": model,
        "evaluation_date": result.finished_at,
        "task_id": task.id,
        "test_case_uid": e.uid,
        "agent_type": e.agent_type,
        "difficulty": task.difficulty,
        "prompt": task.prompt,
        "success": result.score.success,
        "tool_called": result.score.tool_called,
        "correct_tool": result.score.correct_tool,
        "final_answer_called": result.score.final_answer_called,
        "response_correct": result.score.response_correct,
        "tools_used": list(result.tools_used),
        "steps": result.steps,
        "response": result.response,
        "error": result.error,
        "trace_id": result.trace_id,
        "span_id": result.span_id,
        "run_id": run_id,
        "execution_time_ms": round(result.duration_ms, 3),
        "total_tokens": result.total_tokens,
        "cost_usd": cost,
        "enhanced_trace_info": json.dumps(trace_info),
        # ours
        "provider": provider,
        "test_index": e.index,
        "expected_tool": task.expected_tool,
        "expected_tool_calls": task.expected_tool_calls,
        "expected_keywords": list(task.expected_keywords),
        "expected_answer": None if task.expected_answer is None else str(task.expected_answer),
        "failure_reason": result.score.reason,
        "error_type": result.error_type,
        "attempts": result.attempts,
        "retries": result.retries,
        "duration_ms": round(result.duration_ms, 3),
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "start_time_unix_nano": result.start_unix_ns,
        "end_time_unix_nano": result.end_unix_ns,
    }


def order_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per test_case_uid (the last written wins), in plan order."""
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique[row["test_case_uid"]] = dict(row)
    return sorted(unique.values(), key=lambda r: (r.get("test_index", 0), r["test_case_uid"]))


# -- checkpoint -------------------------------------------------------------------------------
class Checkpoint:
    """Append-only journal of finished executions (one JSON row per line)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / CHECKPOINT
        self._lock = threading.Lock()

    def append(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write: that execution runs again
            if isinstance(row, dict) and "test_case_uid" in row:
                rows.append(row)
        return rows


# -- leaderboard row --------------------------------------------------------------------------
def _avg(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# The leaderboard's GPU columns: one rule each, over the run's GPUs (summary["devices"], each
# with its own avg/max). Averages and maxima are per GPU; a total only where the name says so
# (energy, CO2 and cost are the run's, over all its GPUs). The per-GPU values stay in the metrics
# dataset and metadata.json. Stated in the leaderboard's dataset card and README.
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
    devices = [d for d in (summary or {}).get("devices") or [] if isinstance(d, Mapping) and not d.get("failed")]
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
    rows: Sequence[Mapping[str, Any]],
    *,
    run_id: str,
    model: str,
    agent_type: str,
    provider: str,
    dataset_used: str,
    submitted_by: str,
    grouping: Mapping[str, str | None],
    datasets: Mapping[str, str],
    gpu_summary: Mapping[str, Any] | None,
    timestamp: datetime,
    status: str = "completed",
) -> dict[str, Any]:
    total = len(rows)
    passed = sum(1 for r in rows if r.get("success"))
    durations = [float(r.get("duration_ms") or 0.0) for r in rows]
    tokens = [int(r.get("total_tokens") or 0) for r in rows]
    costs = [r.get("cost_usd") for r in rows]
    priced = bool(rows) and all(c is not None for c in costs)  # an unknown price is not a price of 0
    measured = bool(gpu_summary and gpu_summary.get("gpu_available"))  # else energy and CO2 are unknown
    return {
        "schema_version": LEADERBOARD_SCHEMA_VERSION,
        "run_id": run_id,
        "model": model,
        "agent_type": agent_type,
        "provider": provider,
        "timestamp": iso(timestamp),
        "submitted_by": submitted_by,
        "use_case": grouping.get("use_case"),
        "team": grouping.get("team"),
        "purpose": grouping.get("purpose"),
        "suite_version": grouping.get("suite_version"),
        "results_dataset": datasets.get("results"),
        "traces_dataset": datasets.get("traces"),
        "metrics_dataset": datasets.get("metrics"),
        "dataset_used": dataset_used,
        "total_tests": total,
        "successful_tests": passed,
        "failed_tests": total - passed,
        "success_rate": round(100.0 * passed / total, 2) if total else 0.0,
        "avg_steps": round(_avg([float(r.get("steps") or 0) for r in rows]), 2),
        "avg_duration_ms": round(_avg(durations), 3),
        "total_duration_ms": round(sum(durations), 3),
        "total_tokens": sum(tokens),
        "avg_tokens_per_test": int(_avg(tokens)),
        "total_cost_usd": round(sum(float(c) for c in costs), 6) if priced else None,
        "avg_cost_per_test_usd": round(_avg([float(c) for c in costs]), 6) if priced else None,
        "co2_emissions_g": round(float(gpu_summary.get("co2_grams", 0.0)), 4) if measured and gpu_summary else None,
        "power_cost_total_usd": round(float(gpu_summary.get("power_cost_usd", 0.0)), 6) if measured and gpu_summary else None,
        "energy_j": round(float(gpu_summary.get("energy_joules", 0.0)), 3) if measured and gpu_summary else None,
        **gpu_columns(gpu_summary),  # one rule per column: GPU_COLUMN_RULES
        "notes": f"Evaluation on {timestamp.astimezone(UTC).date().isoformat()}; {total} tests",
        "status": status,  # completed, interrupted, failed, partial (a merge of some shards, --allow-partial)
    }


# -- telemetry into the rows ------------------------------------------------------------------
def enrich_rows(
    rows: list[dict[str, Any]],
    traces: Sequence[Mapping[str, Any]],
    energy_series: Sequence[tuple[int, float]],
    gpu_summary: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Per-task figures from the trace (root-span duration, model-span tokens, cost) and the
    task's share of the GPU energy and CO2. Returns what could not be filled (for metadata)."""
    from .collector.documents import apportion_energy

    by_trace = {d["trace_id"]: d for d in traces}
    by_uid = {uid: d for d in traces for uid in d.get("test_case_uids", [])}
    missing_traces = []
    for row in rows:
        doc = by_trace.get(row.get("trace_id") or "") or by_uid.get(row["test_case_uid"])
        if doc is None:
            if row.get("trace_id"):
                missing_traces.append(row["test_case_uid"])
            continue
        row["trace_id"] = doc["trace_id"]
        row["span_id"] = doc["root_span_id"]
        row["execution_time_ms"] = round(doc["total_duration_ms"], 3)
        if doc["model_calls"]:
            row["prompt_tokens"] = doc["prompt_tokens"]
            row["completion_tokens"] = doc["completion_tokens"]
            row["total_tokens"] = doc["total_tokens"]
        row["cost_usd"] = task_cost(
            row.get("provider") or "", row.get("model") or "", row.get("prompt_tokens"), row.get("completion_tokens")
        )
        row["enhanced_trace_info"] = json.dumps(
            {
                "trace_id": doc["trace_id"],
                "root_span_id": doc["root_span_id"],
                "total_tokens": row["total_tokens"],
                "duration_ms": row["execution_time_ms"],
                "cost_usd": row["cost_usd"],
                "span_count": doc["span_count"],
            }
        )
    total_j = float(gpu_summary.get("energy_joules", 0.0)) if gpu_summary else 0.0
    co2_per_j = float(gpu_summary.get("co2_grams", 0.0)) / total_j if gpu_summary and total_j else 0.0
    windows = {
        r["test_case_uid"]: (int(r["start_time_unix_nano"]), int(r["end_time_unix_nano"])) for r in rows if r.get("start_time_unix_nano")
    }
    measured = bool(energy_series) and bool(gpu_summary and gpu_summary.get("gpu_available"))
    shares = apportion_energy(energy_series, windows, total_j) if measured else {}
    for row in rows:
        joules = shares.get(row["test_case_uid"])
        row["energy_j"] = None if joules is None else round(joules, 6)
        row["co2_g"] = None if joules is None else round(joules * co2_per_j, 9)
    return {"rows_without_trace": missing_traces, "energy_attributed": measured, "energy_rows": len(shares)}
