"""`RunFolder`: the one owner of a run folder — file names, atomic writes, the checkpoint, segments.

A run folder holds:

    metadata.json         RunMetadata: what the run is, its status, segments, integrity, notices
    checkpoint.jsonl      one ResultRow per finished execution, appended and fsynced (resume reads it)
    results.json          ResultRow list, plan order           } the run's files: written from the
    traces.json           TraceDoc list                        } union of the segments by
    metrics.json          OTLP JSON of the GPU metrics         } `RunFolder.union()` and
    metrics_rows.json     MetricRow list                       } `write_final()`, never from one
    leaderboard_row.json  LeaderboardRow                       } process's memory alone
    report.html           the report (a view of the files above)
    publish.json          what the last successful publish sent (datasets, commits, rows)
    hub_datasets.json     the Hub dataset names chosen for the run (once; reused on re-publish)
    segments/NNN/         one per process that worked on the run (the first, every --resume,
                          every shard merged in): segment.json (SegmentInfo: executions, GPU
                          summary, per-task energy, timings), traces.json, metrics.json,
                          metrics_rows.json

Each process writes its own segment when it ends (Ctrl-C and SIGTERM included); a segment whose
`segment.json` still says `running` when the next process starts was killed (SIGKILL, power
loss): its spans and GPU samples died with it, and the executions it finished (kept by the
checkpoint) are flagged in metadata as having lost their trace. Everything is written atomically
(temp file, fsync, rename): a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import ValidationError

from .atomic import json_list_text, write_json_atomic, write_text_atomic
from .records import (
    GpuSummary,
    LeaderboardRow,
    MetricRow,
    R,
    Record,
    ResultRow,
    RunMetadata,
    SegmentInfo,
    SegmentSettings,
    TraceDoc,
    combine_gpu_summaries,
    fold_segment_settings,
    order_rows,
    salvage,
)

RESULTS = "results.json"
TRACES = "traces.json"
METRICS = "metrics.json"
METRIC_ROWS = "metrics_rows.json"
LEADERBOARD_ROW = "leaderboard_row.json"
METADATA = "metadata.json"
CHECKPOINT = "checkpoint.jsonl"
REPORT = "report.html"
PUBLISH = "publish.json"
HUB_NAMES = "hub_datasets.json"
SEGMENTS = "segments"
SEGMENT = "segment.json"


class RunFolderError(ValueError):
    """A run folder that cannot be read as one (one line for the user)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_dir_name(model: str, agent_type: str, started: datetime, shard: tuple[int, int] | None = None) -> str:
    """`<model>_<agent type>_<UTC YYYYmmdd_HHMMSS>[_shard-I-of-N]`; a local model folder is named by its last part."""
    if ("/" in model or os.sep in model) and Path(model).expanduser().exists():
        model = Path(model).expanduser().resolve().name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")[:80] or "model"
    name = f"{safe}_{agent_type}_{started.astimezone(UTC).strftime('%Y%m%d_%H%M%S')}"
    return f"{name}_shard-{shard[0]}-of-{shard[1]}" if shard else name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except OSError as err:
        raise RunFolderError(f"{path}: cannot be read ({err.strerror or err})") from err
    except ValueError as err:
        raise RunFolderError(f"{path}: not valid JSON ({err})") from err


def _validate(kind: type[R], value: Any, where: Path) -> R:
    try:
        return kind.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise RunFolderError(f"{where}: not a valid {kind.__name__} ({loc}: {first.get('msg')})") from err


def _validate_list(kind: type[R], value: Any, where: Path) -> list[R]:
    if not isinstance(value, list):
        raise RunFolderError(f"{where}: expected a JSON list")
    return [_validate(kind, item, where) for item in value]


