"""From OTLP payloads to the run's documents: trace docs, metrics.json, flattened GPU rows, and
each task's share of the GPU energy. Pure functions over protobuf messages and dicts.

- Spans become dicts with W3C ids (32/16 lowercase hex), UTC nanosecond times, typed attributes.
- A trace document per trace: its root span (no parent), the test it ran (`test.id`,
  `test.case_uid`, `agent.type` on the root), its spans, and totals. Duration is the root span's
  (nested spans are not summed). Tokens and cost come from model spans only, the innermost ones:
  a model span with a model span below it (smolagents' `LiteLLMModel.generate` over litellm's
  `completion`) is not counted again, and agent/chain spans never are.
- metrics.json: `{"run_id", "resourceMetrics": [...]}` in OTLP JSON, GPU/CO2/energy metrics
  only, as the exporter pushed them (empty list when nothing was measured).
- Flattened rows: one per GPU per timestamp, TraceMind UI's columns.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics

RUN_ID_KEY = "run.id"
GPU_METRIC_PREFIXES = ("gen_ai.gpu.", "gen_ai.co2.", "gen_ai.power.")
ROW_COLUMNS = {
    "gen_ai.gpu.utilization": "gpu_utilization_percent",
    "gen_ai.gpu.memory.used": "gpu_memory_used_mib",
    "gen_ai.gpu.memory.total": "gpu_memory_total_mib",
    "gen_ai.gpu.temperature": "gpu_temperature_celsius",
    "gen_ai.gpu.power": "gpu_power_watts",
    "gen_ai.co2.emissions": "co2_emissions_gco2e",
    "gen_ai.power.cost": "power_cost_usd",
    "gen_ai.gpu.energy": "gpu_energy_joules",
}
_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
MODEL_SPAN_KINDS = {"LLM"}


# -- attributes -------------------------------------------------------------------------------
def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(items: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items}


def resource_run_id(resource_attributes: Iterable[KeyValue]) -> str:
    for kv in resource_attributes:
        if kv.key == RUN_ID_KEY:
            return str(any_value(kv.value) or "")
    return ""


def iso_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- spans ------------------------------------------------------------------------------------
def spans_from_requests(payloads: Iterable[bytes]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for payload in payloads:
        request = ExportTraceServiceRequest.FromString(payload)
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope.name
                for span in scope_spans.spans:
                    start, end = span.start_time_unix_nano, span.end_time_unix_nano
                    out.append(
                        {
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "name": span.name,
                            "kind": _KINDS.get(span.kind, str(span.kind)),
                            "start_time": start,
                            "end_time": end,
                            "start_time_iso": iso_ns(start),
                            "duration_ms": max(0, end - start) / 1e6,
                            "attributes": attributes(span.attributes),
                            "events": [
                                {"name": e.name, "timestamp": e.time_unix_nano, "attributes": attributes(e.attributes)} for e in span.events
                            ],
                            "links": [{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()} for link in span.links],
                            "status": {"code": _STATUS.get(span.status.code, "UNSET"), "description": span.status.message or None},
                            "scope": scope,
                            "resource": {"attributes": resource},
                        }
                    )
    return out


def _is_model_span(span: Mapping[str, Any]) -> bool:
    attrs = span["attributes"]
    return attrs.get("openinference.span.kind") in MODEL_SPAN_KINDS or (
        "openinference.span.kind" not in attrs and any(k.startswith("gen_ai.usage.") and k.endswith("tokens") for k in attrs)
    )


_PROMPT_KEYS = ("llm.token_count.prompt", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")


def _reports_input(span: Mapping[str, Any]) -> bool:
    """Whether a model span says how many tokens its call was given (a full account of the call)."""
    attrs = span["attributes"]
    return any(isinstance(attrs.get(k), int | float) and not isinstance(attrs.get(k), bool) for k in _PROMPT_KEYS)


def _first_number(attrs: Mapping[str, Any], keys: Sequence[str]) -> float:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


def span_tokens(span: Mapping[str, Any]) -> tuple[int, int]:
    attrs = span["attributes"]
    prompt = _first_number(attrs, _PROMPT_KEYS)
    completion = _first_number(attrs, ("llm.token_count.completion", "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"))
    if not prompt and not completion:
        total = _first_number(attrs, ("llm.token_count.total", "gen_ai.usage.total_tokens"))
        return int(total), 0
    return int(prompt), int(completion)


def span_cost(span: Mapping[str, Any]) -> float:
    return _first_number(span["attributes"], ("gen_ai.usage.cost.total", "llm.cost.total"))


def counted_model_spans(spans: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One span per model call: the innermost model span that gives the call's input tokens, else
    the innermost model span. A wrapper's span below a fuller one does not replace it: genai's
    `huggingface.model.generate` (under smolagents' `TransformersModel.generate`) gives no input and
    the whole sequence as output — counted, a call's 2,767 + 32 tokens read 0 + 2,799."""
    by_id = {s["span_id"]: s for s in spans}
    model = [s for s in spans if _is_model_span(s)]
    below: set[str] = set()  # model spans with a model span below them
    full_below: set[str] = set()  # ... with one that reports input tokens
    full_above: set[str] = set()  # model spans with a model span above them that reports input tokens
    for span in model:
        full = _reports_input(span)
        parent = span["parent_span_id"]
        seen = 0
        while parent and parent in by_id and seen < 1000:
            above = by_id[parent]
            if _is_model_span(above):
                below.add(parent)
                if full:
                    full_below.add(parent)
                if _reports_input(above):
                    full_above.add(span["span_id"])
            parent = above["parent_span_id"]
            seen += 1

    def counted(span: Mapping[str, Any]) -> bool:
        sid, full = span["span_id"], _reports_input(span)
        if sid not in below:  # innermost: unless a fuller span above accounts for the call
            return full or sid not in full_above
        return full and sid not in full_below  # the fullest account, with only partial ones below

    return [s for s in model if counted(s)]


