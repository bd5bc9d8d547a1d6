"""The run record: every file of a run folder and every published dataset row, as typed records.

A run is the product's unit of truth. These records are the one definition of what it holds:

- `ResultRow` — one task execution (`results.json`, `checkpoint.jsonl`, the results dataset);
- `TraceDoc` — one OpenTelemetry trace of an execution (`traces.json`, the traces dataset);
- `MetricRow` — one GPU sample of one GPU (`metrics_rows.json`, the metrics dataset);
- `GpuSummary` — the GPU figures of a run or a segment (metadata `gpu_metrics.summary`);
- `LeaderboardRow` — one row per complete run (`leaderboard_row.json`, the leaderboard dataset);
- `RunMetadata` — what the run was and how it ended (`metadata.json`).

Every field says what it means, its unit and when it is null (`Field(description=...)` plus
`unit`/`null` in `json_schema_extra`). The Hub's Arrow schemas (`arrow_schema`) and the dataset
cards' schema tables (`schema_rows`) are generated from these records, so they cannot drift.

Records are frozen pydantic models; they validate what is read from disk (a bad file is a clear
error, not a KeyError later) and keep unknown keys (`extra="allow"`) so a newer writer's columns
survive a round trip through an older reader. `RECORD_SCHEMA_VERSION` is written into
`metadata.json` (`schema_version`); the leaderboard keeps its own versioned row schema.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

if TYPE_CHECKING:  # pyarrow (and numpy) cost ~0.4 s and ~30 MB: imported only where a schema is built
    import pyarrow as pa

RECORD_SCHEMA_VERSION = 2  # 1: the unversioned folders before records; 2: segments, integrity, notices
LEADERBOARD_SCHEMA_VERSION = 1  # the leaderboard row's own schema (its Arrow types); bump on a type change


def doc(description: str, *, unit: str | None = None, null: str | None = None, default: Any = ...) -> Any:
    """A documented field: what it means, its unit, and when it is null (a field that can be null
    defaults to null; one without a default is required)."""
    if default is ... and null is not None:
        default = None
    extra: dict[str, Any] = {}  # JSON-able values only
    if unit:
        extra["unit"] = unit
    if null:
        extra["null"] = null
    return Field(default=default, description=description, json_schema_extra=extra or None)


def _list(description: str, *, unit: str | None = None) -> Any:
    extra: dict[str, Any] | None = {"unit": unit} if unit else None
    return Field(default_factory=list, description=description, json_schema_extra=extra)


class Record(BaseModel):
    """Base of the run records: frozen, unknown keys kept, JSON-ready dumps."""

    # non-finite floats written as Python's json writes them (Infinity, NaN), so that the text and
    # the dict forms read back alike
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True, ser_json_inf_nan="constants")

    def to_json(self) -> dict[str, Any]:
        """The dict written to the run folder (declared fields in order, then any unknown keys)."""
        return self.model_dump(mode="json")

    def to_json_text(self) -> str:
        """`to_json` as JSON text on one line, encoded by pydantic-core without building the dict
        (a run's traces: megabytes; ~4x faster than the dict and `json.dumps`)."""
        return self.model_dump_json(fallback=str)

    def with_(self: R, **changes: Any) -> R:
        """A copy with some fields changed (records are frozen)."""
        return self.model_copy(update=changes)

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        return cls.model_validate(dict(data))

    def given(self, name: str) -> Any:
        """The field's value when the file gave it, else None: an old folder's missing field is
        unknown, not the field's default (a missing `duration_ms` is not 0 ms)."""
        return getattr(self, name, None) if name in self.model_fields_set else None


R = TypeVar("R", bound=Record)

_ZERO: dict[Any, Any] = {str: "", int: 0, float: 0.0, bool: False}


def _placeholder(info: FieldInfo) -> Any:
    """What a required field that is missing or invalid in a damaged file reads as."""
    annotation = _strip_optional(info.annotation)
    if annotation in _ZERO:
        return _ZERO[annotation]
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)[0]
    return None


@typing.final
class Salvaged(typing.Generic[R]):
    """A record read from damaged or old data, and the fields that had to be repaired."""

    __slots__ = ("record", "repaired")

    def __init__(self, record: R, repaired: list[str]) -> None:
        self.record = record
        self.repaired = repaired


