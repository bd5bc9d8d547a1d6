"""Reading a run folder for the pages: results (or the checkpoint of a run that died), traces, GPU
metric rows, metadata and the leaderboard row, each tolerated missing or corrupt (a problem line
says which). File names and the checkpoint reader are RunFolder's (smoltrace.run_folder); the pages
read leniently (a damaged file still gives a page), unlike RunFolder's validating readers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..run_folder import CHECKPOINT, LEADERBOARD_ROW, METADATA, METRIC_ROWS, REPORT, RESULTS, TRACES, RunFolder
from .formatting import get_path, num, parse_iso

__all__ = ["CHECKPOINT", "LEADERBOARD_ROW", "METADATA", "METRIC_ROWS", "REPORT", "RESULTS", "TRACES"]


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
    """Finished executions from the checkpoint journal (RunFolder's reader: a torn last line is skipped)."""
    return [row.to_json() for row in RunFolder(path.parent).checkpoint.load()]


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
def sum_of(rows: Iterable[Mapping[str, Any]], key: str) -> float | None:
    values = [v for v in (num(r.get(key)) for r in rows) if v is not None]
    return sum(values) if values else None


def duration_ms(row: Mapping[str, Any]) -> float | None:
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
    devices = get_path(data.metadata, "gpu_metrics", "summary", "devices") or get_path(data.metadata, "gpu_metrics", "devices") or []
    by_key: dict[str, Mapping[str, Any]] = {}
    for item in devices if isinstance(devices, list) else []:
        if isinstance(item, Mapping):
            by_key.setdefault(str(item.get("index")), item)
            if item.get("uuid"):
                by_key.setdefault(str(item["uuid"]), item)
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
        for ns, sample in rows:
            s.t.append((ns - t0) / 1e9)
            s.util.append(num(sample.get("gpu_utilization_percent")))
            s.mem.append(num(sample.get("gpu_memory_used_mib")))
            s.temp.append(num(sample.get("gpu_temperature_celsius")))
            s.power.append(num(sample.get("gpu_power_watts")))
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
