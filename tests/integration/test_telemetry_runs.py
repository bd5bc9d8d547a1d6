"""Telemetry end to end, in process, with the fake model servers and the simulated GPU exporter:
the trace tree of tool and code agent tasks, results rows linked to their traces, W3C ids,
root-span durations, tokens counted once, metrics.json and the flattened GPU rows, per-task energy
summing to the run's total, the three expected metrics outputs (local with GPU, local without,
API), and a second evaluation in the same process that does not mix with the first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chat_servers import FakeOllamaServer, FakeOpenAIServer, Script, call, code, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    CliRun,
    ConnectionRecorder,
    connection_recorder_fixture,
    read_json,
    run_main,
    runner_env_fixture,
    runner_env_module_fixture,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
ROW_COLUMNS = [
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
GPU_METRICS = ("gen_ai.gpu.utilization", "gen_ai.gpu.memory.used", "gen_ai.gpu.temperature", "gen_ai.co2.emissions")
MORE_GPU_METRICS = ("gen_ai.gpu.memory.total", "gen_ai.gpu.power", "gen_ai.gpu.energy", "gen_ai.power.cost")
TOOL_UID, CODE_UID = "tool:tool_weather_single", "code:code_calculator_single"


def four_task_script() -> Script:
    """The first two tool tasks and the first two code tasks of the default set, all answered."""
    s = Script()
    s.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    s.add("time", call("get_current_time", timezone="UTC"), final("It is noon"))
    s.add("234 multiplied", code('r = calculator(expression="234*67")\nprint(r)'), code("final_answer(15678)"))
    s.add("square root", code("final_answer(12)"))
    return s


class Run:
    def __init__(self, cli: CliRun, script: Script) -> None:
        assert cli.rc == 0, cli.stdout + cli.stderr
        self.cli = cli
        self.script = script
        self.dir = cli.run_dir
        self.results: list[dict[str, Any]] = read_json(self.dir / "results.json")
        self.traces: list[dict[str, Any]] = read_json(self.dir / "traces.json")
        self.metrics: dict[str, Any] = read_json(self.dir / "metrics.json")
        self.rows: list[dict[str, Any]] = read_json(self.dir / "metrics_rows.json")
        self.metadata: dict[str, Any] = read_json(self.dir / "metadata.json")
        self.run_id: str = self.metadata["run_id"]

    def doc(self, uid: str) -> dict[str, Any]:
        docs = [d for d in self.traces if uid in d["test_case_uids"]]
        assert len(docs) == 1, (uid, [d["test_case_uids"] for d in self.traces])
        return docs[0]

    def row(self, uid: str) -> dict[str, Any]:
        (row,) = [r for r in self.results if r["test_case_uid"] == uid]
        return row


def metric_names(metrics: dict[str, Any]) -> set[str]:
    return {m["name"] for rm in metrics["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"]}


@pytest.fixture(scope="module")
def gpu_run(runner_env_module: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A traced run of a local provider (ollama: GPU metrics on by default), measured by the
    exporter the runner starts itself (simulated, 2 GPUs): 2 tool tasks and 2 code tasks on 2
    workers."""
    runner_env_module.setenv("SMOLTRACE_GPU_EXPORTER_BACKEND", "simulated:2")
    script = four_task_script()
    with FakeOllamaServer(script) as server:
        cli = run_main(
            [
                "--provider",
                "ollama",
                "--model",
                "tiny",
                "--api-base",
                server.url,  # type: ignore[attr-defined]
                "--limit",
                "2",
                "--max-steps",
                "3",
                "--enable-otel",
                "--parallel-workers",
                "2",
                "--run-id",
                "run-telemetry-a",
                "--quiet",
            ],
            tmp_path_factory.mktemp("gpu_run") / "out",
        )
    runner_env_module.delenv("SMOLTRACE_GPU_EXPORTER_BACKEND")
    yield Run(cli, script)


def test_local_run_measures_the_gpu_by_default(gpu_run: Run) -> None:
    assert "[OK] genai_otel_instrument enabled (GPU metrics: True)" in gpu_run.cli.stdout
    gpu = gpu_run.metadata["gpu_metrics"]
    assert gpu["enabled"] is True and gpu["reason"] == "local provider ollama"
    assert gpu["embedded_exporter"] is True and gpu["gpu_available"] is True and len(gpu["devices"]) == 2
    assert gpu["warning"] is None and gpu["summary"]["run_id"] == gpu_run.run_id


# -- the trace tree ---------------------------------------------------------------------------
def span_tree(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str | None, list[dict[str, Any]]]]:
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in doc["spans"]:
        children.setdefault(s["parent_span_id"], []).append(s)
    (root,) = children[None]
    return root, children


