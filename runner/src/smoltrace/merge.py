"""`smoltrace-eval merge OUT_DIR SHARD_DIR...`: one run from the folders of its shards.

Shards of a run (`--shard I/N`, the same `--run-id`) each write a run folder. Merging checks
that they belong together (same run id, model, provider, agent type, tasks and shard count, no
shard twice), copies every shard's segments into the merged folder, and writes the run's files
from their union (`RunFolder.union`: traces and GPU rows of every segment, energy summed, gauges
weighted by time, per-task energy as each segment apportioned it) with the same write path as an
unsharded run (`RunFolder.write_final`), plus `merged_from`. The shard folders are left as they
are. A shard never publishes; `merge` publishes the merged run (see cli.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .integrity import check_run
from .outputs import enrich_rows, leaderboard_row
from .records import GpuSummary, ResultRow, RunMetadata, order_rows
from .run_folder import RunFolder, RunFolderError, iso, utc_now

SAME = ("run_id", "model", "provider", "agent_type", "dataset_used", "dataset_sha256")


class MergeError(ValueError):
    pass


def _open(path: Path) -> tuple[RunFolder, RunMetadata, list[ResultRow]]:
    try:
        folder = RunFolder.open(path, finished=True)
        return folder, folder.read_metadata(), folder.read_results()
    except RunFolderError as err:
        raise MergeError(f"{path}: not a finished run folder ({err})") from err


def combine_gpu_summaries(summaries: Sequence[GpuSummary | None]) -> GpuSummary | None:
    """Kept for callers of the earlier API: the rule lives in records.combine_gpu_summaries."""
    from .records import combine_gpu_summaries as combine

    return combine(summaries)


def merge_runs(out_dir: Path, shard_dirs: Sequence[Path], allow_partial: bool = False) -> Path:
    """Merge; a missing shard or one that did not complete writes nothing (MergeError) unless
    `allow_partial`, which marks the merged run partial (metadata, leaderboard status, report)."""
    if not shard_dirs:
        raise MergeError("no shard folders given")
    shards = [_open(Path(d)) for d in shard_dirs]
    first_dir, first, _ = shards[0]
    for folder, meta, _ in shards[1:]:
        for key in SAME:
            if getattr(meta, key) != getattr(first, key):
                raise MergeError(f"{folder.path}: {key} {getattr(meta, key)!r} differs from {getattr(first, key)!r} in {first_dir.path}")
    counts = {(meta.shard or {}).get("count") for _, meta, _ in shards}
    if len(counts) != 1:
        raise MergeError(f"the shards disagree on the shard count: {sorted(map(str, counts))}")
    indices = [(meta.shard or {}).get("index") for _, meta, _ in shards]
    if len(set(indices)) != len(indices):
        raise MergeError(f"a shard is given twice (indices {indices})")
    (count,) = counts
    missing = sorted(set(range(count)) - {i for i in indices if i is not None}) if isinstance(count, int) else []
    unfinished = [f"{folder.path} ({meta.status or 'unknown'})" for folder, meta, _ in shards if meta.status != "completed"]
    partial = bool(missing or unfinished)
    if partial and not allow_partial:
        problems = ([f"shards missing: {missing}"] if missing else []) + ([f"not completed: {', '.join(unfinished)}"] if unfinished else [])
        raise MergeError(
            f"{'; '.join(problems)}; nothing written (resume or rerun those shards, or merge with --allow-partial to mark the run partial)"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    out = RunFolder(out_dir)
    out.remove_segments()  # merging again replaces the earlier merge
    for folder, _, _ in shards:
        out.add_segments(folder.segment_data(), source=str(folder.path))
    union = out.union()
    rows, rows_report = enrich_rows(order_rows([row for _, _, rows in shards for row in rows]), union)

    finished = utc_now()
    config = dict(first.config)
    config.pop("shard", None)
    planned = [meta.num_planned for _, meta, _ in shards]
    per_shard = [meta.gpu_summary for _, meta, _ in shards]
    meta = first.with_(
        config=config,
        shard=None,
        run_dir=str(out_dir),
        status="partial" if partial else "completed",
        partial={"missing_shards": missing, "not_completed": unfinished} if partial else None,
        started_at=min(meta.started_at for _, meta, _ in shards),
        finished_at=iso(finished),
        num_results=len(rows),
        num_planned=None if missing or None in planned else sum(p for p in planned if p is not None),
        passed=sum(1 for r in rows if r.success),
        merged_from=[{"dir": str(folder.path), "shard": meta.shard, "status": meta.status} for folder, meta, _ in shards],
        missing_shards=missing,
        gpu_metrics={
            **first.gpu_metrics,
            "summary": union.gpu_summary.to_json() if union.gpu_summary else None,
            "per_shard": [s.to_json() if s else None for s in per_shard],
        },
        telemetry={**first.telemetry, "rows": rows_report.as_dict()},
        segments=union.segments,
        timings={},
        published=None,
    )
    integrity = check_run(
        rows, union.traces, meta, union.gpu_summary, traced=union.traced, lost_with_killed_segment=rows_report.lost_with_killed_segment
    )
    meta = meta.with_(integrity=integrity)
    board = leaderboard_row(
        rows,
        run_id=first.run_id,
        model=first.model,
        agent_type=first.agent_type,
        provider=first.provider,
        dataset_used=first.dataset_used,
        submitted_by="local",
        grouping={k: config.get(k) for k in ("use_case", "team", "purpose", "suite_version")},
        datasets=out.local_datasets(bool(union.traces)),
        gpu_summary=union.gpu_summary,
        timestamp=finished,
        status="partial" if partial else "completed",
    )
    out.write_final(rows, union, meta, board)
    return out_dir
