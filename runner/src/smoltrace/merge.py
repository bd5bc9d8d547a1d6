"""`smoltrace-eval merge OUT_DIR SHARD_DIR...`: one run from the folders of its shards.

Shards of a run (`--shard I/N`, the same `--run-id`) each write a run folder. Merging checks
that they belong together (same run id, model, provider, agent type, tasks and shard count, no
shard twice), concatenates results (in the unsharded plan's order), traces, GPU metrics and
rows, recomputes the leaderboard row, sums the GPU summaries, and writes one run folder with
the same files as an unsharded run (plus `merged_from`). The shard folders are left as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .outputs import (
    LEADERBOARD_ROW,
    METADATA,
    METRIC_ROWS,
    METRICS,
    RESULTS,
    TRACES,
    iso,
    leaderboard_row,
    order_rows,
    read_json,
    write_json_atomic,
)

SAME = ("run_id", "model", "provider", "agent_type", "dataset_used", "dataset_sha256")


class MergeError(ValueError):
    pass


def _load(run_dir: Path) -> dict[str, Any]:
    try:
        meta = read_json(run_dir / METADATA)
        results = read_json(run_dir / RESULTS)
    except (OSError, ValueError) as err:
        raise MergeError(f"{run_dir}: not a finished run folder ({err})") from err

    def optional(name: str, default: Any) -> Any:
        path = run_dir / name
        return read_json(path) if path.exists() else default

    return {
        "dir": run_dir,
        "meta": meta,
        "results": results,
        "traces": optional(TRACES, []),
        "metrics": optional(METRICS, {"resourceMetrics": []}),
        "metric_rows": optional(METRIC_ROWS, []),
    }


def combine_gpu_summaries(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Energy, CO2 and cost add up; stats combine by sample counts (avg weighted, min/max kept)."""
    present = [s for s in summaries if s]
    if not present:
        return None
    out: dict[str, Any] = {
        "gpu_available": any(s.get("gpu_available") for s in present),
        "energy_joules": sum(float(s.get("energy_joules", 0.0)) for s in present),
        "co2_grams": sum(float(s.get("co2_grams", 0.0)) for s in present),
        "power_cost_usd": sum(float(s.get("power_cost_usd", 0.0)) for s in present),
        "duration_seconds": sum(float(s.get("duration_seconds", 0.0)) for s in present),
        "sample_count": sum(int(s.get("sample_count", 0)) for s in present),
        "energy_method": ",".join(sorted({str(s.get("energy_method", "")) for s in present if s.get("energy_method")})),
        "shards": len(present),
    }
    for key in ("utilization_percent", "memory_used_bytes", "temperature_celsius", "power_watts"):
        parts = [s.get(key) or {} for s in present if (s.get(key) or {}).get("count")]
        if not parts:
            continue
        count = sum(int(p["count"]) for p in parts)
        out[key] = {
            "avg": sum(float(p["avg"]) * int(p["count"]) for p in parts) / count,
            "min": min(float(p["min"]) for p in parts),
            "max": max(float(p["max"]) for p in parts),
            "count": count,
        }
    return out