def kind(span: dict[str, Any]) -> str | None:
    return span["attributes"].get("openinference.span.kind")


def descendants(span: dict[str, Any], children: dict[str | None, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for child in children.get(span["span_id"], []):
        out.append(child)
        out.extend(descendants(child, children))
    return out


@pytest.mark.parametrize(
    ("uid", "agent_type", "agent_span", "tool_span"),
    [(TOOL_UID, "tool", "ToolCallingAgent.run", "WeatherTool"), (CODE_UID, "code", "CodeAgent.run", "CalculatorTool")],
)
def test_trace_tree_of_an_agent_task(gpu_run: Run, uid: str, agent_type: str, agent_span: str, tool_span: str) -> None:
    doc = gpu_run.doc(uid)
    root, children = span_tree(doc)
    assert root["name"] == "test_evaluation"
    task_id = uid.split(":", 1)[1]
    assert root["attributes"]["test.id"] == task_id
    assert root["attributes"]["test.case_uid"] == uid
    assert root["attributes"]["agent.type"] == agent_type
    assert root["attributes"]["test.difficulty"] == "easy"
    assert root["attributes"]["test.success"] is True
    # the score on the root span: smoltrace attributes and the OTel GenAI evaluation event
    assert root["attributes"]["smoltrace.success"] is True and root["attributes"]["smoltrace.failure_reason"] == ""
    (evaluation,) = [e for e in root["events"] if e["name"] == "gen_ai.evaluation.result"]
    assert evaluation["attributes"] == {
        "gen_ai.evaluation.name": "smoltrace.task_success",
        "gen_ai.evaluation.score.value": 1.0,
        "gen_ai.evaluation.score.label": "pass",
    }
    assert doc["agent_type"] == agent_type and doc["test_ids"] == [task_id] and doc["incomplete"] is False

    (agent,) = children[root["span_id"]]
    assert agent["name"] == agent_span and kind(agent) == "AGENT"
    steps = children[agent["span_id"]]
    step_spans = [s for s in steps if kind(s) == "CHAIN"]
    assert [s["name"] for s in step_spans] == ["Step 1", "Step 2"]
    for step in step_spans:
        below = descendants(step, children)
        assert [s for s in below if kind(s) == "LLM"], f"{step['name']} has no model span"
    tools = [s for s in descendants(step_spans[0], children) if kind(s) == "TOOL"]
    assert [t["name"] for t in tools] == [tool_span]
    final_tools = [s["name"] for s in descendants(step_spans[1], children) if kind(s) == "TOOL"]
    if agent_type == "tool":
        assert final_tools == ["FinalAnswerTool"]
    for s in doc["spans"]:
        assert s["trace_id"] == doc["trace_id"]
        assert s["resource"]["attributes"]["run.id"] == gpu_run.run_id, s["name"]
        assert s["resource"]["attributes"]["service.name"] == "smoltrace-eval"


def test_every_span_of_the_run_carries_its_run_id(gpu_run: Run) -> None:
    assert len(gpu_run.traces) == 4
    for doc in gpu_run.traces:
        assert doc["run_id"] == gpu_run.run_id
        assert {s["resource"]["attributes"].get("run.id") for s in doc["spans"]} == {gpu_run.run_id}


def test_results_rows_link_to_their_traces(gpu_run: Run) -> None:
    assert len(gpu_run.results) == 4
    by_trace = {d["trace_id"]: d for d in gpu_run.traces}
    assert len(by_trace) == 4, "one trace per task execution"
    for row in gpu_run.results:
        doc = by_trace[row["trace_id"]]
        assert row["span_id"] == doc["root_span_id"]
        assert doc["test_case_uids"] == [row["test_case_uid"]]
        root = next(s for s in doc["spans"] if s["span_id"] == doc["root_span_id"])
        assert root["name"] == "test_evaluation" and root["parent_span_id"] is None
    telemetry = gpu_run.metadata["telemetry"]
    assert telemetry["rows"]["rows_without_trace"] == []
    assert telemetry["tracing"] is True and telemetry["spans_flushed"] is True
    assert telemetry["received"]["traces"] == 4
    assert telemetry["received"]["spans"] == sum(d["span_count"] for d in gpu_run.traces) + 1, "plus the run span"


def test_ids_are_w3c_hex(gpu_run: Run) -> None:
    for row in gpu_run.results:
        assert HEX32.match(row["trace_id"]) and HEX16.match(row["span_id"]), row
    for doc in gpu_run.traces:
        assert HEX32.match(doc["trace_id"]) and HEX16.match(doc["root_span_id"])
        for s in doc["spans"]:
            assert HEX32.match(s["trace_id"]) and HEX16.match(s["span_id"])
            assert s["parent_span_id"] is None or HEX16.match(s["parent_span_id"])
            for link in s["links"]:
                assert HEX32.match(link["trace_id"]) and HEX16.match(link["span_id"])


def test_duration_is_the_root_spans(gpu_run: Run) -> None:
    for row in gpu_run.results:
        doc = gpu_run.doc(row["test_case_uid"])
        root = next(s for s in doc["spans"] if s["span_id"] == doc["root_span_id"])
        assert doc["total_duration_ms"] == root["duration_ms"] == (root["end_time"] - root["start_time"]) / 1e6
        assert row["execution_time_ms"] == round(root["duration_ms"], 3)
        assert all(s["duration_ms"] <= root["duration_ms"] + 1e-6 for s in doc["spans"])
        assert sum(s["duration_ms"] for s in doc["spans"]) > root["duration_ms"], "nested spans are not summed"


def test_tokens_are_counted_once(gpu_run: Run) -> None:
    served_prompt, served_completion = gpu_run.script.prompt_tokens_served, gpu_run.script.completion_tokens_served
    assert served_prompt > 0
    assert sum(r["prompt_tokens"] for r in gpu_run.results) == served_prompt
    assert sum(r["completion_tokens"] for r in gpu_run.results) == served_completion
    for row in gpu_run.results:
        doc = gpu_run.doc(row["test_case_uid"])
        assert row["total_tokens"] == doc["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        agent = next(s for s in doc["spans"] if kind(s) == "AGENT")
        rolled_up = agent["attributes"].get("llm.token_count.total")
        assert rolled_up is None or rolled_up == doc["total_tokens"], "the agent span's roll-up is not added on top"
        assert doc["model_calls"] == sum(1 for s in doc["spans"] if s["name"] == "completion")


def test_metrics_json_of_a_local_run_with_a_gpu(gpu_run: Run) -> None:
    metrics = gpu_run.metrics
    assert metrics["run_id"] == gpu_run.run_id
    assert metrics["resourceMetrics"], "the simulated GPUs were measured"
    names = metric_names(metrics)
    assert set(GPU_METRICS) <= names and set(MORE_GPU_METRICS) <= names
    assert all(n.startswith(("gen_ai.gpu.", "gen_ai.co2.", "gen_ai.power.")) for n in names)
    for rm in metrics["resourceMetrics"]:
        resource = {a["key"]: a["value"] for a in rm["resource"]["attributes"]}
        assert resource["run.id"] == {"stringValue": gpu_run.run_id}
        assert resource["service.name"] == {"stringValue": "smoltrace-gpu-exporter"}
        assert resource["gpu.simulated"] == {"boolValue": True}


def test_flattened_gpu_rows(gpu_run: Run) -> None:
    rows = gpu_run.rows
    assert rows
    by_time: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        assert set(ROW_COLUMNS) <= set(row), sorted(row)
        assert row["run_id"] == gpu_run.run_id and row["service_name"] == "smoltrace-gpu-exporter"
        for column in ROW_COLUMNS[6:]:
            assert isinstance(row[column], float), (column, row)
        by_time.setdefault(row["timestamp_unix_nano"], []).append(row)
    for ts, group in by_time.items():
        assert sorted(r["gpu_id"] for r in group) == ["0", "1"], f"two simulated GPUs -> two rows at {ts}"
    assert len(rows) == 2 * len(by_time)
    devices = {str(d["index"]): d["name"] for d in gpu_run.metadata["gpu_metrics"]["devices"]}
    assert {r["gpu_id"]: r["gpu_name"] for r in rows} == devices


def assert_energy_sums_to_the_total(run: Run) -> None:
    summary = run.metadata["gpu_metrics"]["summary"]
    total = float(summary["energy_joules"])
    assert total > 0
    energies = [r["energy_j"] for r in run.results]
    assert all(isinstance(e, float) and e >= 0 for e in energies), energies
    assert sum(energies) == pytest.approx(total, rel=1e-6)
    assert sum(r["co2_g"] for r in run.results) == pytest.approx(float(summary["co2_grams"]), rel=1e-6)
    assert run.metadata["telemetry"]["rows"]["energy_attributed"] is True


def test_per_task_energy_sums_to_the_total_with_several_workers(gpu_run: Run) -> None:
    assert gpu_run.metadata["config"]["parallel_workers"] == 2
    assert_energy_sums_to_the_total(gpu_run)


def test_per_task_energy_sums_to_the_total_with_one_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner_env: None) -> None:
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_BACKEND", "simulated:2")
    script = four_task_script()
    with FakeOpenAIServer(script) as server:
        cli = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,  # type: ignore[attr-defined]
                "--agent-type",
                "tool",
                "--limit",
                "2",
                "--enable-gpu-metrics",
                "--parallel-workers",
                "1",
                "--quiet",
            ],
            tmp_path / "out",
        )
    run = Run(cli, script)
    assert len(run.results) == 2
    assert_energy_sums_to_the_total(run)


