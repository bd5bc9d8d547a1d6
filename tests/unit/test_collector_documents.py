"""From OTLP payloads to the run's documents (smoltrace.collector.documents): span dicts with W3C
hex ids, one trace document per trace (root-span duration; tokens and cost from one model span per call,
the innermost full one), metrics.json in OTLP JSON (GPU/CO2/energy only), one flattened row per GPU per
timestamp with TraceMind's columns, and the energy series."""

from __future__ import annotations

import re

import pytest

from smoltrace.collector.documents import (
    energy_at,
    energy_series,
    gpu_resource_metrics,
    metric_rows,
    metrics_json,
    spans_from_requests,
    trace_documents,
)
from tests.fakes.otlp_payloads import (
    NESTED_TRACE_ID,
    gpu_metrics_request,
    gpu_sample,
    nested_model_trace,
    span,
    trace_request,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
TRACEMIND_ROW_COLUMNS = [
    "run_id",
    "service_name",
    "timestamp",
    "timestamp_unix_nano",
    "gpu_id",
    "gpu_name",
    "gpu_utilization_percent",
    "gpu_memory_used_mib",
    "gpu_memory_total_mib",
    "gpu_temperature_celsius",
    "gpu_power_watts",
    "co2_emissions_gco2e",
    "power_cost_usd",
]
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def docs_of(*requests, run_id: str = "run-x"):
    return trace_documents(spans_from_requests([r.SerializeToString() for r in requests]), run_id)


# -- spans ------------------------------------------------------------------------------------
def test_span_dicts_have_w3c_hex_ids_and_typed_attributes() -> None:
    request = trace_request(
        "run-x",
        [
            span(0x1, 0xAB, None, "test_evaluation", T0, T0 + 5 * S, {"n": 3, "f": 0.5, "b": True, "l": ["a", "b"], "s": "x"}),
            span(0x1, 0xCD, 0xAB, "child", T0 + S, T0 + 2 * S),
        ],
    )
    spans = spans_from_requests([request.SerializeToString()])
    root, child = spans
    assert root["trace_id"] == "00000000000000000000000000000001"
    assert root["span_id"] == "00000000000000ab"
    assert root["parent_span_id"] is None
    assert child["parent_span_id"] == "00000000000000ab"
    for s in spans:
        assert HEX32.match(s["trace_id"]) and HEX16.match(s["span_id"])
    assert root["attributes"] == {"n": 3, "f": 0.5, "b": True, "l": ["a", "b"], "s": "x"}
    assert root["duration_ms"] == 5000.0
    assert root["start_time_iso"] == "2023-11-14T22:13:20.000000Z"
    assert root["resource"]["attributes"]["run.id"] == "run-x"
    assert root["scope"] == "tests"
    assert root["kind"] == "INTERNAL" and root["status"]["code"] == "UNSET"


def test_ids_are_lowercase_hex_whatever_the_bytes() -> None:
    request = trace_request("r", [span(0xABCDEF0123456789ABCDEF0123456789, 0xFEDCBA9876543210, None, "test_evaluation", T0, T0 + 1)])
    (doc,) = docs_of(request)
    assert doc["trace_id"] == "abcdef0123456789abcdef0123456789"
    assert doc["root_span_id"] == "fedcba9876543210"


# -- trace documents --------------------------------------------------------------------------
def test_tokens_come_from_the_innermost_model_spans_only() -> None:
    request, expected = nested_model_trace()
    (doc,) = docs_of(request, run_id="run-nested")
    assert doc["prompt_tokens"] == expected["prompt_tokens"], "agent spans and outer model spans must not be counted"
    assert doc["completion_tokens"] == expected["completion_tokens"]
    assert doc["total_tokens"] == expected["prompt_tokens"] + expected["completion_tokens"]
    assert doc["model_calls"] == expected["model_calls"]
    assert doc["total_cost_usd"] == pytest.approx(expected["cost_usd"])
    assert doc["span_count"] == expected["span_count"]


def test_duration_is_the_root_spans_not_a_sum() -> None:
    request, expected = nested_model_trace()
    (doc,) = docs_of(request)
    summed = sum(s["duration_ms"] for s in doc["spans"])
    assert summed > 2 * expected["duration_ms"]
    assert doc["total_duration_ms"] == expected["duration_ms"]


def test_trace_document_identifies_the_test_and_its_root() -> None:
    request, _ = nested_model_trace()
    (doc,) = docs_of(request, run_id="run-nested")
    assert doc["trace_id"] == format(NESTED_TRACE_ID, "032x")
    assert doc["root_span_id"] == format(1, "016x")
    assert doc["run_id"] == "run-nested"
    assert doc["test_ids"] == ["t1"] and doc["test_case_uids"] == ["tool:t1"]
    assert doc["agent_type"] == "tool"
    assert doc["incomplete"] is False
    assert doc["spans"][0]["name"] == "test_evaluation", "spans sorted by start time"


def test_spans_of_one_trace_in_several_requests_make_one_document() -> None:
    request, expected = nested_model_trace()
    spans = list(request.resource_spans[0].scope_spans[0].spans)
    first, second = trace_request("r", spans[:4]), trace_request("r", spans[4:])
    (doc,) = docs_of(second, first)  # arrival order does not matter
    assert doc["span_count"] == expected["span_count"]
    assert doc["prompt_tokens"] == expected["prompt_tokens"]


def test_a_trace_that_lost_its_root_is_marked_incomplete() -> None:
    request, _ = nested_model_trace()
    spans = [s for s in request.resource_spans[0].scope_spans[0].spans if s.name != "test_evaluation"]
    (doc,) = docs_of(trace_request("r", spans))
    assert doc["incomplete"] is True


def test_the_run_span_trace_is_not_a_task_document() -> None:
    run_span = span(0x99, 0x1, None, "smoltrace.run", T0, T0 + 10 * S)
    task_root = span(0x42, 0x2, None, "test_evaluation", T0 + S, T0 + 2 * S, {"test.id": "a"})
    docs = docs_of(trace_request("r", [run_span, task_root]))
    assert [d["trace_id"] for d in docs] == [format(0x42, "032x")]


def test_documents_are_ordered_by_start_time() -> None:
    late = span(0x1, 0x1, None, "test_evaluation", T0 + 5 * S, T0 + 6 * S)
    early = span(0x2, 0x2, None, "test_evaluation", T0 + S, T0 + 9 * S)
    assert [d["trace_id"][-1] for d in docs_of(trace_request("r", [late, early]))] == ["2", "1"]


def test_a_partial_wrapper_span_below_a_full_model_span_does_not_replace_it() -> None:
    """A transformers call as the runner traces it: smolagents' TransformersModel.generate (prompt
    and completion) with genai's huggingface.model.generate below it, which gives no input and the
    whole sequence as output. The call counts once, from the full span; a litellm call (both spans
    full) still counts from the innermost one."""
    llm = {"openinference.span.kind": "LLM"}
    root = span(0x7, 0x1, None, "test_evaluation", T0, T0 + 9 * S, {"test.id": "t"})
    hf_parent = span(
        0x7, 0x2, 0x1, "TransformersModel.generate", T0, T0 + S, llm | {"llm.token_count.prompt": 2767, "llm.token_count.completion": 32}
    )
    hf_child = span(
        0x7, 0x3, 0x2, "huggingface.model.generate", T0, T0 + S, {"gen_ai.usage.output_tokens": 2799, "gen_ai.usage.total_tokens": 2799}
    )
    lite_parent = span(
        0x7,
        0x4,
        0x1,
        "LiteLLMModel.generate",
        T0 + 2 * S,
        T0 + 3 * S,
        llm | {"llm.token_count.prompt": 900, "llm.token_count.completion": 10},
    )
    lite_child = span(
        0x7, 0x5, 0x4, "completion", T0 + 2 * S, T0 + 3 * S, llm | {"llm.token_count.prompt": 901, "llm.token_count.completion": 11}
    )
    (doc,) = docs_of(trace_request("r", [root, hf_parent, hf_child, lite_parent, lite_child]))
    assert (doc["prompt_tokens"], doc["completion_tokens"], doc["model_calls"]) == (2767 + 901, 32 + 11, 2)
    # with no full span above it, a partial span is the call's only account and still counts
    (alone,) = docs_of(
        trace_request("r", [root, span(0x7, 0x3, 0x1, "huggingface.model.generate", T0, T0 + S, {"gen_ai.usage.output_tokens": 5})])
    )
    assert (alone["prompt_tokens"], alone["completion_tokens"], alone["model_calls"]) == (0, 5, 1)


def test_total_token_count_is_used_when_there_is_no_split() -> None:
    only_total = span(0x5, 0x1, None, "completion", T0, T0 + S, {"openinference.span.kind": "LLM", "llm.token_count.total": 42})
    (doc,) = docs_of(trace_request("r", [only_total]))
    assert (doc["prompt_tokens"], doc["completion_tokens"], doc["model_calls"]) == (42, 0, 1)


# -- metrics.json -----------------------------------------------------------------------------
def gpu_payloads(run_id: str = "run-m") -> list[bytes]:
    samples = [gpu_sample(T0 + i * S, {"0": 10.0 * i, "1": 20.0 * i}) for i in range(3)]
    return [gpu_metrics_request(run_id, samples).SerializeToString()]


def test_metrics_json_keeps_gpu_metrics_in_otlp_json() -> None:
    kept = gpu_resource_metrics(gpu_payloads())
    doc = metrics_json(kept, "run-m")
    assert list(doc) == ["run_id", "resourceMetrics"] and doc["run_id"] == "run-m"
    (rm,) = doc["resourceMetrics"]
    names = [m["name"] for sm in rm["scopeMetrics"] for m in sm["metrics"]]
    for name in ("gen_ai.gpu.utilization", "gen_ai.gpu.memory.used", "gen_ai.gpu.temperature", "gen_ai.co2.emissions", "gen_ai.gpu.energy"):
        assert name in names
    assert "process.cpu.time" not in names, "only GPU/CO2/energy metrics"
    resource = {a["key"]: a["value"] for a in rm["resource"]["attributes"]}
    assert resource["run.id"] == {"stringValue": "run-m"}
    point = rm["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]
    assert isinstance(point["timeUnixNano"], str), "OTLP JSON writes 64-bit integers as strings"


def test_metrics_json_is_empty_when_nothing_was_measured() -> None:
    assert metrics_json(gpu_resource_metrics([]), "r") == {"run_id": "r", "resourceMetrics": []}
    non_gpu_only = gpu_metrics_request("r", [(T0, {"0": {"process.cpu.time": 1.0}})]).SerializeToString()
    assert gpu_resource_metrics([non_gpu_only]) == []


# -- flattened rows ---------------------------------------------------------------------------
def test_one_row_per_gpu_per_timestamp_with_tracemind_columns() -> None:
    rows = metric_rows(gpu_resource_metrics(gpu_payloads()), "run-m")
    assert len(rows) == 3 * 2
    for row in rows:
        assert set(TRACEMIND_ROW_COLUMNS) <= set(row)
        assert row["run_id"] == "run-m" and row["service_name"] == "smoltrace-gpu-exporter"
        assert row["gpu_name"] == f"Fake GPU {row['gpu_id']}"
        assert row["timestamp"].endswith("Z") and row["timestamp_unix_nano"].isdigit()
        for column in TRACEMIND_ROW_COLUMNS[6:]:
            assert isinstance(row[column], float), (column, row)
    keys = [(r["timestamp_unix_nano"], r["gpu_id"]) for r in rows]
    assert len(set(keys)) == len(keys)
    by_key = {(int(r["timestamp_unix_nano"]), r["gpu_id"]): r for r in rows}
    assert by_key[(T0 + 2 * S, "1")]["gpu_utilization_percent"] == 51.0
    assert by_key[(T0 + 2 * S, "1")]["co2_emissions_gco2e"] == pytest.approx(40.0 * 1e-4)
    assert by_key[(T0 + S, "0")]["gpu_temperature_celsius"] == 60.0
    assert [r["gpu_id"] for r in rows[:2]] == ["0", "1"]


def test_energy_series_sums_the_gpus_and_interpolates() -> None:
    series = energy_series(gpu_resource_metrics(gpu_payloads()))
    assert series == [(T0, 0.0), (T0 + S, 30.0), (T0 + 2 * S, 60.0)]
    assert energy_at(series, T0 + S // 2) == pytest.approx(15.0)
    assert energy_at(series, T0 - S) == 0.0 and energy_at(series, T0 + 9 * S) == 60.0
    assert energy_at([], T0) == 0.0


def test_energy_series_carries_a_gpu_forward_when_it_misses_a_sample() -> None:
    samples = [gpu_sample(T0, {"0": 1.0, "1": 2.0}), gpu_sample(T0 + S, {"0": 5.0})]
    series = energy_series(gpu_resource_metrics([gpu_metrics_request("r", samples).SerializeToString()]))
    assert series == [(T0, 3.0), (T0 + S, 7.0)]


def test_mig_instances_sharing_a_gpu_id_keep_their_own_rows_and_energy() -> None:
    """Two MIG instances of GPU 0 in one run: both carry gpu_id "0" (the parent's index) and their
    own gpu_uuid; neither row nor energy may overwrite the other's."""
    samples = [gpu_sample(T0 + i * S, {"0": 10.0 * i, "0b": 30.0 * i}) for i in range(3)]
    request = gpu_metrics_request("run-mig", samples)
    for metric in request.resource_metrics[0].scope_metrics[0].metrics:
        points = metric.gauge.data_points if metric.WhichOneof("data") == "gauge" else metric.sum.data_points
        for point in points:
            for kv in point.attributes:
                if kv.key == "gpu_id" and kv.value.string_value == "0b":
                    kv.value.string_value = "0"  # same index as the other instance; gpu_uuid stays GPU-fake-0b
    kept = gpu_resource_metrics([request.SerializeToString()])
    rows = metric_rows(kept, "run-mig")
    assert len(rows) == 3 * 2
    assert {(r["gpu_id"], r["gpu_uuid"]) for r in rows} == {("0", "GPU-fake-0"), ("0", "GPU-fake-0b")}
    assert energy_series(kept)[-1] == (T0 + 2 * S, 20.0 + 60.0)
