"""TraceMind UI reads our published traces: a traced run is published to the fake Hub, loaded the
way TraceMind loads it, and every fact its trace screens rely on is checked with TraceMind's own
operations.

The functions below re-implement, faithfully and only as far as the checks need, what TraceMind-AI
does with a traces dataset (`data_loader.py` DataLoader.load_traces / get_trace_by_id,
`screens/trace_detail.py` process_trace_data / create_span_table, `components/thought_graph.py`
create_thought_graph / get_node_color): where it reads a field, with the same lookups and guards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smoltrace.hub import HubPublisher
from tests.fakes.chat_servers import Script, Turn, call, final
from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401 - fixture
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    hub_online,
    openai_server_fixture,
    run_main,
    runner_env_fixture,
    task,
    write_jsonl,
)


# -- TraceMind-AI, re-implemented -------------------------------------------------------------
def tm_load_traces(repo: str, token: str) -> list[dict[str, Any]]:
    """data_loader.DataLoader._load_traces_from_hf."""
    from datasets import load_dataset

    ds = load_dataset(repo, split="train", token=token)
    return ds.to_pandas().to_dict("records")


def tm_get_trace_by_id(traces: list[dict[str, Any]], trace_id: str) -> dict[str, Any] | None:
    """data_loader.DataLoader.get_trace_by_id."""
    for trace in traces:
        if trace.get("trace_id") == trace_id or trace.get("traceId") == trace_id:
            if "spans" in trace:
                spans = trace["spans"]
                if hasattr(spans, "tolist"):
                    trace["spans"] = spans.tolist()
                elif not isinstance(spans, list):
                    trace["spans"] = list(spans) if spans is not None else []
            return trace
    return None


def _tm_timestamp(span: dict[str, Any], field_name: str) -> int:
    variations = [
        field_name,
        field_name.lower(),
        field_name.replace("Time", "TimeUnixNano"),
        field_name[0].lower() + field_name[1:],
        field_name.replace("Time", "_time").lower(),
        field_name.replace("Time", "_time_unix_nano").lower(),
    ]
    for var in variations:
        if var in span:
            value = span[var]
            return int(value) if isinstance(value, str) else value
    return 0


def _safe_numeric(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return value if isinstance(value, int | float) else float(value)
    except (ValueError, TypeError):
        return None


def tm_process_trace_data(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """screens/trace_detail.process_trace_data (the waterfall's span table)."""
    start_times = [_tm_timestamp(s, "startTime") for s in spans]
    min_start = min(start_times) if start_times else 0
    processed = []
    for idx, span in enumerate(spans):
        start_time = _tm_timestamp(span, "startTime")
        end_time = _tm_timestamp(span, "endTime")
        relative_start = (start_time - min_start) / 1_000_000
        if "duration_ms" in span and span["duration_ms"] is not None:
            actual_duration = float(span["duration_ms"])
        else:
            actual_duration = (end_time - start_time) / 1_000_000
        span_id = span.get("spanId") or span.get("span_id") or span.get("spanID") or f"span_{idx}"
        parent_id = span.get("parentSpanId") or span.get("parent_span_id") or span.get("parentSpanID")
        span_kind = span.get("kind", "INTERNAL")
        attributes = span.get("attributes", {})
        if isinstance(attributes, dict) and "openinference.span.kind" in attributes:
            openinference_kind = attributes.get("openinference.span.kind")
            if openinference_kind:
                span_kind = openinference_kind.upper()
        token_info: dict[str, int] = {}
        cost_info: dict[str, float] = {}
        if isinstance(attributes, dict):
            prompt_tokens = completion_tokens = None
            if "gen_ai.usage.prompt_tokens" in attributes:
                prompt_tokens = _safe_numeric(attributes["gen_ai.usage.prompt_tokens"])
            if "gen_ai.usage.completion_tokens" in attributes:
                completion_tokens = _safe_numeric(attributes["gen_ai.usage.completion_tokens"])
            if "llm.token_count.prompt" in attributes and prompt_tokens is None:
                prompt_tokens = _safe_numeric(attributes["llm.token_count.prompt"])
            if "llm.token_count.completion" in attributes and completion_tokens is None:
                completion_tokens = _safe_numeric(attributes["llm.token_count.completion"])
            if prompt_tokens is not None:
                token_info["prompt_tokens"] = int(prompt_tokens)
            if completion_tokens is not None:
                token_info["completion_tokens"] = int(completion_tokens)
            if "prompt_tokens" in token_info and "completion_tokens" in token_info:
                token_info["total_tokens"] = token_info["prompt_tokens"] + token_info["completion_tokens"]
            if "gen_ai.usage.cost.total" in attributes:
                cost = _safe_numeric(attributes["gen_ai.usage.cost.total"])
                if cost is not None:
                    cost_info["total_cost"] = cost
            elif "llm.usage.cost" in attributes:
                cost = _safe_numeric(attributes["llm.usage.cost"])
                if cost is not None:
                    cost_info["total_cost"] = cost
        processed.append(
            {
                "span_id": span_id,
                "parent_id": parent_id,
                "name": span.get("name", "Unknown"),
                "kind": span_kind,
                "start_time": relative_start,
                "actual_duration": actual_duration,
                "attributes": attributes,
                "status": span.get("status", {}).get("code", "UNKNOWN"),
                "tokens": token_info,
                "cost": cost_info,
            }
        )
    return processed


def tm_thought_graph(spans: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """components/thought_graph.create_thought_graph: its nodes (with their data) and edges."""
    nodes: dict[str, dict[str, Any]] = {}
    for span in spans:
        span_id = span.get("spanId") or span.get("span_id") or span.get("spanID")
        if not span_id:
            continue
        kind = span.get("kind", "INTERNAL")
        attributes = span.get("attributes", {})
        if isinstance(attributes, dict) and "openinference.span.kind" in attributes:
            openinference_kind = attributes.get("openinference.span.kind", kind)
            if openinference_kind:
                kind = openinference_kind.upper()
        node = {"name": span.get("name", "Unknown"), "kind": kind, "status": span.get("status", {}).get("code", "OK")}
        if isinstance(attributes, dict):
            if "gen_ai.usage.prompt_tokens" in attributes:
                node["prompt_tokens"] = attributes["gen_ai.usage.prompt_tokens"]
            if "gen_ai.usage.completion_tokens" in attributes:
                node["completion_tokens"] = attributes["gen_ai.usage.completion_tokens"]
            if "gen_ai.usage.cost.total" in attributes:
                node["cost"] = attributes["gen_ai.usage.cost.total"]
            elif "llm.usage.cost" in attributes:
                node["cost"] = attributes["llm.usage.cost"]
            if "gen_ai.request.model" in attributes:
                node["model"] = attributes["gen_ai.request.model"]
            elif "llm.model" in attributes:
                node["model"] = attributes["llm.model"]
            if "tool.name" in attributes:
                node["tool_name"] = attributes["tool.name"]
        # the hover text: these conversions must not raise
        int(node.get("prompt_tokens", 0) or 0) + int(node.get("completion_tokens", 0) or 0)
        if "cost" in node and node["cost"] is not None:
            float(node["cost"])
        nodes[span_id] = node
    edges = []
    for span in spans:
        span_id = span.get("spanId") or span.get("span_id") or span.get("spanID")
        parent_id = span.get("parentSpanId") or span.get("parent_span_id") or span.get("parentSpanID")
        if span_id and parent_id and parent_id in nodes:
            edges.append((parent_id, span_id))
    return nodes, edges


def tm_node_color(kind: str, status: str) -> str:
    """components/thought_graph.get_node_color."""
    if status == "ERROR":
        return "#DC143C"
    return {"LLM": "#9B59B6", "AGENT": "#1ABC9C", "CHAIN": "#3498DB", "TOOL": "#E67E22", "INTERNAL": "#95A5A6"}.get(kind, "#4682B4")


# -- the run ----------------------------------------------------------------------------------
def test_tracemind_reads_every_fact_of_a_published_traced_run(
    runner_env: None, fake_hub, openai_server, tmp_path: Path, monkeypatch
) -> None:
    hub = fake_hub.hub
    script = Script()
    script.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    script.add("Tokyo", Turn(status=500, times=10))  # the model fails: an error the waterfall must show red
    server = openai_server(script)
    tasks = write_jsonl(
        tmp_path / "tasks.jsonl",
        [task("weather", "What's the weather in Paris, France?", expected_tool="get_weather"), task("broken", "Weather in Tokyo?")],
    )
    token = tmp_path / "hf_token"
    token.write_text(hub.token, "utf-8")
    run = run_main(
        [
            "--model", "openai/gpt-4o-mini", "--api-base", server.api_base, "--dataset-name", str(tasks),
            "--max-steps", "3", "--max-retries", "0", "--quiet", "--enable-otel",
        ],
        tmp_path / "out",
    )  # fmt: skip
    assert run.rc in (0, 1), run.stderr
    hub_online(monkeypatch)
    report = HubPublisher(token=hub.token, endpoint=hub.url).publish(run.run_dir)
    results = {r["task_id"]: r for r in run.results}
    local_traces = json.loads((run.run_dir / "traces.json").read_text())

    traces = tm_load_traces(report.datasets["traces"], hub.token)
    assert len(traces) == len(local_traces) == 2
    seen_kinds: set[str] = set()
    for task_id, row in results.items():
        trace = tm_get_trace_by_id(traces, row["trace_id"])
        assert trace is not None, f"{task_id}: the results row's trace_id finds its trace"
        spans = trace["spans"]
        assert isinstance(spans, list) and spans
        # every span's attributes reach TraceMind as a dict (it ignores anything else)
        assert all(isinstance(s["attributes"], dict) for s in spans)
        processed = tm_process_trace_data(spans)
        statuses = {p["status"] for p in processed}
        assert "UNKNOWN" not in statuses and statuses <= {"OK", "UNSET", "ERROR"}, statuses
        kinds = {p["kind"] for p in processed}
        seen_kinds |= kinds
        # the waterfall: real start offsets and durations, the root first and longest
        root = next(p for p in processed if p["parent_id"] is None)
        assert root["name"] == "test_evaluation" and root["start_time"] == 0
        assert all(0 <= p["start_time"] <= root["actual_duration"] + 1 for p in processed)
        assert abs(root["actual_duration"] - row["execution_time_ms"]) < 1
        # the thought graph: one node per span, a tree under the root, error nodes red
        nodes, edges = tm_thought_graph(spans)
        assert len(nodes) == len(spans) and len(edges) == len(spans) - 1
        if task_id == "weather":
            llm = [p for p in processed if p["kind"] == "LLM"]
            assert llm and all(p["tokens"].get("prompt_tokens", 0) > 0 and p["tokens"].get("completion_tokens", 0) > 0 for p in llm)
            # each model call counted once: the innermost model spans (litellm's under smolagents')
            calls = [p for p in llm if not any(q["parent_id"] == p["span_id"] for q in llm)]
            assert sum(p["tokens"]["total_tokens"] for p in calls) == row["total_tokens"] > 0
            # cost on every model span; the calls sum to the row's cost (litellm's price for gpt-4o-mini)
            assert all(p["cost"].get("total_cost", 0) > 0 for p in llm)
            assert row["cost_usd"] and abs(sum(p["cost"]["total_cost"] for p in calls) - row["cost_usd"]) < 1e-9
            # and the current GenAI names next to the OpenInference ones
            assert all(p["attributes"]["gen_ai.usage.input_tokens"] == p["tokens"]["prompt_tokens"] for p in llm)
            assert all(p["attributes"]["gen_ai.usage.output_tokens"] == p["tokens"]["completion_tokens"] for p in llm)
            assert all(nodes[p["span_id"]]["model"] == "openai/gpt-4o-mini" for p in llm)
            tools = [p for p in processed if p["kind"] == "TOOL"]
            assert any(nodes[p["span_id"]].get("tool_name") == "get_weather" for p in tools)
            assert "ERROR" not in statuses
        else:
            assert "ERROR" in statuses
            assert any(tm_node_color(n["kind"], n["status"]) == "#DC143C" for n in nodes.values())
    assert {"LLM", "TOOL", "AGENT"} <= seen_kinds, seen_kinds
    # resource attributes (the run id) and links (to the run span) survive publishing
    first = tm_get_trace_by_id(traces, results["weather"]["trace_id"])["spans"][0]
    assert first["resource"]["attributes"]["run.id"] == results["weather"]["run_id"]
    assert first["links"] and len(first["links"][0]["span_id"]) == 16
    # traces.json has the same shape as the published rows
    local = next(d for d in local_traces if d["trace_id"] == results["weather"]["trace_id"])
    published = tm_get_trace_by_id(traces, local["trace_id"])
    assert set(local) - {"spans"} <= set(published) and set(local["spans"][0]) == set(published["spans"][0])
    assert local["spans"][0]["status"] == published["spans"][0]["status"]