# -- the other two expected metrics outputs -----------------------------------------------------
def real_gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU
        return False
    pynvml.nvmlShutdown()
    return True


def test_local_run_without_a_gpu_has_empty_resource_metrics(tmp_path: Path, runner_env: None) -> None:
    """ollama (local) with the real NVML backend on a machine with no GPU."""
    if real_gpu_present():
        pytest.skip("a real GPU is present")
    script = four_task_script()
    with FakeOllamaServer(script) as server:
        cli = run_main(
            [
                "--provider",
                "ollama",
                "--model",
                "tiny",
                "--api-base",
                server.url,
                "--agent-type",
                "tool",
                "--limit",
                "1",
                "--enable-otel",
                "--quiet",
            ],  # type: ignore[attr-defined]
            tmp_path / "out",
        )
    run = Run(cli, script)
    assert "[OK] genai_otel_instrument enabled (GPU metrics: True)" in cli.stdout
    assert run.metadata["gpu_metrics"]["enabled"] is True and run.metadata["gpu_metrics"]["gpu_available"] is False
    assert run.metrics == {"run_id": run.run_id, "resourceMetrics": []}
    assert run.rows == []
    assert run.results[0]["energy_j"] is None
    assert len(run.traces) == 1 and run.results[0]["trace_id"] == run.traces[0]["trace_id"]