def trace_documents(spans: Sequence[dict[str, Any]], run_id: str, skip_names: Sequence[str] = ("smoltrace.run",)) -> list[dict[str, Any]]:
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    docs = []
    for trace_id, members in by_trace.items():
        members.sort(key=lambda s: (s["start_time"], s["span_id"]))
        ids = {s["span_id"] for s in members}
        roots = [s for s in members if not s["parent_span_id"] or s["parent_span_id"] not in ids]
        root = next((s for s in roots if s["name"] == "test_evaluation"), roots[0] if roots else members[0])
        if root["name"] in skip_names:
            continue
        attrs = root["attributes"]
        model_spans = counted_model_spans(members)
        prompt = completion = 0
        for s in model_spans:
            p, c = span_tokens(s)
            prompt += p
            completion += c
        test_ids = sorted({str(s["attributes"]["test.id"]) for s in members if "test.id" in s["attributes"]})
        uids = sorted({str(s["attributes"]["test.case_uid"]) for s in members if "test.case_uid" in s["attributes"]})
        docs.append(
            {
                "trace_id": trace_id,
                "run_id": run_id,
                "root_span_id": root["span_id"],
                "test_ids": test_ids,
                "test_case_uids": uids,
                "agent_type": attrs.get("agent.type"),
                "spans": members,
                "span_count": len(members),
                "model_calls": len(model_spans),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "total_duration_ms": root["duration_ms"],
                "total_cost_usd": round(sum(span_cost(s) for s in model_spans), 8),
                "start_time": root["start_time"],
                "end_time": root["end_time"],
                "incomplete": not any(s["span_id"] == root["span_id"] and s["name"] == "test_evaluation" for s in members),
            }
        )
    docs.sort(key=lambda d: (d["start_time"], d["trace_id"]))
    return docs


# -- metrics ----------------------------------------------------------------------------------
def _gpu_only(resource_metrics: ResourceMetrics) -> ResourceMetrics | None:
    kept = ResourceMetrics()
    kept.resource.CopyFrom(resource_metrics.resource)
    kept.schema_url = resource_metrics.schema_url
    for scope_metrics in resource_metrics.scope_metrics:
        metrics = [m for m in scope_metrics.metrics if m.name.startswith(GPU_METRIC_PREFIXES)]
        if metrics:
            out = kept.scope_metrics.add()
            out.scope.CopyFrom(scope_metrics.scope)
            out.schema_url = scope_metrics.schema_url
            out.metrics.extend(metrics)
    return kept if kept.scope_metrics else None


def gpu_resource_metrics(payloads: Iterable[bytes]) -> list[ResourceMetrics]:
    out = []
    for payload in payloads:
        for resource_metrics in ExportMetricsServiceRequest.FromString(payload).resource_metrics:
            kept = _gpu_only(resource_metrics)
            if kept is not None:
                out.append(kept)
    return out


def relabel_run(resource_metrics: Sequence[Any], run_id: str, sampling_run_id: str) -> list[Any]:
    """A segment's data (ResourceMetrics or ResourceSpans) under the run's id: the resource's
    run.id becomes `run_id`, the exporter's id stays as `smoltrace.sampling_run_id`."""
    out = []
    for rm in resource_metrics:
        copy = type(rm)()
        copy.CopyFrom(rm)
        for kv in copy.resource.attributes:
            if kv.key == RUN_ID_KEY:
                kv.value.string_value = run_id
        extra = copy.resource.attributes.add()
        extra.key = "smoltrace.sampling_run_id"
        extra.value.string_value = sampling_run_id
        out.append(copy)
    return out


def metrics_json(resource_metrics: Sequence[ResourceMetrics], run_id: str) -> dict[str, Any]:
    """The seed's shape: {"run_id", "resourceMetrics": [OTLP JSON]} (camelCase, ints as strings)."""
    return {"run_id": run_id, "resourceMetrics": [MessageToDict(rm) for rm in resource_metrics]}


