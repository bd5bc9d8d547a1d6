"""Synthetic OTLP requests for the collector tests: spans with any attributes, GPU metric pushes
shaped like the exporter's, and requests mixing several runs.

    spans = [span(TRACE, 1, None, "test_evaluation", 0, 100, {"test.id": "t1"}), ...]
    payload = trace_request("run-a", spans).SerializeToString()
    gpu = gpu_metrics_request("run-a", [(t_ns, {"0": {...}, "1": {...}}), ...])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

GPU_GAUGES = {
    "gen_ai.gpu.utilization": "%",
    "gen_ai.gpu.memory.used": "MiB",
    "gen_ai.gpu.memory.total": "MiB",
    "gen_ai.gpu.temperature": "Cel",
    "gen_ai.gpu.power": "W",
}
GPU_SUMS = {"gen_ai.gpu.energy": "J", "gen_ai.co2.emissions": "gCO2e", "gen_ai.power.cost": "USD"}


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        out = AnyValue()
        out.kvlist_value.values.extend(key_values(value))
        return out
    if isinstance(value, list | tuple):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def ident(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def span(
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any] | None = None,
    kind: int = Span.SPAN_KIND_INTERNAL,
) -> Span:
    out = Span(
        trace_id=ident(trace_id, 16),
        span_id=ident(span_id, 8),
        name=name,
        kind=kind,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns,
    )
    if parent_id is not None:
        out.parent_span_id = ident(parent_id, 8)
    out.attributes.extend(key_values(attributes or {}))
    return out


def resource_spans(run_id: str | None, spans: Iterable[Span], service: str = "smoltrace-eval", scope: str = "tests") -> ResourceSpans:
    rs = ResourceSpans()
    attrs: dict[str, Any] = {"service.name": service}
    if run_id is not None:
        attrs["run.id"] = run_id
    rs.resource.attributes.extend(key_values(attrs))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    ss.spans.extend(spans)
    return rs


def trace_request(run_id: str | None, spans: Iterable[Span], **kwargs: Any) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[resource_spans(run_id, spans, **kwargs)])


def mixed_trace_request(parts: Sequence[tuple[str | None, Sequence[Span]]]) -> ExportTraceServiceRequest:
    """One request holding one resource per (run id, spans): what a shared SDK would send."""
    return ExportTraceServiceRequest(resource_spans=[resource_spans(run_id, spans) for run_id, spans in parts])


# -- metrics ------------------------------------------------------------------------------------
Sample = tuple[int, Mapping[str, Mapping[str, float]]]  # (time ns, {gpu_id: {metric name: value}})


def resource_metrics(
    run_id: str | None,
    samples: Sequence[Sample],
    service: str = "smoltrace-gpu-exporter",
    extra_metrics: Sequence[str] = ("process.cpu.time",),
) -> ResourceMetrics:
    """The exporter's shape: gauges and cumulative sums, one data point per GPU per sample,
    data-point attributes gpu_id, gpu_name, gpu_uuid. `extra_metrics` are non-GPU metrics the
    collector must leave out of metrics.json."""
    rm = ResourceMetrics()
    attrs: dict[str, Any] = {"service.name": service, "gpu.simulated": True}
    if run_id is not None:
        attrs["run.id"] = run_id
    rm.resource.attributes.extend(key_values(attrs))
    sm = rm.scope_metrics.add()
    sm.scope.name = "smoltrace.gpu"
    start = samples[0][0] if samples else 0
    for name in [*GPU_GAUGES, *GPU_SUMS, *extra_metrics]:
        metric = Metric(name=name, unit=GPU_GAUGES.get(name) or GPU_SUMS.get(name) or "1")
        if name in GPU_SUMS:
            metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
            metric.sum.is_monotonic = True
            points = metric.sum.data_points
        else:
            points = metric.gauge.data_points
        for ts, per_gpu in samples:
            for gpu_id, values in per_gpu.items():
                if name not in values:
                    continue
                point = NumberDataPoint(time_unix_nano=ts, start_time_unix_nano=start, as_double=float(values[name]))
                point.attributes.extend(key_values({"gpu_id": gpu_id, "gpu_name": f"Fake GPU {gpu_id}", "gpu_uuid": f"GPU-fake-{gpu_id}"}))
                points.append(point)
        if len(points):
            sm.metrics.append(metric)
    return rm


def gpu_metrics_request(run_id: str | None, samples: Sequence[Sample], **kwargs: Any) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[resource_metrics(run_id, samples, **kwargs)])


def gpu_sample(ts_ns: int, energy_j: Mapping[str, float], util: float = 50.0, extra: float = 0.0) -> Sample:
    """A sample for each GPU in `energy_j` (cumulative joules) with every metric the rows carry."""
    return (
        ts_ns,
        {
            gpu: {
                "gen_ai.gpu.utilization": util + i,
                "gen_ai.gpu.memory.used": 1000.0 + i,
                "gen_ai.gpu.memory.total": 81559.0,
                "gen_ai.gpu.temperature": 60.0 + i,
                "gen_ai.gpu.power": 300.0 + i,
                "gen_ai.gpu.energy": joules,
                "gen_ai.co2.emissions": joules * 1e-4,
                "gen_ai.power.cost": joules * 1e-6,
                "process.cpu.time": extra,
            }
            for i, (gpu, joules) in enumerate(energy_j.items())
        },
    )


# -- a trace with every kind of model-span nesting ---------------------------------------------
NESTED_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


def nested_model_trace(run_id: str = "run-nested") -> tuple[ExportTraceServiceRequest, dict[str, int]]:
    """A task trace whose token figures are easy to double count:

    test_evaluation (root, 1000 ms)
      ToolCallingAgent.run   AGENT, rolled-up llm.token_count.* of everything below (must not count)
        Step 1               CHAIN
          LiteLLMModel.generate   LLM 100/10 (smolagents, wraps the next one: must not count)
            completion            LLM 100/10 (litellm: counts)
          WeatherTool        TOOL
        Step 2               CHAIN
          chat gpt           gen_ai.usage.* 7/3, no openinference kind (wraps the next one: must not count)
            chat inner       gen_ai.usage.* 7/3 (counts)
          completion         LLM 50/5 (counts)

    Returns the request and the expected totals.
    """
    t0 = 1_700_000_000_000_000_000
    ms = 1_000_000
    tid = NESTED_TRACE_ID
    llm = "openinference.span.kind"
    spans = [
        span(tid, 1, None, "test_evaluation", t0, t0 + 1000 * ms, {"test.id": "t1", "test.case_uid": "tool:t1", "agent.type": "tool"}),
        span(
            tid,
            2,
            1,
            "ToolCallingAgent.run",
            t0 + 1 * ms,
            t0 + 990 * ms,
            {llm: "AGENT", "llm.token_count.prompt": 157, "llm.token_count.completion": 18, "llm.token_count.total": 175},
        ),
        span(tid, 3, 2, "Step 1", t0 + 2 * ms, t0 + 400 * ms, {llm: "CHAIN"}),
        span(
            tid,
            4,
            3,
            "LiteLLMModel.generate",
            t0 + 3 * ms,
            t0 + 300 * ms,
            {llm: "LLM", "llm.token_count.prompt": 100, "llm.token_count.completion": 10, "gen_ai.usage.cost.total": 0.5},
        ),
        span(
            tid,
            5,
            4,
            "completion",
            t0 + 4 * ms,
            t0 + 290 * ms,
            {llm: "LLM", "llm.token_count.prompt": 100, "llm.token_count.completion": 10, "gen_ai.usage.cost.total": 0.25},
        ),
        span(tid, 6, 3, "WeatherTool", t0 + 310 * ms, t0 + 320 * ms, {llm: "TOOL"}),
        span(tid, 7, 2, "Step 2", t0 + 401 * ms, t0 + 980 * ms, {llm: "CHAIN"}),
        span(tid, 8, 7, "chat gpt", t0 + 402 * ms, t0 + 600 * ms, {"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3}),
        span(tid, 9, 8, "chat inner", t0 + 403 * ms, t0 + 590 * ms, {"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3}),
        span(
            tid,
            10,
            7,
            "completion",
            t0 + 700 * ms,
            t0 + 900 * ms,
            {llm: "LLM", "llm.token_count.prompt": 50, "llm.token_count.completion": 5, "gen_ai.usage.cost.total": 0.125},
        ),
    ]
    expected = {
        "prompt_tokens": 100 + 7 + 50,
        "completion_tokens": 10 + 3 + 5,
        "model_calls": 3,
        "span_count": len(spans),
        "duration_ms": 1000,
        "cost_usd": 0.375,
    }
    return trace_request(run_id, spans), expected