def test_api_run_has_empty_resource_metrics_and_never_contacts_the_exporter(
    tmp_path: Path, runner_env: None, connection_recorder: ConnectionRecorder
) -> None:
    script = four_task_script()
    with FakeOpenAIServer(script) as server:
        cli = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,
                "--agent-type",
                "tool",
                "--limit",
                "1",
                "--enable-otel",
                "--gpu-exporter",
                connection_recorder.address,
                "--quiet",
            ],  # type: ignore[attr-defined]
            tmp_path / "out",
        )
    run = Run(cli, script)
    assert "[OK] genai_otel_instrument enabled (GPU metrics: False)" in cli.stdout
    assert connection_recorder.connections == 0
    assert run.metrics == {"run_id": run.run_id, "resourceMetrics": []}
    assert run.rows == []
    assert run.metadata["gpu_metrics"]["enabled"] is False
    assert run.results[0]["energy_j"] is None and run.results[0]["co2_g"] is None
    assert run.metadata["telemetry"]["received"]["gpu_data_points"] == 0
    assert len(run.traces) == 1


# -- a second evaluation in the same process ------------------------------------------------------
def test_a_second_evaluation_in_the_same_process_does_not_mix(gpu_run: Run, tmp_path: Path, runner_env: None) -> None:
    from opentelemetry import trace

    from smoltrace.telemetry import RoutingTracerProvider

    script = four_task_script()
    with FakeOpenAIServer(script) as server:
        cli = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,
                "--limit",
                "1",
                "--enable-otel",
                "--parallel-workers",
                "2",
                "--run-id",
                "run-telemetry-b",
                "--quiet",
            ],  # type: ignore[attr-defined]
            tmp_path / "out",
        )
    run_b = Run(cli, script)
    assert isinstance(trace.get_tracer_provider(), RoutingTracerProvider), "the router stays the global provider"
    assert run_b.run_id != gpu_run.run_id
    assert len(run_b.traces) == 2
    for doc in run_b.traces:
        assert doc["run_id"] == run_b.run_id
        assert {s["resource"]["attributes"]["run.id"] for s in doc["spans"]} == {run_b.run_id}
        # the library spans (agent, steps, model calls, tools) reached run B's own provider
        assert {"AGENT", "CHAIN", "LLM", "TOOL"} <= {kind(s) for s in doc["spans"]}, [s["name"] for s in doc["spans"]]
    a_traces = {d["trace_id"] for d in gpu_run.traces}
    b_traces = {d["trace_id"] for d in run_b.traces}
    assert not a_traces & b_traces
    a_spans = {s["span_id"] for d in gpu_run.traces for s in d["spans"]}
    assert not a_spans & {s["span_id"] for d in run_b.traces for s in d["spans"]}
    assert {r["trace_id"] for r in run_b.results} == b_traces
    # run A's files were not touched by run B
    assert read_json(gpu_run.dir / "traces.json") == gpu_run.traces
    assert sum(r["prompt_tokens"] for r in run_b.results) == script.prompt_tokens_served