def salvage(kind: type[R], data: Any) -> Salvaged[R] | None:
    """A record from what an old or damaged file holds, as far as it goes (for views of a run,
    never for writing one): a missing or invalid required field reads as its placeholder ("" or
    0), an invalid optional field as its default, an invalid item of a list is left out. None when
    `data` is not a JSON object. Validation stays the records' own: nothing is coerced beyond it."""
    if not isinstance(data, Mapping):
        return None
    try:
        return Salvaged(kind.model_validate(data), [])  # the common case: nothing to repair, nothing copied
    except ValidationError:
        pass
    values = {str(k): v for k, v in data.items()}
    repaired: list[str] = []
    for _ in range(8):
        try:
            return Salvaged(kind.model_validate(values), repaired)
        except ValidationError as err:
            dropped: dict[str, set[int]] = {}
            for error in err.errors():
                loc = error.get("loc", ())
                if not loc or not isinstance(loc[0], str) or loc[0] not in kind.model_fields:
                    continue
                name = loc[0]
                if name not in repaired:
                    repaired.append(name)
                value = values.get(name)
                if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(value, list):
                    dropped.setdefault(name, set()).add(loc[1])
                    continue
                info = kind.model_fields[name]
                if info.is_required():
                    values[name] = _placeholder(info)
                else:
                    values.pop(name, None)
            for name, indices in dropped.items():
                if isinstance(values.get(name), list):
                    values[name] = [item for i, item in enumerate(values[name]) if i not in indices]
    return None


# -- results ----------------------------------------------------------------------------------
class ResultRow(Record):
    """One task execution. SMOLTRACE's columns first (TraceMind UI reads them), then ours."""

    model: str = doc("The model evaluated (as given with --model).")
    evaluation_date: str = doc("When the execution finished.", unit="ISO 8601 UTC")
    task_id: str = doc("The task's id in the task dataset.")
    test_case_uid: str = doc("`<agent type>:<task id>`: unique within a run; pairs executions across runs.")
    agent_type: str = doc("`tool` (ToolCallingAgent) or `code` (CodeAgent).")
    difficulty: str | None = doc("The task's difficulty label.", null="the task has none")
    prompt: str = doc("The task prompt given to the agent.")
    success: bool = doc("The execution passed every check of its task.", default=False)
    tool_called: bool = doc("The agent called at least one tool.", default=False)
    correct_tool: bool = doc("The expected tool was called (true when none is expected).", default=False)
    final_answer_called: bool = doc("The agent gave a final answer.", default=False)
    response_correct: bool = doc("The final answer holds the expected keywords/answer.", default=False)
    tools_used: list[str] = _list("Tools the agent called, in order.")
    steps: int = doc("Agent steps taken (never more than --max-steps).", default=0)
    response: str | None = doc("The final answer as text.", null="no final answer")
    error: str | None = doc("The error that ended the execution.", null="no error")
    trace_id: str | None = doc("W3C trace id (32 hex) of the execution's trace.", null="the run was not traced")
    span_id: str | None = doc("W3C span id (16 hex) of the trace's root span.", null="the run was not traced")
    run_id: str = doc("The run this execution belongs to.")
    execution_time_ms: float = doc("Root-span duration (wall time when untraced).", unit="ms", default=0.0)
    total_tokens: int = doc("Prompt + completion tokens of the execution's model calls.", unit="tokens", default=0)
    cost_usd: float | None = doc("Model cost of the execution.", unit="USD", null="no price is known for the model")
    enhanced_trace_info: str | None = doc(
        "JSON object: trace_id, root_span_id, total_tokens, duration_ms, cost_usd, span_count.", null="never in new rows"
    )
    provider: str = doc("Model provider: litellm, transformers, ollama, inference.", default="")
    test_index: int = doc("Position in the unsharded plan (0-based); rows are written in this order.", default=0)
    expected_tool: str | None = doc("The tool the task expects.", null="the task expects none")
    expected_tool_calls: int | None = doc("How many tool calls the task expects.", null="no expectation")
    expected_keywords: list[str] = _list("Keywords the answer must contain.")
    expected_answer: str | None = doc("The expected answer (as text).", null="the task has none")
    failure_reason: str | None = doc("Why the execution failed (scoring or error).", null="it succeeded")
    error_type: str | None = doc("Error class: timeout, auth_error, server_error, agent_error, ...", null="no error")
    attempts: int = doc("Model-call attempts of the execution, retries included.", default=1)
    retries: int = doc("Retried model calls.", default=0)
    duration_ms: float = doc("Wall time of the execution in the runner.", unit="ms", default=0.0)
    prompt_tokens: int = doc("Prompt tokens of the execution's model calls.", unit="tokens", default=0)
    completion_tokens: int = doc("Completion tokens of the execution's model calls.", unit="tokens", default=0)
    energy_j: float | None = doc(
        "The execution's share of the run's GPU energy (its segment's energy apportioned by window).",
        unit="J",
        null="no GPU energy was measured for the execution",
    )
    co2_g: float | None = doc("CO2 of energy_j at the exporter's carbon intensity and PUE.", unit="g CO2e", null="energy_j is null")
    started_at: str | None = doc("When the execution started.", unit="ISO 8601 UTC", null="never in new rows")
    finished_at: str | None = doc("When the execution finished.", unit="ISO 8601 UTC", null="never in new rows")
    start_time_unix_nano: int | None = doc("Execution start.", unit="ns since the Unix epoch", null="never in new rows")
    end_time_unix_nano: int | None = doc("Execution end.", unit="ns since the Unix epoch", null="never in new rows")

    @property
    def window(self) -> tuple[int, int] | None:
        """The execution's time window (ns), for energy apportioning."""
        if self.start_time_unix_nano and self.end_time_unix_nano:
            return int(self.start_time_unix_nano), int(self.end_time_unix_nano)
        return None