def merge_runs(out_dir: Path, shard_dirs: Sequence[Path], allow_partial: bool = False) -> Path:
    """Merge; a missing shard or one that did not complete writes nothing (MergeError) unless
    `allow_partial`, which marks the merged run partial (metadata, leaderboard status, report)."""
    if not shard_dirs:
        raise MergeError("no shard folders given")
    shards = [_load(Path(d)) for d in shard_dirs]
    first = shards[0]["meta"]
    for shard in shards[1:]:
        for key in SAME:
            if shard["meta"].get(key) != first.get(key):
                raise MergeError(f"{shard['dir']}: {key} {shard['meta'].get(key)!r} differs from {first.get(key)!r} in {shards[0]['dir']}")
    counts = {(s["meta"].get("shard") or {}).get("count") for s in shards}
    if len(counts) != 1:
        raise MergeError(f"the shards disagree on the shard count: {sorted(map(str, counts))}")
    indices = [(s["meta"].get("shard") or {}).get("index") for s in shards]
    if len(set(indices)) != len(indices):
        raise MergeError(f"a shard is given twice (indices {indices})")
    (count,) = counts
    missing = sorted(set(range(count)) - set(indices)) if isinstance(count, int) else []
    unfinished = [f"{s['dir']} ({s['meta'].get('status') or 'unknown'})" for s in shards if s["meta"].get("status") != "completed"]
    partial = bool(missing or unfinished)
    if partial and not allow_partial:
        problems = ([f"shards missing: {missing}"] if missing else []) + ([f"not completed: {', '.join(unfinished)}"] if unfinished else [])
        raise MergeError(
            f"{'; '.join(problems)}; nothing written (resume or rerun those shards, or merge with --allow-partial to mark the run partial)"
        )

    rows = order_rows([row for s in shards for row in s["results"]])
    traces = sorted((doc for s in shards for doc in s["traces"]), key=lambda d: (d.get("start_time", 0), d.get("trace_id", "")))
    metric_rows = sorted(
        (r for s in shards for r in s["metric_rows"]), key=lambda r: (int(r.get("timestamp_unix_nano") or 0), str(r.get("gpu_id")))
    )
    resource_metrics = [rm for s in shards for rm in s["metrics"].get("resourceMetrics", [])]
    gpu = combine_gpu_summaries([(s["meta"].get("gpu_metrics") or {}).get("summary") for s in shards])

    out_dir.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(UTC)
    meta = dict(first)
    config = dict(meta.get("config") or {})
    config.pop("shard", None)
    meta.update(
        config=config,
        shard=None,
        run_dir=str(out_dir),
        status="partial" if partial else "completed",
        partial={"missing_shards": missing, "not_completed": unfinished} if partial else None,
        started_at=min(str(s["meta"].get("started_at", "")) for s in shards),
        finished_at=iso(finished),
        num_results=len(rows),
        passed=sum(1 for r in rows if r.get("success")),
        merged_from=[{"dir": str(s["dir"]), "shard": s["meta"].get("shard"), "status": s["meta"].get("status")} for s in shards],
        missing_shards=missing,
        gpu_metrics={
            **(first.get("gpu_metrics") or {}),
            "summary": gpu,
            "per_shard": [(s["meta"].get("gpu_metrics") or {}).get("summary") for s in shards],
        },
    )
    meta.pop("timings", None)
    write_json_atomic(out_dir / RESULTS, rows)
    write_json_atomic(out_dir / TRACES, traces)
    write_json_atomic(out_dir / METRICS, {"run_id": first.get("run_id"), "resourceMetrics": resource_metrics})
    write_json_atomic(out_dir / METRIC_ROWS, metric_rows)
    board = leaderboard_row(
        rows,
        run_id=str(first.get("run_id")),
        model=str(first.get("model")),
        agent_type=str(first.get("agent_type")),
        provider=str(first.get("provider")),
        dataset_used=str(first.get("dataset_used")),
        submitted_by="local",
        grouping={k: config.get(k) for k in ("use_case", "team", "purpose", "suite_version")},
        datasets={
            "results": f"local:{out_dir / RESULTS}",
            "traces": f"local:{out_dir / TRACES}" if traces else "local:none",
            "metrics": f"local:{out_dir / METRICS}",
        },
        gpu_summary=gpu,
        timestamp=finished,
        status="partial" if partial else "completed",
    )
    write_json_atomic(out_dir / LEADERBOARD_ROW, board)
    write_json_atomic(out_dir / METADATA, meta)
    try:
        from .report import write_report

        write_report(out_dir)
    except Exception:  # noqa: BLE001 - the report is a view of the files written above
        pass
    return out_dir
