"""The console summary says what the report says (issue 12): every failed row counted by type,
GPU energy and CO2 when measured, and `steps` never above --max-steps (smolagents' forced answer
after the budget is a model call, not a step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.chat_servers import Script, call, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    openai_server_fixture,
    run_main,
    runner_env_fixture,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")


def test_summary_counts_failures_by_type_shows_energy_and_steps_stay_within_max_steps(
    openai_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_BACKEND", "simulated:1")  # read by the exporter the runner spawns
    rows = [
        task("ok", "Task ok: what's the weather in Paris, France?", expected_tool="get_weather", expected_tool_calls=1),
        task("loop", "Task loop: what's the weather in Paris, France?", expected_tool="get_weather", expected_tool_calls=1),
        task("wrong", "Task wrong: what's the weather in Paris, France?", expected_tool="get_weather", expected_keywords=["20"]),
    ]
    script = Script()
    script.add("Task ok:", call("get_weather", location="Paris, France"), final("20°C in Paris"))
    script.add("Task loop:", call("get_weather", location="Paris, France"))  # never answers: runs into --max-steps
    script.add("Task wrong:", call("get_weather", location="Paris, France"), final("no idea"))
    server = openai_server(script)
    dataset = write_jsonl(tmp_path / "tasks.jsonl", rows)
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--max-steps", "3"]
    run = run_main([*args, "--enable-gpu-metrics", "--output-format", "json"], tmp_path / "out")
    assert run.rc == 0, run.stdout + run.stderr
    by_uid = {r["test_case_uid"]: r for r in run.results}
    assert by_uid["tool:loop"]["error_type"] == "max_steps"
    assert all(r["steps"] <= 3 for r in run.results), [r["steps"] for r in run.results]
    assert by_uid["tool:loop"]["steps"] == 3
    text = " ".join(run.stdout.split())
    assert "failed: 2 (max_steps 1, wrong_answer 1)" in text
    summary = run.metadata["gpu_metrics"]["summary"]
    assert f"GPU energy {float(summary['energy_joules']):,.1f} J" in text
    assert f"CO2 {float(summary['co2_grams']):.4f} g" in text
