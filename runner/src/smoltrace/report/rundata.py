"""A run for the pages: `RunFolder.contents()` (typed records read as far as they go — results or
the checkpoint of a run that died, traces, GPU metric rows, metadata, the leaderboard row, the GPU
summary; the union of the segments for a run that did not finish writing its files) plus the
numbers the pages derive from those records. File names, the schema and the reading rules are
RunFolder's and the records' (`smoltrace.run_folder`, `smoltrace.records`); nothing here reads a
file itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records import GpuSummary, MetricRow, Record, ResultRow
from ..run_folder import CHECKPOINT, LEADERBOARD_ROW, METADATA, METRIC_ROWS, REPORT, RESULTS, TRACES, RunContents, RunFolder
from .formatting import mapping, num, parse_iso

__all__ = [
    "CHECKPOINT",
    "LEADERBOARD_ROW",
    "METADATA",
    "METRIC_ROWS",
    "REPORT",
    "RESULTS",
    "TRACES",
    "GpuSeries",
    "RunData",
    "duration_ms",
    "gpu_series",
    "load_run",
    "row_duration_ms",
    "sum_of",
]

RunData = RunContents  # what the pages are built from


def load_run(run_dir: Path) -> RunData:
    """The run in `run_dir` as typed records (a damaged or old folder still gives a page: its
    problems are lines of `problems`)."""
    return RunFolder(Path(run_dir)).contents()


# -- run-level numbers ------------------------------------------------------------------------
def sum_of(records: Iterable[Record], name: str) -> float | None:
    """The sum of a field over the records that give it (None when none does: unknown, not 0)."""
    values = [v for v in (num(r.given(name)) for r in records) if v is not None]
    return sum(values) if values else None


def row_duration_ms(row: ResultRow) -> float | None:
    """An execution's wall time: `duration_ms`, else the root span's `execution_time_ms` (rows
    written before `duration_ms` existed), else unknown."""
    d = num(row.given("duration_ms"))
    return d if d is not None else num(row.given("execution_time_ms"))


def duration_ms(row: Mapping[str, Any]) -> float | None:
    """The same rule for a row read as a dict (a Hub dataset's Parquet rows in compare/leaderboard)."""
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


def _sample_ns(row: MetricRow) -> float | None:
    ns = num(row.timestamp_unix_nano)
    if ns is not None:
        return ns
    dt = parse_iso(row.timestamp)
    return dt.timestamp() * 1e9 if dt else None


def devices(data: RunData) -> list[Mapping[str, Any]]:
    """The run's GPUs as the exporter described them (summary devices, else those it listed)."""
    summary: GpuSummary | None = data.gpu_summary
    listed: Any = summary.devices if summary is not None and summary.devices else None
    if not listed and data.metadata is not None:
        listed = data.metadata.gpu_metrics.get("devices")
    return [d for d in listed if isinstance(d, Mapping)] if isinstance(listed, list) else []


def gpu_series(data: RunData) -> list[GpuSeries]:
    """One series per GPU from the metric rows (sorted by time), with totals from the summary."""
    samples: dict[tuple[str, str], list[tuple[float, MetricRow]]] = {}  # (gpu_id, uuid): MIG instances share a gpu_id
    for row in data.metric_rows:
        ns = _sample_ns(row)
        if ns is None:
            continue
        samples.setdefault((str(row.gpu_id or "?"), str(row.gpu_uuid or "")), []).append((ns, row))
    by_key: dict[str, Mapping[str, Any]] = {}
    for dev in devices(data):
        by_key.setdefault(str(dev.get("index")), dev)
        if dev.get("uuid"):
            by_key.setdefault(str(dev["uuid"]), dev)
    t0 = min((ns for rows in samples.values() for ns, _ in rows), default=0.0)

    def sort_key(key: tuple[str, str]) -> tuple[int, float, str, str]:
        gpu_id, uuid = key
        n = num(gpu_id)
        return (0, n, "", uuid) if n is not None else (1, 0.0, gpu_id, uuid)

    out: list[GpuSeries] = []
    for key in sorted(samples, key=sort_key):
        gpu_id = key[0]
        rows = sorted(samples[key], key=lambda item: item[0])
        last = rows[-1][1]
        uuid = str(last.gpu_uuid or "")
        dev = mapping(by_key.get(uuid) or by_key.get(gpu_id))
        s = GpuSeries(gpu_id, str(last.gpu_name or dev.get("name") or "GPU"), uuid)
        for ns, sample in rows:
            s.t.append((ns - t0) / 1e9)
            s.util.append(num(sample.gpu_utilization_percent))
            s.mem.append(num(sample.gpu_memory_used_mib))
            s.temp.append(num(sample.gpu_temperature_celsius))
            s.power.append(num(sample.gpu_power_watts))
        totals = [v for v in (num(r.gpu_memory_total_mib) for _, r in rows) if v]
        dev_total = num(dev.get("memory_total_bytes"))
        s.mem_total = max(totals) if totals else (dev_total / 2**20 if dev_total else None)

        def cumulative(name: str, rows: list[tuple[float, MetricRow]] = rows) -> float | None:
            values = [v for v in (num(getattr(r, name)) for _, r in rows) if v is not None]
            return max(values) if values else None

        s.energy_j = num(dev.get("energy_joules")) if dev else None
        s.energy_j = s.energy_j if s.energy_j is not None else cumulative("gpu_energy_joules")
        s.co2_g = num(dev.get("co2_grams")) if dev else None
        s.co2_g = s.co2_g if s.co2_g is not None else cumulative("co2_emissions_gco2e")
        s.cost_usd = num(dev.get("power_cost_usd")) if dev else None
        s.cost_usd = s.cost_usd if s.cost_usd is not None else cumulative("power_cost_usd")
        out.append(s)
    return out