# -- checkpoint -------------------------------------------------------------------------------
class Checkpoint:
    """Append-only journal of finished executions (one ResultRow per line, fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._ends_clean = False

    def _last_byte_is_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def append(self, row: ResultRow) -> None:
        line = row.to_json_text() + "\n"  # one line: pydantic escapes newlines inside strings
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            if not self._ends_clean:  # a line torn by a kill stays on its own line, unread
                handle.write("\n" if self.offset() and not self._last_byte_is_newline() else "")
                self._ends_clean = True
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def offset(self) -> int:
        """Where the journal ends now (a segment's rows are the lines after its start offset)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def load(self, after: int = 0) -> list[ResultRow]:
        """Finished executions in plan order, one per uid (the last line wins); a line torn by a
        kill is skipped (it runs again). `after`: only lines past that offset."""
        if not self.path.exists():
            return []
        rows: list[ResultRow] = []
        with open(self.path, "rb") as handle:
            handle.seek(after)
            data = handle.read().decode("utf-8", errors="replace")
        for line in data.splitlines():
            try:
                rows.append(ResultRow.model_validate_json(line))
            except (ValidationError, ValueError):
                continue
        return order_rows(rows)


# -- segments ---------------------------------------------------------------------------------
@dataclass(slots=True)
class SegmentData:
    """What one segment collected."""

    info: SegmentInfo
    traces: list[TraceDoc] = field(default_factory=list)
    resource_metrics: list[dict[str, Any]] = field(default_factory=list)
    metric_rows: list[MetricRow] = field(default_factory=list)


@dataclass(slots=True)
class RunUnion:
    """The run's telemetry: the union of its segments (computed by `RunFolder.union` only)."""

    traces: list[TraceDoc]
    resource_metrics: list[dict[str, Any]]
    metric_rows: list[MetricRow]
    gpu_summary: GpuSummary | None
    task_energy_j: dict[str, float]
    task_co2_g: dict[str, float]
    segments: list[SegmentInfo]
    traced: bool

    @property
    def killed(self) -> list[SegmentInfo]:
        return [s for s in self.segments if s.status in ("killed", "running")]

    def executed(self) -> set[str]:
        return {uid for s in self.segments for uid in s.executed}


@dataclass(slots=True)
class RunContents:
    """What a run folder holds, read as far as it goes, for the views of a run (the report,
    compare, leaderboard): typed records, never raw dicts. A missing file is empty; a file that
    cannot be read is one line in `problems`; a damaged or old record is salvaged
    (`records.salvage`) and said so. A run that did not finish writing its files (status
    `running`: still going, or killed) is read from its checkpoint and the union of its segments."""

    path: Path
    metadata: RunMetadata | None = None
    leaderboard: LeaderboardRow | None = None
    rows: list[ResultRow] = field(default_factory=list)
    rows_source: str = ""  # RESULTS, CHECKPOINT, or "" when there are none
    traces: list[TraceDoc] = field(default_factory=list)
    metric_rows: list[MetricRow] = field(default_factory=list)
    gpu_summary: GpuSummary | None = None
    segments: list[SegmentInfo] = field(default_factory=list)
    from_segments: bool = False  # traces, GPU rows and summary computed by RunFolder.union()
    problems: list[str] = field(default_factory=list)


_Stat = tuple[int, int, int]


def _stat(path: Path) -> _Stat | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class RunFolder:
    """A run folder on disk. Every reader and writer of run files goes through it.

    The records a folder object wrote are kept with the file's identity (inode, size, mtime):
    reading that file back through the same object, as the end of a run does (the union of the
    segments, then the report), gives the same records without parsing megabytes of JSON again;
    a file changed or replaced since is read from disk."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.checkpoint = Checkpoint(self.path / CHECKPOINT)
        self._written: dict[Path, tuple[_Stat, Record | tuple[Record, ...]]] = {}

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- creating and opening ---------------------------------------------------------------
    @classmethod
    def create(cls, output_dir: Path | str, name: str) -> RunFolder:
        """A new, empty folder `output_dir/name` (`name_2`, `name_3`, ... when taken)."""
        base = Path(output_dir)
        path, suffix = base / name, 1
        while True:
            try:
                path.mkdir(parents=True)
                return cls(path)
            except FileExistsError:
                suffix += 1
                path = base / f"{name}_{suffix}"

    @classmethod
    def open(cls, path: Path | str, *, finished: bool = False) -> RunFolder:
        """An existing run folder; `finished`: results.json must be there too."""
        folder = cls(path)
        if not (folder.path / METADATA).is_file():
            raise RunFolderError(f"{folder.path}: not a smoltrace run folder (no {METADATA})")
        if finished and not (folder.path / RESULTS).is_file():
            raise RunFolderError(f"{folder.path}: not a finished smoltrace run folder ({METADATA} and {RESULTS} are needed)")
        return folder

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.path / name, data)

    # -- records as written -------------------------------------------------------------------
    def _write_records(self, path: Path, records: Sequence[Record]) -> None:
        """A list file of records (one per line), remembered as written."""
        write_text_atomic(path, json_list_text(r.to_json_text() for r in records))
        self._remember(path, tuple(records))

    def _write_record(self, path: Path, record: Record) -> None:
        write_json_atomic(path, record.to_json())
        self._remember(path, record)

    def _remember(self, path: Path, value: Record | tuple[Record, ...]) -> None:
        stat = _stat(path)
        if stat is not None:
            self._written[path] = (stat, value)

    def _recall(self, path: Path, kind: type[R]) -> list[R] | None:
        """The records this object wrote to `path` when the file is still the one it wrote."""
        kept = self._written.get(path)
        if kept is None:
            return None
        if _stat(path) != kept[0]:
            del self._written[path]
            return None
        value = kept[1]
        items = value if isinstance(value, tuple) else (value,)
        if not all(type(r) is kind for r in items):
            return None
        return cast(list[R], list(items))

    def _records(self, path: Path, kind: type[R]) -> list[R]:
        """A list file of records, strictly (RunFolderError when it is not one)."""
        kept = self._recall(path, kind)
        return kept if kept is not None else _validate_list(kind, _read_json(path), path)

    def _record(self, path: Path, kind: type[R]) -> R:
        kept = self._recall(path, kind)
        return kept[0] if kept else _validate(kind, _read_json(path), path)

    def read_json(self, name: str, default: Any = None) -> Any:
        path = self.path / name
        if not path.exists():
            return default
        return _read_json(path)

    # -- records ------------------------------------------------------------------------------
    def read_metadata(self) -> RunMetadata:
        return self._record(self.path / METADATA, RunMetadata)

    def write_metadata(self, meta: RunMetadata) -> None:
        self._write_record(self.path / METADATA, meta)

    def read_results(self) -> list[ResultRow]:
        return self._records(self.path / RESULTS, ResultRow)

    def write_results(self, rows: Sequence[ResultRow]) -> None:
        self._write_records(self.path / RESULTS, rows)

    def read_rows(self) -> list[ResultRow]:
        """results.json, or the checkpoint when the run never wrote results (killed)."""
        return self.read_results() if self.has(RESULTS) else self.checkpoint.load()

    def read_traces(self) -> list[TraceDoc]:
        return self._records(self.path / TRACES, TraceDoc) if self.has(TRACES) else []

    def read_metric_rows(self) -> list[MetricRow]:
        return self._records(self.path / METRIC_ROWS, MetricRow) if self.has(METRIC_ROWS) else []

    def read_metrics_json(self) -> dict[str, Any]:
        value = self.read_json(METRICS, {"resourceMetrics": []})
        if not isinstance(value, dict):
            raise RunFolderError(f"{self.path / METRICS}: expected a JSON object")
        return value

    def read_leaderboard(self) -> LeaderboardRow | None:
        return self._record(self.path / LEADERBOARD_ROW, LeaderboardRow) if self.has(LEADERBOARD_ROW) else None

    # -- reading for views (lenient) ------------------------------------------------------------
    def _lenient_json(self, name: str, kind: type[list[Any]] | type[dict[str, Any]], problems: list[str]) -> Any:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            value = json.loads(path.read_text("utf-8", errors="replace"))
        except (OSError, ValueError) as exc:
            problems.append(f"{name} could not be read ({type(exc).__name__}); its part of the report is empty")
            return None
        if not isinstance(value, kind):
            problems.append(f"{name} does not hold a JSON {'list' if kind is list else 'object'}; ignored")
            return None
        return value

    def read_record_lenient(self, name: str, kind: type[R], problems: list[str]) -> R | None:
        """One record file (metadata, leaderboard row) as far as it goes; None when missing,
        empty or unreadable (said in `problems`)."""
        kept = self._recall(self.path / name, kind)
        if kept:
            return kept[0]
        value = self._lenient_json(name, dict, problems)
        if not value:
            return None
        found = salvage(kind, value)
        if found is None:
            return None
        if found.repaired:
            problems.append(f"{name}: fields missing or invalid ({', '.join(found.repaired[:8])}); shown as far as they go")
        return found.record

    def read_list_lenient(self, name: str, kind: type[R], problems: list[str]) -> list[R] | None:
        """A list file (results, traces, metric rows) as far as it goes; None when missing or unreadable."""
        kept = self._recall(self.path / name, kind)
        if kept is not None:
            return kept
        value = self._lenient_json(name, list, problems)
        if value is None:
            return None
        return salvage_list(kind, value, name, problems)

    def contents(self) -> RunContents:
        """Everything the views of a run show (see `RunContents`)."""
        c = RunContents(self.path)
        p = c.problems
        c.metadata = self.read_record_lenient(METADATA, RunMetadata, p)
        c.leaderboard = self.read_record_lenient(LEADERBOARD_ROW, LeaderboardRow, p)
        unfinished = c.metadata is not None and c.metadata.given("status") == "running"
        results = None if unfinished and self.has(CHECKPOINT) else self.read_list_lenient(RESULTS, ResultRow, p)
        if results is None and self.has(CHECKPOINT):
            c.rows, c.rows_source = self.checkpoint.load(), CHECKPOINT
        else:
            c.rows, c.rows_source = results or [], RESULTS if results is not None else ""
        if unfinished and self._segment_dirs():
            try:
                union = self.union()
            except RunFolderError as err:
                p.append(f"the run's segments could not be combined ({err}); showing its top-level files")
            else:
                c.traces, c.metric_rows, c.gpu_summary, c.segments = union.traces, union.metric_rows, union.gpu_summary, union.segments
                c.rows = [
                    r if r.energy_j is not None or r.test_case_uid not in union.task_energy_j else _with_energy(r, union) for r in c.rows
                ]
                c.from_segments = True
                return c
        c.traces = self.read_list_lenient(TRACES, TraceDoc, p) or []
        c.metric_rows = self.read_list_lenient(METRIC_ROWS, MetricRow, p) or []
        if c.metadata is not None:
            found = salvage(GpuSummary, c.metadata.gpu_metrics.get("summary"))
            c.gpu_summary = found.record if found is not None else None
            c.segments = list(c.metadata.segments)
        return c

    # -- segments -----------------------------------------------------------------------------
    def _segment_dirs(self) -> list[Path]:
        root = self.path / SEGMENTS
        if not root.is_dir():
            return []
        return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))

    def segment_data(self) -> list[SegmentData]:
        """Every segment with what it collected; a folder written before segments existed (or a
        shard of such a run) reads as one `legacy` segment made of its top-level files."""
        dirs = self._segment_dirs()
        if not dirs:
            legacy = self._legacy_segment()
            return [legacy] if legacy is not None else []
        out = []
        for d in dirs:
            info = self._record(d / SEGMENT, SegmentInfo)
            traces = self._records(d / TRACES, TraceDoc) if (d / TRACES).is_file() else []
            metrics = _read_json(d / METRICS) if (d / METRICS).is_file() else {}
            rows = self._records(d / METRIC_ROWS, MetricRow) if (d / METRIC_ROWS).is_file() else []
            out.append(SegmentData(info, traces, list((metrics or {}).get("resourceMetrics") or []), rows))
        return out

    def segments(self) -> list[SegmentInfo]:
        return [s.info for s in self.segment_data()]

    def _legacy_segment(self) -> SegmentData | None:
        if not self.has(METADATA) or not (self.has(RESULTS) or self.has(TRACES)):
            return None
        meta = self.read_metadata()
        rows = self.read_rows()
        energy = {r.test_case_uid: r.energy_j for r in rows if r.energy_j is not None}
        co2 = [r.co2_g / r.energy_j for r in rows if r.energy_j and r.co2_g is not None]
        info = SegmentInfo(
            index=0,
            kind="legacy",
            pid=None,
            status=meta.status if meta.status != "running" else "killed",
            started_at=meta.started_at,
            finished_at=meta.finished_at,
            shard=meta.shard,
            executed=[r.test_case_uid for r in rows],
            traced=bool(meta.otel.get("enabled")),
            gpu_summary=meta.gpu_summary,
            task_energy_j=energy,
            co2_per_joule=co2[0] if co2 else None,
        )
        return SegmentData(info, self.read_traces(), list(self.read_metrics_json().get("resourceMetrics") or []), self.read_metric_rows())

    def begin_segment(
        self,
        kind: Literal["first", "resume", "shard"],
        started_at: str,
        shard: dict[str, int] | None = None,
        settings: SegmentSettings | None = None,
    ) -> SegmentInfo:
        """Start this process's segment (`segment.json` says `running` until `end_segment`).
        Segments still `running` from earlier processes were killed: they are marked so. Settings
        an older writer kept in metadata (`segment_settings`) move into their segments."""
        existing = self.segment_data()
        if existing and existing[0].info.kind == "legacy" and not self._segment_dirs():
            self._write_segment(existing[0])  # adopt the top-level files of an older folder
        old_settings = self._old_segment_settings()
        for data in self.segment_data():
            info = data.info
            if info.settings is None and old_settings:
                folded = fold_segment_settings([info.to_json()], old_settings)[0]
                info = _validate(SegmentInfo, folded, self._segment_dir(info.index) / SEGMENT)
            if info.status == "running":
                info = info.with_(status="killed")
            if info is not data.info:
                self._write_info(info)
        index = len(self._segment_dirs())
        info = SegmentInfo(index=index, kind=kind, pid=os.getpid(), status="running", started_at=started_at, shard=shard, settings=settings)
        self._write_info(info)
        return info

    def _old_segment_settings(self) -> list[Any] | None:
        """metadata.json's `segment_settings` list as an older writer left it (None when absent)."""
        raw = self.read_json(METADATA) if self.has(METADATA) else None
        old = raw.get("segment_settings") if isinstance(raw, dict) else None
        return old if isinstance(old, list) else None

    def end_segment(self, data: SegmentData) -> None:
        """Write what this segment collected, then its info (the info last: a kill in between
        leaves `running`, read as killed)."""
        self._write_segment(data)

    def add_segments(self, segments: Iterable[SegmentData], source: str) -> None:
        """Copy another folder's segments in (merge), renumbered after this folder's own."""
        for data in segments:
            index = len(self._segment_dirs())
            status = "killed" if data.info.status == "running" else data.info.status
            self._write_segment(
                SegmentData(
                    data.info.with_(index=index, source=source, status=status), data.traces, data.resource_metrics, data.metric_rows
                )
            )

    def _segment_dir(self, index: int) -> Path:
        return self.path / SEGMENTS / f"{index:03d}"

    def _write_info(self, info: SegmentInfo) -> None:
        self._write_record(self._segment_dir(info.index) / SEGMENT, info)

    def _write_segment(self, data: SegmentData) -> None:
        d = self._segment_dir(data.info.index)
        d.mkdir(parents=True, exist_ok=True)
        run_id = data.traces[0].run_id if data.traces else None
        self._write_records(d / TRACES, data.traces)
        write_json_atomic(d / METRICS, {"run_id": run_id, "resourceMetrics": data.resource_metrics})
        self._write_records(d / METRIC_ROWS, data.metric_rows)
        self._write_info(data.info)

    def remove_segments(self) -> None:
        shutil.rmtree(self.path / SEGMENTS, ignore_errors=True)

    # -- the union ----------------------------------------------------------------------------
    def union(self) -> RunUnion:
        """The run's telemetry from all its segments — the one place it is combined:
        traces of the executions each segment finished, metric rows of every segment, GPU energy summed and gauges weighted by time
        (`combine_gpu_summaries`), per-task energy as each segment apportioned it."""
        data = self.segment_data()
        traces: dict[str, TraceDoc] = {}
        for seg in data:
            executed = set(seg.info.executed)
            for doc in seg.traces:
                # a trace of an execution the segment did not finish (cut short by Ctrl-C: it runs
                # again in the next segment) is not part of the run
                if not doc.test_case_uids or executed.intersection(doc.test_case_uids):
                    traces[doc.trace_id] = doc
        metric_rows = sorted((r for seg in data for r in seg.metric_rows), key=lambda r: (int(r.timestamp_unix_nano or 0), str(r.gpu_id)))
        energy: dict[str, float] = {}
        co2: dict[str, float] = {}
        for seg in data:
            for uid, joules in seg.info.task_energy_j.items():
                energy[uid] = joules
                if seg.info.co2_per_joule is not None:
                    co2[uid] = joules * seg.info.co2_per_joule
        return RunUnion(
            traces=sorted(traces.values(), key=lambda d: (d.start_time, d.trace_id)),
            resource_metrics=[rm for seg in data for rm in seg.resource_metrics],
            metric_rows=metric_rows,
            gpu_summary=combine_gpu_summaries([seg.info.gpu_summary for seg in data]),
            task_energy_j=energy,
            task_co2_g=co2,
            segments=[seg.info for seg in data],
            traced=any(seg.info.traced for seg in data),
        )

    # -- the final files ----------------------------------------------------------------------
    def write_final(
        self,
        rows: Sequence[ResultRow],
        union: RunUnion,
        meta: RunMetadata,
        board: LeaderboardRow,
        *,
        report: bool = True,
    ) -> str | None:
        """Write the run's files (results, traces, metrics, leaderboard row, metadata last) and
        the report. Returns why the report could not be written, or None."""
        run_id = meta.run_id
        self.write_results(rows)
        self._write_records(self.path / TRACES, union.traces)
        self.write_json(METRICS, {"run_id": run_id, "resourceMetrics": union.resource_metrics})
        self._write_records(self.path / METRIC_ROWS, union.metric_rows)
        self._write_record(self.path / LEADERBOARD_ROW, board)
        self.write_metadata(meta)
        if not report:
            return None
        try:
            from .report import write_report

            write_report(self.path, folder=self)
        except Exception as err:  # noqa: BLE001 - the report is a view; the data files are written
            return f"{type(err).__name__}: {err}"
        return None

    def local_datasets(self, traced: bool) -> dict[str, str]:
        """The leaderboard's dataset columns for a run that is only local."""
        return {
            "results": f"local:{self.path / RESULTS}",
            "traces": f"local:{self.path / TRACES}" if traced else "local:none",
            "metrics": f"local:{self.path / METRICS}",
        }


def salvage_list(kind: type[R], items: Sequence[Any], name: str, problems: list[str]) -> list[R]:
    """The records of a list file as far as they go; what was repaired or left out is one line."""
    out: list[R] = []
    skipped, fields = 0, []
    for item in items:
        found = salvage(kind, item)
        if found is None:
            skipped += 1
            continue
        out.append(found.record)
        fields += [f for f in found.repaired if f not in fields]
    if skipped:
        problems.append(f"{name}: {skipped} item(s) are not JSON objects; left out")
    if fields:
        problems.append(f"{name}: fields missing or invalid ({', '.join(fields[:8])}); shown as far as they go")
    return out


def _with_energy(row: ResultRow, union: RunUnion) -> ResultRow:
    """A checkpoint row with the energy its segment apportioned to it."""
    return row.with_(energy_j=union.task_energy_j[row.test_case_uid], co2_g=union.task_co2_g.get(row.test_case_uid))


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