def _points(resource_metrics: Sequence[ResourceMetrics]) -> Iterable[tuple[str, str, Any]]:
    for rm in resource_metrics:
        service = str(attributes(rm.resource.attributes).get("service.name", "unknown"))
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                data = metric.WhichOneof("data")
                if data not in ("gauge", "sum"):
                    continue
                for point in getattr(metric, data).data_points:
                    yield service, metric.name, point


def _value(point: Any) -> float:
    return float(point.as_double if point.WhichOneof("value") == "as_double" else point.as_int)


def metric_rows(resource_metrics: Sequence[ResourceMetrics], run_id: str) -> list[dict[str, Any]]:
    """One row per (GPU, timestamp) with TraceMind UI's columns (none lost with several GPUs; MIG
    instances of one GPU share its gpu_id and are told apart by gpu_uuid)."""
    rows: dict[tuple[int, str, str], dict[str, Any]] = {}
    for service, name, point in _points(resource_metrics):
        attrs = attributes(point.attributes)
        gpu_id = str(attrs.get("gpu_id", ""))
        key = (point.time_unix_nano, gpu_id, str(attrs.get("gpu_uuid") or ""))
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "run_id": run_id,
                "service_name": service,
                "timestamp": iso_ns(point.time_unix_nano),
                "timestamp_unix_nano": str(point.time_unix_nano),
                "gpu_id": gpu_id,
                "gpu_name": attrs.get("gpu_name"),
                "gpu_uuid": attrs.get("gpu_uuid"),
                "gpu_utilization_percent": None,
                "gpu_memory_used_mib": None,
                "gpu_memory_total_mib": None,
                "gpu_temperature_celsius": None,
                "gpu_power_watts": None,
                "co2_emissions_gco2e": None,
                "power_cost_usd": None,
                "gpu_energy_joules": None,
            }
        row[ROW_COLUMNS.get(name, name.replace(".", "_"))] = _value(point)
    return [rows[k] for k in sorted(rows)]


def energy_series(resource_metrics: Sequence[ResourceMetrics]) -> list[tuple[int, float]]:
    """(timestamp ns, energy of all GPUs since the run started, J), from gen_ai.gpu.energy (a GPU by
    its UUID, else its index: MIG instances of one GPU share the index)."""
    per_time: dict[int, dict[str, float]] = defaultdict(dict)
    for _service, name, point in _points(resource_metrics):
        if name == "gen_ai.gpu.energy":
            attrs = attributes(point.attributes)
            per_time[point.time_unix_nano][str(attrs.get("gpu_uuid") or attrs.get("gpu_id", ""))] = _value(point)
    series: list[tuple[int, float]] = []
    last: dict[str, float] = {}
    for ts in sorted(per_time):
        last.update(per_time[ts])
        series.append((ts, sum(last.values())))
    return series


def energy_at(series: Sequence[tuple[int, float]], t_ns: int) -> float:
    """Cumulative energy at t, linear between samples, flat outside them."""
    if not series:
        return 0.0
    times = [t for t, _ in series]
    i = bisect.bisect_left(times, t_ns)
    if i == 0:
        return series[0][1]
    if i >= len(series):
        return series[-1][1]
    (t0, e0), (t1, e1) = series[i - 1], series[i]
    return e0 + (e1 - e0) * (t_ns - t0) / (t1 - t0) if t1 > t0 else e1


def apportion_energy(
    series: Sequence[tuple[int, float]], windows: Mapping[str, tuple[int, int]], total_joules: float | None = None
) -> dict[str, float]:
    """Each task's energy: inside its window (shared equally with the tasks running at the same
    time), plus a share of what no task was running for (start-up, gaps, teardown) in proportion
    to its direct energy, so the tasks sum to the run's total."""
    if not series or not windows:
        return dict.fromkeys(windows, 0.0)
    total = series[-1][1] - series[0][1] if total_joules is None else total_joules
    bounds = sorted({t for w in windows.values() for t in w})
    direct: dict[str, float] = dict.fromkeys(windows, 0.0)
    for a, b in itertools.pairwise(bounds):
        active = [uid for uid, (s, e) in windows.items() if s <= a and e >= b]
        if not active:
            continue
        segment = energy_at(series, b) - energy_at(series, a)
        for uid in active:
            direct[uid] += segment / len(active)
    # each task: its direct energy plus a share of the rest (total minus what the windows used) in
    # proportion to it, i.e. direct scaled by total / used (never negative, sums to the total)
    weight = sum(direct.values())
    if weight > 0:
        return {uid: total * (d / weight) for uid, d in direct.items()}
    # no energy inside any window: split by duration (evenly when every window is instantaneous)
    spans = {uid: max(0, e - s) for uid, (s, e) in windows.items()}
    if not any(spans.values()):
        spans = dict.fromkeys(windows, 1)
    whole = sum(spans.values())
    return {uid: total * spans[uid] / whole for uid in windows}


def dumps_compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