def order_rows(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """One row per test_case_uid (the last one wins), in plan order."""
    unique: dict[str, ResultRow] = {}
    for row in rows:
        unique[row.test_case_uid] = row
    return sorted(unique.values(), key=lambda r: (r.test_index, r.test_case_uid))


# -- traces -----------------------------------------------------------------------------------
class TraceDoc(Record):
    """One trace (one task execution): its spans and the figures computed from them."""

    trace_id: str = doc("W3C trace id (32 hex).")
    run_id: str = doc("The run the trace belongs to.")
    root_span_id: str = doc("The root span (`test_evaluation`).")
    test_ids: list[str] = _list("Task ids named by the trace's spans (one per trace).")
    test_case_uids: list[str] = _list("Execution uids named by the trace's spans (one per trace).")
    agent_type: str | None = doc("`tool` or `code`.", null="the root span does not say")
    span_count: int = doc("Spans in the trace.", default=0)
    model_calls: int = doc("Model spans counted for tokens (the innermost of nested model spans).", default=0)
    prompt_tokens: int = doc("Prompt tokens over the counted model spans.", unit="tokens", default=0)
    completion_tokens: int = doc("Completion tokens over the counted model spans.", unit="tokens", default=0)
    total_tokens: int = doc("prompt_tokens + completion_tokens.", unit="tokens", default=0)
    total_duration_ms: float = doc("Root span duration.", unit="ms", default=0.0)
    total_cost_usd: float | None = doc("Model cost from span attributes.", unit="USD", null="no span carries a cost")
    start_time: int = doc("Root span start.", unit="ns since the Unix epoch", default=0)
    end_time: int = doc("Root span end.", unit="ns since the Unix epoch", default=0)
    incomplete: bool = doc("The trace has no `test_evaluation` root span (some spans were lost).", default=False)
    spans: list[dict[str, Any]] = _list("The spans (OTLP JSON-like dicts; the Hub schema is in hub.py).")

    HUB_NESTED: ClassVar[tuple[str, ...]] = ("spans",)


# -- GPU --------------------------------------------------------------------------------------
class Stats(Record):
    """avg/min/max over samples; `count` samples."""

    avg: float = doc("Mean (time-weighted when segments or shards are combined).", default=0.0)
    min: float = doc("Minimum.", default=0.0)
    max: float = doc("Maximum.", default=0.0)
    count: int = doc("Samples behind the figures.", default=0)


GAUGES = ("utilization_percent", "memory_used_bytes", "temperature_celsius", "power_watts")


class GpuSummary(Record):
    """The GPU figures of a run (or of one segment: one process's sampling window).

    Gauges (utilisation, memory, temperature, power) are per sweep across the run's GPUs as the
    exporter reports them (see the exporter's RunSummary); energy, CO2 and cost are totals."""

    run_id: str = doc("The run (the exporter's run id, not a segment's sampling id).", default="")
    gpu_available: bool = doc("A GPU was measured.", default=False)
    start_unix_ms: int = doc("Sampling start (earliest segment).", unit="ms since the Unix epoch", default=0)
    end_unix_ms: int = doc("Sampling end (latest segment).", unit="ms since the Unix epoch", default=0)
    duration_seconds: float = doc("Seconds sampled (sum over segments).", unit="s", default=0.0)
    sample_count: int = doc("Sweeps of all devices taken.", default=0)
    energy_joules: float = doc("GPU energy over the sampled time (sum over segments).", unit="J", default=0.0)
    co2_grams: float = doc("CO2 of energy_joules at carbon_intensity_g_per_kwh and pue.", unit="g CO2e", default=0.0)
    power_cost_usd: float = doc("Electricity cost of energy_joules.", unit="USD", default=0.0)
    utilization_percent: Stats | None = doc("GPU utilisation.", unit="%", null="no sample")
    memory_used_bytes: Stats | None = doc("GPU memory used.", unit="bytes", null="no sample")
    temperature_celsius: Stats | None = doc("GPU temperature.", unit="°C", null="no sample")
    power_watts: Stats | None = doc("GPU power.", unit="W", null="no sample")
    energy_method: str = doc("`counter` (NVML total energy) or `integrated` (power x time); comma-joined if mixed.", default="")
    carbon_intensity_g_per_kwh: float = doc("Grid carbon intensity used.", unit="g CO2e/kWh", default=0.0)
    pue: float = doc("Power usage effectiveness applied.", default=0.0)
    power_cost_per_kwh: float = doc("Electricity price used.", unit="USD/kWh", default=0.0)
    devices: list[dict[str, Any]] = _list("Per-device summaries (the exporter's DeviceSummary).")
    stop_reason: str = doc("client, lease_expired or shutdown.", default="")
    simulated: bool = doc("The exporter's backend was simulated.", default=False)
    message: str = doc("The exporter's note.", default="")
    otlp_dropped_samples: int = doc("Samples that could not be sent to the collector.", default=0)
    otlp_exported_samples: int = doc("Samples sent to the collector.", default=0)
    segments: int = doc("How many summaries were combined into this one.", default=1)

    def stats(self, name: str) -> Stats | None:
        value = getattr(self, name, None)
        return value if isinstance(value, Stats) else None


def combine_gpu_summaries(summaries: Sequence[GpuSummary | None]) -> GpuSummary | None:
    """The one rule for a run's GPU figures from its segments (resumes) and shards.

    Energy, CO2, cost, samples and sampled seconds add up (each segment measured its own window;
    where windows overlap on one device the exporter already split the device's energy between
    the runs sharing it, so the sum counts no joule twice). Gauge averages are weighted by each
    part's sampled time (its sample count when no time is known); min/max are kept. Devices are
    combined per UUID (energy summed, the same weighting for their gauges)."""
    present = [s for s in summaries if s is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    gauges: dict[str, Stats | None] = {}
    for name in GAUGES:
        gauges[name] = weighted_stats([(st, s.duration_seconds) for s in present if (st := s.stats(name)) is not None])
    starts = [s.start_unix_ms for s in present if s.start_unix_ms]
    ends = [s.end_unix_ms for s in present if s.end_unix_ms]
    first = present[0]
    return GpuSummary(
        run_id=first.run_id,
        gpu_available=any(s.gpu_available for s in present),
        start_unix_ms=min(starts) if starts else 0,
        end_unix_ms=max(ends) if ends else 0,
        duration_seconds=sum(s.duration_seconds for s in present),
        sample_count=sum(s.sample_count for s in present),
        energy_joules=sum(s.energy_joules for s in present),
        co2_grams=sum(s.co2_grams for s in present),
        power_cost_usd=sum(s.power_cost_usd for s in present),
        utilization_percent=gauges["utilization_percent"],
        memory_used_bytes=gauges["memory_used_bytes"],
        temperature_celsius=gauges["temperature_celsius"],
        power_watts=gauges["power_watts"],
        energy_method=",".join(sorted({s.energy_method for s in present if s.energy_method})),
        carbon_intensity_g_per_kwh=first.carbon_intensity_g_per_kwh,
        pue=first.pue,
        power_cost_per_kwh=first.power_cost_per_kwh,
        devices=_combine_devices([s.devices for s in present]),
        stop_reason=present[-1].stop_reason,
        simulated=any(s.simulated for s in present),
        message="; ".join(dict.fromkeys(s.message for s in present if s.message)),
        otlp_dropped_samples=sum(s.otlp_dropped_samples for s in present),
        otlp_exported_samples=sum(s.otlp_exported_samples for s in present),
        segments=sum(s.segments for s in present),
    )


def weighted_stats(parts: Sequence[tuple[Stats, float]]) -> Stats | None:
    """Stats of several sampling windows: avg weighted by each window's seconds (by its sample
    count when no window has a duration), min of mins, max of maxes, counts added."""
    counted = [(p, max(0.0, w)) for p, w in parts if p.count]
    if not counted:
        return None
    if sum(w for _, w in counted) <= 0:
        counted = [(p, float(p.count)) for p, _ in counted]
    total_w = sum(w for _, w in counted)
    return Stats(
        avg=sum(p.avg * w for p, w in counted) / total_w,
        min=min(p.min for p, _ in counted),
        max=max(p.max for p, _ in counted),
        count=sum(p.count for p, _ in counted),
    )


def _combine_devices(per_part: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per-device summaries of several windows, keyed by UUID (index when there is none)."""
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for devices in per_part:
        for dev in devices:
            key = str(dev.get("uuid") or f"index:{dev.get('index')}")
            by_key.setdefault(key, []).append(dev)
    out: list[dict[str, Any]] = []
    for parts in by_key.values():
        merged = dict(parts[-1])
        for total in ("energy_joules", "co2_grams", "power_cost_usd", "duration_seconds", "sample_count"):
            if any(total in p for p in parts):
                merged[total] = sum(p.get(total) or 0 for p in parts)
        for name in GAUGES:
            stats = [
                (Stats.model_validate(p[name]), float(p.get("duration_seconds") or 0.0)) for p in parts if isinstance(p.get(name), Mapping)
            ]
            combined = weighted_stats(stats)
            if combined is not None:
                merged[name] = combined.to_json()
        out.append(merged)
    return sorted(out, key=lambda d: (int(d.get("index") or 0), str(d.get("uuid") or "")))


class MetricRow(Record):
    """One GPU at one sample time (TraceMind UI's metrics columns)."""

    run_id: str = doc("The run.")
    service_name: str | None = doc("The OTel service that sent the sample (the exporter).", null="placeholder row")
    timestamp: str | None = doc("Sample time.", unit="ISO 8601 UTC", null="placeholder row")
    timestamp_unix_nano: str | None = doc("Sample time as a decimal string.", unit="ns since the Unix epoch", null="placeholder row")
    gpu_id: str | None = doc("The GPU's NVML index.", null="placeholder row (no GPU measured)")
    gpu_name: str | None = doc("The GPU's product name.", null="no GPU measured")
    gpu_uuid: str | None = doc("The GPU's UUID.", null="no GPU measured")
    gpu_utilization_percent: float | None = doc("Utilisation.", unit="%", null="not in this sample")
    gpu_memory_used_mib: float | None = doc("Memory used.", unit="MiB", null="not in this sample")
    gpu_memory_total_mib: float | None = doc("Memory size.", unit="MiB", null="not in this sample")
    gpu_temperature_celsius: float | None = doc("Temperature.", unit="°C", null="not in this sample")
    gpu_power_watts: float | None = doc("Power draw.", unit="W", null="not in this sample")
    co2_emissions_gco2e: float | None = doc("CO2 since the segment's sampling started.", unit="g CO2e", null="not in this sample")
    power_cost_usd: float | None = doc("Electricity cost since the segment's sampling started.", unit="USD", null="not in this sample")
    gpu_energy_joules: float | None = doc("Energy since the segment's sampling started.", unit="J", null="not in this sample")


# -- leaderboard ------------------------------------------------------------------------------
class LeaderboardRow(Record):
    """One complete run on the leaderboard (never a shard, never a partial publish)."""

    schema_version: int = doc("Version of this row's schema.", default=LEADERBOARD_SCHEMA_VERSION)
    run_id: str = doc("The run.")
    model: str = doc("The model evaluated.", default="")
    agent_type: str = doc("tool, code or both.", default="")
    provider: str = doc("The model provider.", default="")
    timestamp: str = doc("When the run finished.", unit="ISO 8601 UTC", default="")
    submitted_by: str = doc("Hub user who published, or `local`.", default="local")
    use_case: str | None = doc("Grouping label (--use-case).", null="not given")
    team: str | None = doc("Grouping label (--team).", null="not given")
    purpose: str | None = doc("Grouping label (--purpose).", null="not given")
    suite_version: str | None = doc("Grouping label (--suite-version).", null="not given")
    results_dataset: str | None = doc("Results dataset (`owner/name`, or `local:<path>`).", null="never")
    traces_dataset: str | None = doc("Traces dataset.", null="the run was not traced")
    metrics_dataset: str | None = doc("Metrics dataset.", null="never")
    dataset_used: str = doc("The task dataset (path or Hub name).", default="")
    total_tests: int = doc("Executions in the run.", default=0)
    successful_tests: int = doc("Executions that succeeded.", default=0)
    failed_tests: int = doc("Executions that failed.", default=0)
    success_rate: float = doc("successful_tests / total_tests.", unit="%", default=0.0)
    avg_steps: float = doc("Mean agent steps per execution.", default=0.0)
    avg_duration_ms: float = doc("Mean execution duration.", unit="ms", default=0.0)
    total_duration_ms: float = doc("Sum of execution durations.", unit="ms", default=0.0)
    total_tokens: int = doc("Tokens over the run.", unit="tokens", default=0)
    avg_tokens_per_test: int = doc("Mean tokens per execution.", unit="tokens", default=0)
    total_cost_usd: float | None = doc("Model cost over the run.", unit="USD", null="no cost is known")
    avg_cost_per_test_usd: float | None = doc("Mean model cost per execution.", unit="USD", null="no cost is known")
    co2_emissions_g: float | None = doc("GPU CO2 of the run.", unit="g CO2e", null="no GPU measured")
    power_cost_total_usd: float | None = doc("GPU electricity cost of the run.", unit="USD", null="no GPU measured")
    energy_j: float | None = doc("GPU energy of the run (all segments and shards).", unit="J", null="no GPU measured")
    gpu_utilization_avg: float | None = doc("Mean GPU utilisation.", unit="%", null="no GPU measured")
    gpu_utilization_max: float | None = doc("Max GPU utilisation.", unit="%", null="no GPU measured")
    gpu_memory_avg_mib: float | None = doc("Mean GPU memory used.", unit="MiB", null="no GPU measured")
    gpu_memory_max_mib: float | None = doc("Max GPU memory used.", unit="MiB", null="no GPU measured")
    gpu_temperature_avg: float | None = doc("Mean GPU temperature.", unit="°C", null="no GPU measured")
    gpu_temperature_max: float | None = doc("Max GPU temperature.", unit="°C", null="no GPU measured")
    gpu_power_avg_w: float | None = doc("Mean GPU power.", unit="W", null="no GPU measured")
    notes: str | None = doc("Free text.", null="none")
    status: str = doc("completed, interrupted, failed, or partial (a merge of some shards, --allow-partial).", default="completed")


# -- metadata ---------------------------------------------------------------------------------
RunStatus = Literal["running", "completed", "interrupted", "incomplete", "partial", "failed", "budget_exhausted"]


class Finding(Record):
    """One integrity finding."""

    check: str = doc("Which check: trace_per_row, root_span, orphan_span, tokens, energy_sum, row_count, ...")
    severity: Literal["error", "warning"] = doc("error: publish refuses the run (unless --force); warning: recorded only.")
    message: str = doc("One line for a person.")
    items: list[str] = _list("The executions, traces or spans concerned (first 20).")


class Integrity(Record):
    """The result of validating a run before its final files and before publishing."""

    ok: bool = doc("No finding of severity error.", default=True)
    checked_at: str = doc("When the run was validated.", unit="ISO 8601 UTC", default="")
    checks: list[str] = _list("The checks that ran.")
    findings: list[Finding] = _list("What failed.")

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


class SegmentSettings(Record):
    """How one process ran its part of a run: a --resume may change these (they come from its own
    command line, never from the folder), never what the run is."""

    api_base: str | None = doc("The model server it used (--api-base).", null="the provider's default")
    gpu_exporter: str | None = doc("The GPU exporter it asked for samples (--gpu-exporter).", null="an embedded exporter, or none")
    parallel_workers: int = doc("--parallel-workers.", default=1)
    max_retries: int = doc("--max-retries.", default=3)
    task_timeout: float | None = doc("--task-timeout.", unit="s", null="no timeout")
    shutdown_grace: float = doc("--shutdown-grace.", unit="s", default=0.0)
    skip_preflight: bool = doc("--skip-preflight.", default=False)


class SegmentInfo(Record):
    """One process's part of a run: the first, every --resume, every shard. The one owner of what
    a process did to a run (what it executed, measured and how it ran)."""

    index: int = doc("0, 1, ... in the order the segments started.")
    kind: Literal["first", "resume", "shard", "legacy"] = doc("What started the segment.")
    pid: int | None = doc("The process id.", null="legacy segment")
    status: str = doc("running (a process that never ended it was killed), completed, interrupted, killed.")
    started_at: str = doc("When the process started the segment.", unit="ISO 8601 UTC")
    finished_at: str | None = doc("When it ended.", unit="ISO 8601 UTC", null="still running or killed")
    shard: dict[str, int] | None = doc("{index, count} for a shard.", null="not a shard")
    source: str | None = doc("The folder a merged segment came from.", null="not merged")
    executed: list[str] = _list("test_case_uids executed by this segment.")
    traced: bool = doc("Spans were collected.", default=False)
    gpu_summary: GpuSummary | None = doc("The segment's GPU figures.", null="no GPU metrics")
    task_energy_j: dict[str, float] = Field(
        default_factory=dict,
        description="Per-execution energy apportioned within this segment's energy series.",
        json_schema_extra={"unit": "J"},
    )
    co2_per_joule: float | None = doc("g CO2e per J of this segment.", null="no energy measured")
    timings: dict[str, float] = Field(default_factory=dict, description="startup_s, active_s.", json_schema_extra={"unit": "s"})
    telemetry: dict[str, Any] = Field(default_factory=dict, description="The segment's telemetry report (collector, spans received).")
    settings: SegmentSettings | None = doc("How the process ran.", null="a legacy segment, or written before settings were recorded")


class RunMetadata(Record):
    """metadata.json: what the run is, how it went, and what was checked. Unknown keys are kept."""

    schema_version: int = doc("RECORD_SCHEMA_VERSION of the writer.", default=RECORD_SCHEMA_VERSION)
    run_id: str = doc("The run's id (--run-id or generated).")
    model: str = doc("The model.")
    provider: str = doc("The provider.")
    agent_type: str = doc("tool, code or both.")
    dataset_used: str = doc("The task dataset.")
    dataset_revision: str | None = doc("The task dataset's revision.", null="a local file")
    dataset_sha256: str | None = doc("SHA-256 of the task rows used.", null="unknown (old run)")
    split: str | None = doc("Dataset split.", null="a local file")
    num_tasks_in_dataset: int | None = doc("Tasks in the dataset.", null="unknown")
    seed: int | None = doc("--seed.", null="none")
    shard: dict[str, int] | None = doc("{index, count} of a shard.", null="not a shard")
    started_at: str = doc("When the run (its first segment) started.", unit="ISO 8601 UTC")
    finished_at: str | None = doc("When its last segment ended.", unit="ISO 8601 UTC", null="running or killed")
    status: str = doc("running, completed, interrupted, incomplete, partial, ...", default="running")
    run_dir: str | None = doc("The run folder when written.", null="never")
    num_results: int | None = doc("Rows in results.json.", null="running")
    num_planned: int | None = doc("Executions planned.", null="old run")
    passed: int | None = doc("Rows that succeeded.", null="running")
    cost_source: str | None = doc("Where cost_usd comes from: litellm (its cost map), local (0), unknown.", null="old run")
    stop_reason: dict[str, Any] | None = doc("Why the run ended early: {kind, message, status, exit_code}.", null="it was not stopped")
    gpu_scope: dict[str, Any] | None = doc("Which GPUs the run owns: {source, uuids, note, measured}.", null="no GPU metrics")
    model_placement: dict[str, Any] | None = doc("Where Ollama holds the model (GPU share).", null="not an Ollama run")
    spend: dict[str, Any] | None = doc("What the run spent: tokens, cost_usd, energy_j, co2_g.", null="old run")
    budget: dict[str, Any] | None = doc("The budget that stopped the run: {kind, limit, used, flag}.", null="no budget was reached")
    config: dict[str, Any] = Field(default_factory=dict, description="The run's settings (secrets redacted).")
    command: list[str] = _list("The command line (secrets redacted).")
    versions: dict[str, str | None] = Field(default_factory=dict, description="Package versions.")
    git: dict[str, Any] = Field(default_factory=dict, description="{sha, dirty} of the runner's checkout.")
    platform: dict[str, Any] = Field(default_factory=dict, description="system, machine, python.")
    gpu_metrics: dict[str, Any] = Field(default_factory=dict, description="enabled, reason, exporter, devices, summary (a GpuSummary).")
    otel: dict[str, Any] = Field(default_factory=dict, description="Tracing on/off and its console line.")
    telemetry: dict[str, Any] = Field(default_factory=dict, description="Collector, spans received, rows without a trace.")
    timings: dict[str, Any] = Field(default_factory=dict, description="Timings of the last segment.")
    segments: list[SegmentInfo] = _list("The run's segments (see RunFolder).")
    notices: list[str] = _list("Warnings printed during the run, once each.")
    integrity: Integrity | None = doc("Validation of the run's files.", null="not validated yet (running)")
    merged_from: list[dict[str, Any]] | None = doc("The shards a merged run came from.", null="not merged")
    missing_shards: list[int] | None = doc("Shards missing from a merge.", null="not merged")
    partial: dict[str, Any] | None = doc("{missing_shards, not_completed} of a merge with --allow-partial.", null="not partial")
    published: dict[str, Any] | None = doc("Datasets published, commits, rows.", null="not published")

    @model_validator(mode="before")
    @classmethod
    def _fold_segment_settings(cls, data: Any) -> Any:
        """Folders written before SegmentInfo owned `settings` kept them in a separate list,
        `segment_settings` ({index, started_at, resume, api_base, ...}): read into the segment of
        the same index (a copy of `data`; the old key is not kept)."""
        if not isinstance(data, Mapping) or "segment_settings" not in data:
            return data
        values = dict(data)
        old = values.pop("segment_settings")
        if isinstance(values.get("segments"), list):
            values["segments"] = fold_segment_settings(values["segments"], old)
        return values

    @property
    def gpu_summary(self) -> GpuSummary | None:
        raw = self.gpu_metrics.get("summary")
        return GpuSummary.model_validate(raw) if isinstance(raw, Mapping) else None


def fold_segment_settings(segments: Any, old: Any) -> Any:
    """Segments (as read, dicts) with the settings of the old `segment_settings` list folded in by
    index where a segment has none; anything that is not the expected shape is left as it is."""
    if not isinstance(segments, list) or not isinstance(old, list):
        return segments
    fields = SegmentSettings.model_fields
    by_index = {e.get("index"): {k: v for k, v in e.items() if k in fields} for e in old if isinstance(e, Mapping)}
    out: list[Any] = []
    for seg in segments:
        if isinstance(seg, Mapping) and seg.get("settings") is None and by_index.get(seg.get("index")):
            seg = {**seg, "settings": by_index[seg.get("index")]}
        out.append(seg)
    return out


# -- Arrow schemas and card tables from the records ------------------------------------------
def _scalars() -> dict[Any, pa.DataType]:
    import pyarrow as pa

    return {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a record field's annotation (scalars and lists of scalars)."""
    import pyarrow as pa

    inner = _strip_optional(annotation)
    scalars = _scalars()
    if inner in scalars:
        return scalars[inner]
    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner)
        return pa.list_(arrow_type(item))
    raise TypeError(f"no Arrow type for {annotation!r}")


def arrow_fields(record: type[Record], *, skip: Sequence[str] = ()) -> list[pa.Field]:
    import pyarrow as pa

    hints = typing.get_type_hints(record)
    return [pa.field(name, arrow_type(hints[name])) for name in record.model_fields if name not in skip]


def arrow_schema(record: type[Record], *, extra: Sequence[pa.Field] = ()) -> pa.Schema:
    """The Hub (Parquet) schema of a record: its declared fields in order, nested ones from `extra`."""
    import pyarrow as pa

    nested = {f.name for f in extra}
    fields = []
    hints = typing.get_type_hints(record)
    for name in record.model_fields:
        if name in nested:
            fields.append(next(f for f in extra if f.name == name))
        elif name not in getattr(record, "HUB_NESTED", ()):
            fields.append(pa.field(name, arrow_type(hints[name])))
    return pa.schema(fields)


def field_docs(record: type[Record]) -> dict[str, tuple[str, str, str]]:
    """column -> (meaning, unit, when null) for the dataset cards."""
    out: dict[str, tuple[str, str, str]] = {}
    for name, info in record.model_fields.items():
        out[name] = _field_doc(info)
    return out


def _field_doc(info: FieldInfo) -> tuple[str, str, str]:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return (info.description or "", str(extra.get("unit") or ""), str(extra.get("null") or ""))
