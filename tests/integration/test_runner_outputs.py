"""`smoltrace-eval` end to end against the fake OpenAI server: both agent types pass with the right
tools, and the run folder (results, leaderboard row, metadata) is complete and holds no secret."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from smoltrace.tasks import load_default_tasks
from tests.fakes.chat_servers import FakeOpenAIServer, Script, call, code, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    openai_server_fixture,
    run_main,
    runner_env_fixture,
    runner_env_module_fixture,
    standard_script,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")

SMOLTRACE_COLUMNS = [
    "model",
    "evaluation_date",
    "task_id",
    "test_case_uid",
    "agent_type",
    "difficulty",
    "prompt",
    "success",
    "tool_called",
    "correct_tool",
    "final_answer_called",
    "response_correct",
    "tools_used",
    "steps",
    "response",
    "error",
    "trace_id",
    "span_id",
    "run_id",
    "execution_time_ms",
    "total_tokens",
    "cost_usd",
    "enhanced_trace_info",
]
OUR_COLUMNS = ["expected_tool", "expected_tool_calls", "error_type", "attempts", "duration_ms", "provider"]
LEADERBOARD_COLUMNS = [
    "run_id",
    "model",
    "agent_type",
    "provider",
    "timestamp",
    "submitted_by",
    "use_case",
    "team",
    "purpose",
    "suite_version",
    "results_dataset",
    "traces_dataset",
    "metrics_dataset",
    "dataset_used",
    "total_tests",
    "successful_tests",
    "failed_tests",
    "success_rate",
    "avg_steps",
    "avg_duration_ms",
    "total_duration_ms",
    "total_tokens",
    "avg_tokens_per_test",
    "total_cost_usd",
    "avg_cost_per_test_usd",
    "co2_emissions_g",
    "power_cost_total_usd",
    "gpu_utilization_avg",
    "gpu_utilization_max",
    "gpu_memory_avg_mib",
    "gpu_memory_max_mib",
    "gpu_temperature_avg",
    "gpu_temperature_max",
    "gpu_power_avg_w",
    "notes",
]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
HF_SECRET = "hf_PLANTEDtoken0123456789"
KEY_SECRET = "sk-PLANTED-key-9876543210"


@pytest.fixture(scope="module")
def both_run(runner_env_module, tmp_path_factory: pytest.TempPathFactory):
    """One run of both agent types (first tool task, first code task), secrets planted."""
    tmp_path = tmp_path_factory.mktemp("outputs")
    script = standard_script()
    token_file = tmp_path / "hf_token"
    token_file.write_text(HF_SECRET + "\n", "utf-8")
    with FakeOpenAIServer(script) as server:
        run = run_main(
            [
                "--model",
                "openai/fake-model",
                "--api-base",
                server.api_base,  # type: ignore[attr-defined]
                "--limit",
                "1",
                "--run-id",
                "run-outputs-1",
                "--output-format",
                "json",
                "--hf-token-file",
                str(token_file),
                "--model-args",
                f"api_key={KEY_SECRET}",
                "temperature=0",
                "--use-case",
                "Customer Support",
                "--seed",
                "7",
            ],
            tmp_path / "out",
        )
    return run, script


def test_both_agent_types_pass_with_the_tools_they_used(both_run) -> None:
    run, script = both_run
    assert run.rc == 0, run.stderr
    assert "Results: " in run.stdout and "(2/2 passed)" in run.stdout
    assert [r["test_case_uid"] for r in run.results] == ["tool:tool_weather_single", "code:code_calculator_single"]
    tool, code_row = run.results
    for row in (tool, code_row):
        assert row["success"] is True, row
        assert row["final_answer_called"] and row["correct_tool"] and row["response_correct"] and row["tool_called"]
        assert row["error"] is None and row["error_type"] is None
        assert row["steps"] == 2
        assert row["attempts"] == 2 and row["retries"] == 0
    assert tool["tools_used"] == ["get_weather"]  # final_answer is not a tool use
    assert tool["response"] == "It is 20°C and Partly Cloudy in Paris"
    assert code_row["tools_used"] == ["calculator"]  # what the executed code invoked
    assert code_row["response"] == "15678"
    assert script.requests == 4


def test_results_columns(both_run) -> None:
    run, _ = both_run
    for row in run.results:
        assert list(row)[: len(SMOLTRACE_COLUMNS)] == SMOLTRACE_COLUMNS, "SMOLTRACE's columns first, in its order"
        assert set(OUR_COLUMNS) <= set(row)
        assert row["model"] == "openai/fake-model"
        assert row["provider"] == "litellm"
        assert row["run_id"] == "run-outputs-1"
        assert ISO_UTC.match(row["evaluation_date"]), row["evaluation_date"]
        assert row["duration_ms"] > 0 and row["execution_time_ms"] == row["duration_ms"]
        assert row["total_tokens"] > 0 and row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        info = json.loads(row["enhanced_trace_info"])
        assert info["total_tokens"] == row["total_tokens"] and info["duration_ms"] == row["duration_ms"]
        assert row["test_case_uid"] == f"{row['agent_type']}:{row['task_id']}"
    tool, code_row = run.results
    assert (tool["expected_tool"], tool["expected_tool_calls"]) == ("get_weather", 1)
    assert (code_row["expected_tool"], code_row["expected_tool_calls"]) == ("calculator", 1)
    assert code_row["expected_answer"] == "15678"
    assert (tool["test_index"], code_row["test_index"]) == (0, 1)


def test_leaderboard_row(both_run) -> None:
    run, _ = both_run
    board = run.leaderboard
    assert next(iter(board)) == "schema_version"
    assert set(LEADERBOARD_COLUMNS) <= set(board)
    assert board["run_id"] == "run-outputs-1"
    assert board["provider"] == "litellm"
    assert board["model"] == "openai/fake-model"
    assert board["agent_type"] == "both"
    assert board["use_case"] == "customer-support"
    assert (board["total_tests"], board["successful_tests"], board["failed_tests"], board["success_rate"]) == (2, 2, 0, 100.0)
    assert board["avg_steps"] == 2.0
    assert board["total_tokens"] == sum(r["total_tokens"] for r in run.results)
    assert board["dataset_used"] == "smoltrace/default-tasks"
    assert board["results_dataset"].endswith("results.json")
    assert board["co2_emissions_g"] is None and board["gpu_utilization_avg"] is None  # an API model: no GPU numbers
    assert ISO_UTC.match(board["timestamp"])


def test_metadata(both_run) -> None:
    run, _ = both_run
    meta = run.metadata
    assert meta["status"] == "completed"
    assert meta["run_id"] == "run-outputs-1" and meta["provider"] == "litellm"
    assert (meta["num_results"], meta["num_planned"], meta["passed"]) == (2, 2, 2)
    assert meta["seed"] == 7 and meta["config"]["seed"] == 7
    assert meta["dataset_used"] == "smoltrace/default-tasks"
    assert meta["dataset_sha256"] == load_default_tasks().sha256
    assert re.fullmatch(r"[0-9a-f]{64}", meta["dataset_sha256"])
    assert "sha" in meta["git"] and "dirty" in meta["git"]
    for package in ("python", "smoltrace", "smolagents", "litellm", "transformers"):
        assert meta["versions"][package], package
    assert meta["config"]["model_args"] == {"api_key": "[REDACTED]", "temperature": 0}
    assert meta["config"]["disable_gpu_metrics"] is False and meta["config"]["enable_gpu_metrics"] is False
    assert meta["config"]["use_case"] == "customer-support"
    assert meta["gpu_metrics"]["enabled"] is False
    assert ISO_UTC.match(meta["started_at"]) and ISO_UTC.match(meta["finished_at"])
    assert meta["timings"]["executions_this_process"] == 2


def test_no_secret_in_any_output(both_run) -> None:
    run, _ = both_run
    files = [p for p in run.run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"results.json", "metadata.json", "leaderboard_row.json", "checkpoint.jsonl"}
    for path in files:
        text = path.read_text("utf-8", errors="replace")
        assert HF_SECRET not in text, path
        assert KEY_SECRET not in text, path
    assert HF_SECRET not in run.stdout + run.stderr
    assert KEY_SECRET not in run.stdout + run.stderr


def test_checkpoint_matches_results(both_run) -> None:
    run, _ = both_run
    lines = (run.run_dir / "checkpoint.jsonl").read_text("utf-8").splitlines()
    assert sorted(json.loads(line)["test_case_uid"] for line in lines) == sorted(r["test_case_uid"] for r in run.results)


def test_custom_dataset_failures_are_scored_and_explained(openai_server, tmp_path: Path) -> None:
    """A wrong tool, a wrong answer and a no-tool task, all through the real agents."""
    dataset = write_jsonl(
        tmp_path / "tasks.jsonl",
        [
            task("wrong-tool", "Weather in Tokyo, Japan please", expected_tool="get_weather", expected_keywords=["18"]),
            task("wrong-answer", "Add 2 and 2 with the calculator", expected_tool="calculator", expected_answer=4),
            task("no-tool", "Capital of France? One word.", expected_tool_calls=0, expected_answer="Paris"),
            task("code-no-tool", "Sum 1..100 in code", agent_type="code", expected_answer=5050),
        ],
    )
    script = Script()
    script.add("Tokyo", call("calculator", expression="18"), final("18°C"))
    script.add("Add 2 and 2", call("calculator", expression="2+2"), final("5"))
    script.add("Capital of France", final("Paris."))
    script.add("Sum 1..100", code("final_answer(sum(range(1, 101)))"))
    server = openai_server(script)
    run = run_main(["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset)], tmp_path / "out")
    assert run.rc == 0, run.stderr
    rows = {r["task_id"]: r for r in run.results}
    assert set(rows) == {"wrong-tool", "wrong-answer", "no-tool", "code-no-tool"}
    assert rows["wrong-tool"]["success"] is False and rows["wrong-tool"]["correct_tool"] is False
    assert rows["wrong-tool"]["response_correct"] is True
    assert rows["wrong-tool"]["tools_used"] == ["calculator"]
    assert "expected get_weather" in rows["wrong-tool"]["failure_reason"]
    assert rows["wrong-answer"]["success"] is False and rows["wrong-answer"]["correct_tool"] is True
    assert rows["wrong-answer"]["response_correct"] is False
    assert rows["no-tool"]["success"] is True and rows["no-tool"]["tools_used"] == [] and rows["no-tool"]["tool_called"] is False
    assert rows["code-no-tool"]["success"] is True and rows["code-no-tool"]["response"] == "5050"
    assert rows["code-no-tool"]["tools_used"] == []
    assert run.metadata["dataset_used"] == str(dataset)
    assert run.leaderboard["successful_tests"] == 2 and run.leaderboard["success_rate"] == 50.0
    assert "(2/4 passed)" in run.stdout


def test_run_ids_default_to_uuids_and_folders_do_not_collide(openai_server, tmp_path: Path) -> None:
    server = openai_server(standard_script())
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "1", "--agent-type", "tool", "--quiet"]
    first = run_main(args, tmp_path / "out")
    second = run_main(args, tmp_path / "out")
    assert first.rc == second.rc == 0
    assert len(first.run_dirs) == 2
    ids = {json.loads((d / "metadata.json").read_text())["run_id"] for d in first.run_dirs}
    assert len(ids) == 2 and all(uuid.UUID(i) for i in ids)
    assert first.stdout.strip().splitlines()[-1].startswith("Results: ")
    assert len(first.stdout.strip().splitlines()) == 1


def test_parallel_workers_give_every_row_once_in_plan_order(openai_server, tmp_path: Path) -> None:
    rows, script = [], Script(latency_s=0.02)
    for i in range(10):
        rows.append(task(f"t{i}", f"Job {i}: weather in Tokyo, Japan?", expected_tool="get_weather", expected_keywords=["18"]))
        script.add(f"Job {i}:", call("get_weather", location="Tokyo, Japan"), final("18°C and clear"))
    dataset = write_jsonl(tmp_path / "jobs.jsonl", rows)
    server = openai_server(script)
    run = run_main(
        ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--parallel-workers", "4", "--quiet"],
        tmp_path / "out",
    )
    assert run.rc == 0
    assert [r["test_case_uid"] for r in run.results] == [f"tool:t{i}" for i in range(10)]
    assert all(r["success"] and r["tools_used"] == ["get_weather"] and r["attempts"] == 2 for r in run.results)
    assert script.requests == 20


def test_optional_file_tools_stay_in_the_working_directory(openai_server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("the code word is PELICAN", "utf-8")
    (tmp_path / "secret.txt").write_text("TOP-SECRET-VALUE", "utf-8")
    dataset = write_jsonl(
        tmp_path / "files.jsonl",
        [
            task("read-notes", "Read notes.txt and tell me the code word", expected_tool="read_file", expected_keywords=["PELICAN"]),
            task("escape", "Read ../secret.txt for me", expected_tool="read_file", expected_keywords=["could not"]),
        ],
    )
    script = Script()
    script.record_bodies = True
    script.add("Read notes.txt", call("read_file", file_path="notes.txt"), final("The code word is PELICAN"))
    script.add("Read ../secret.txt", call("read_file", file_path="../secret.txt"), final("I could not read it"))
    server = openai_server(script)
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--enable-tools", "read_file"]
    run = run_main([*args, "--working-directory", str(work), "--quiet"], tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert run.row("tool:read-notes")["success"] is True
    assert any("PELICAN" in body for body in script.bodies), "the tool output reached the model"
    escape = run.row("tool:escape")
    assert escape["tools_used"] == ["read_file"] and escape["success"] is True
    assert not any("TOP-SECRET-VALUE" in body for body in script.bodies), "a file outside the working directory was read"
    assert any("outside the working directory" in body for body in script.bodies)
    assert run.metadata["config"]["enable_tools"] == ["read_file"]
