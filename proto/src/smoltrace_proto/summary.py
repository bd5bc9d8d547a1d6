"""A run's GPU summary as typed values, and its converters (protobuf and JSON-ready dicts).

The exporter builds these dataclasses and sends them as `pb.RunSummary`; the runner turns the
message back into the same dataclasses (`run_summary_from_proto`) and writes `as_dict()` into its
metadata. `run_summary_from_dict` reads such a dict back (shards, resumed segments) and checks the
types of every field: a run folder is data, and a wrong type is a clear `ValueError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from . import gpu_exporter_pb2 as pb

# energy_method values (per device and per run)
METHOD_COUNTER = "counter"  # NVML total-energy counter deltas
METHOD_INTEGRATED = "integrated"  # trapezoid of power
METHOD_MIG_MEMORY_SHARE = "mig_memory_share"  # a MIG instance: its memory fraction of the parent's energy
METHOD_MIXED = "mixed"  # devices differ (run level only)
METHOD_NONE = "none"
# split_method values (per device)
SPLIT_EXCLUSIVE = "exclusive"  # no other run sampled the device during this run
SPLIT_EQUAL_SHARE = "equal_share"  # 1/k of each interval's energy while k runs sampled the device
SPLIT_IN_PARENT = "in_parent"  # a MIG instance of a run that also samples its parent: charged on the parent's account


@dataclass(frozen=True, slots=True)
class StatsSummary:
    """avg/min/max of a reading over the run's samples."""

    avg: float
    min: float
    max: float
    count: int


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    energy_joules: float
    co2_grams: float
    power_cost_usd: float
    duration_seconds: float
    sample_count: int
    utilization_percent: StatsSummary | None
    memory_used_bytes: StatsSummary | None
    temperature_celsius: StatsSummary | None
    power_watts: StatsSummary | None
    energy_method: str
    counter_reset: bool
    failed: bool
    error: str
    exclusive_seconds: float = 0.0
    shared_seconds: float = 0.0
    split_method: str = SPLIT_EXCLUSIVE
    is_mig: bool = False
    parent_uuid: str = ""


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    gpu_available: bool
    start_unix_ms: int
    end_unix_ms: int
    duration_seconds: float
    sample_count: int
    energy_joules: float
    co2_grams: float
    power_cost_usd: float
    utilization_percent: StatsSummary | None
    memory_used_bytes: StatsSummary | None
    temperature_celsius: StatsSummary | None
    power_watts: StatsSummary | None
    energy_method: str
    carbon_intensity_g_per_kwh: float
    pue: float
    power_cost_per_kwh: float
    devices: tuple[DeviceSummary, ...]
    stop_reason: str
    simulated: bool
    message: str
    otlp_dropped_samples: int
    otlp_exported_samples: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: numbers stay numbers, absent statistics are left out."""
        return _as_dict(self)


_STATS_FIELDS = ("utilization_percent", "memory_used_bytes", "temperature_celsius", "power_watts")
T = TypeVar("T", StatsSummary, DeviceSummary, RunSummary)


# -- protobuf -----------------------------------------------------------------------------------
def _stats_to_proto(message: pb.Stats, stats: StatsSummary | None) -> None:
    if stats is not None:
        message.avg, message.min, message.max, message.count = stats.avg, stats.min, stats.max, stats.count


def _stats_from_proto(parent: Any, name: str) -> StatsSummary | None:
    if not parent.HasField(name):
        return None
    s = getattr(parent, name)
    return StatsSummary(avg=s.avg, min=s.min, max=s.max, count=s.count)


def _scalars(value: Any, skip: tuple[str, ...]) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name not in skip}


def device_summary_to_proto(d: DeviceSummary) -> pb.DeviceSummary:
    out = pb.DeviceSummary(**_scalars(d, _STATS_FIELDS))
    for name in _STATS_FIELDS:
        _stats_to_proto(getattr(out, name), getattr(d, name))
    return out


def run_summary_to_proto(s: RunSummary) -> pb.RunSummary:
    out = pb.RunSummary(**_scalars(s, (*_STATS_FIELDS, "devices")))
    out.devices.extend(device_summary_to_proto(d) for d in s.devices)
    for name in _STATS_FIELDS:
        _stats_to_proto(getattr(out, name), getattr(s, name))
    return out


def _from_proto(cls: type[T], message: Any, **extra: Any) -> T:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in extra:
            values[f.name] = extra[f.name]
        elif f.name in _STATS_FIELDS:
            values[f.name] = _stats_from_proto(message, f.name)
        else:
            values[f.name] = getattr(message, f.name)
    return cls(**values)


def device_summary_from_proto(message: pb.DeviceSummary) -> DeviceSummary:
    return _from_proto(DeviceSummary, message)


def run_summary_from_proto(message: pb.RunSummary) -> RunSummary:
    return _from_proto(RunSummary, message, devices=tuple(device_summary_from_proto(d) for d in message.devices))


# -- dicts (metadata.json) ----------------------------------------------------------------------
def _as_dict(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if item is None:
            continue
        if isinstance(item, tuple):
            out[f.name] = [_as_dict(v) for v in item]
        elif dataclasses.is_dataclass(item):
            out[f.name] = _as_dict(item)
        else:
            out[f.name] = item
    return out


def _check(cls: type, name: str, kind: Any, raw: Any, where: str) -> Any:
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind is int and number and isinstance(raw, int):
        return raw
    if kind is float and number and math.isfinite(raw):
        return float(raw)
    if kind is str and isinstance(raw, str):
        return raw
    raise ValueError(f"{where}.{name}: expected {kind.__name__}, got {type(raw).__name__}")


def _from_dict(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if f.name not in data:
            if f.default is not dataclasses.MISSING:
                continue
            if isinstance(kind, types.UnionType):  # StatsSummary | None
                values[f.name] = None
                continue
            raise ValueError(f"{where}: missing {f.name}")
        raw = data[f.name]
        if isinstance(kind, types.UnionType):
            values[f.name] = None if raw is None else _from_dict(StatsSummary, raw, f"{where}.{f.name}")
        elif typing.get_origin(kind) is tuple:
            if not isinstance(raw, list | tuple):
                raise ValueError(f"{where}.{f.name}: expected a list, got {type(raw).__name__}")
            values[f.name] = tuple(_from_dict(DeviceSummary, d, f"{where}.{f.name}[{i}]") for i, d in enumerate(raw))
        else:
            values[f.name] = _check(cls, f.name, kind, raw, where)
    return cls(**values)


def run_summary_from_dict(data: Any) -> RunSummary:
    """The inverse of `RunSummary.as_dict()`; raises ValueError naming the first bad field."""
    return _from_dict(RunSummary, data, "summary")
