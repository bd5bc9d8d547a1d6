"""Model-server faults through the real clients: rate limits, 5xx, hangs, malformed replies, and an
unreachable server at start. One execution's failure never stops the run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fakes.chat_servers import Script, Turn, call, code, error, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    closed_port,
    hub_online,
    ollama_server_fixture,
    openai_server_fixture,
    run_main,
    runner_env_fixture,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")

PROMPT = "What's the weather in Paris, France?"


def one_task(tmp_path: Path, agent_type: str = "tool") -> Path:
    return write_jsonl(
        tmp_path / "one.jsonl",
        [task("paris", PROMPT, agent_type=agent_type, expected_tool="get_weather", expected_tool_calls=1, expected_keywords=["20"])],
    )


def run_one(server_base: str, tmp_path: Path, *extra: str, agent_type: str = "tool"):
    return run_main(
        ["--model", "openai/fake", "--api-base", server_base, "--dataset-name", str(one_task(tmp_path, agent_type)), "--quiet", *extra],
        tmp_path / "out",
    )


def good_turns() -> tuple[Turn, Turn]:
    return call("get_weather", location="Paris, France"), final("20°C, partly cloudy")


@pytest.mark.parametrize("retry_after", [0.2, None], ids=["retry-after", "no-retry-after"])
def test_rate_limit_then_success(openai_server, tmp_path: Path, retry_after: float | None) -> None:
    script = Script().add(PROMPT, error(429, retry_after=retry_after), *good_turns())
    server = openai_server(script)
    started = time.perf_counter()
    run = run_one(server.api_base, tmp_path)
    elapsed = time.perf_counter() - started
    assert run.rc == 0, run.stderr
    (row,) = run.results
    assert row["success"] is True, row
    assert row["error_type"] is None
    assert row["attempts"] == 3  # two model calls, one of them retried once
    assert row["retries"] == 1
    assert script.requests == 3  # nobody else (litellm's HTTP client, smolagents) retried behind our back
    # the task's own time (imports excluded): smolagents' own retry would have waited 60 s
    assert row["duration_ms"] < 15_000, f"a 429 must not wait long here ({row['duration_ms']:.0f} ms)"
    assert elapsed < 60


def test_server_error_then_success(openai_server, tmp_path: Path) -> None:
    script = Script().add(PROMPT, error(500), *good_turns())
    server = openai_server(script)
    run = run_one(server.api_base, tmp_path)
    (row,) = run.results
    assert row["success"] is True, row
    assert row["attempts"] == 3 and row["retries"] == 1
    assert script.requests == 3


def test_persistent_server_error_is_recorded_and_the_run_completes(openai_server, tmp_path: Path) -> None:
    dataset = write_jsonl(
        tmp_path / "two.jsonl",
        [
            task("broken", "Broken: weather in Paris, France?", expected_tool="get_weather"),
            task("fine", PROMPT, expected_tool="get_weather", expected_keywords=["20"]),
        ],
    )
    script = Script().add("Broken", error(500, times=100)).add(PROMPT, *good_turns())
    server = openai_server(script)
    run = run_main(
        ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--max-retries", "1", "--quiet"],
        tmp_path / "out",
    )
    assert run.rc == 0, run.stderr
    broken, fine = run.row("tool:broken"), run.row("tool:fine")
    assert broken["success"] is False
    assert broken["error_type"] == "server_error"
    assert "InternalServerError" in broken["error"]
    assert broken["attempts"] == 2 and broken["retries"] == 1  # --max-retries 1
    assert broken["response_correct"] is False
    assert fine["success"] is True
    assert run.metadata["status"] == "completed"
    assert run.leaderboard["failed_tests"] == 1


def test_a_hanging_reply_times_out(openai_server, tmp_path: Path) -> None:
    script = Script().add(PROMPT, Turn(hang=True, times=100))
    server = openai_server(script)
    started = time.perf_counter()
    run = run_one(server.api_base, tmp_path, "--task-timeout", "2", "--max-retries", "0")
    elapsed = time.perf_counter() - started
    assert run.rc == 0, run.stderr
    (row,) = run.results
    assert row["error_type"] == "timeout", row
    assert row["success"] is False
    assert run.metadata["status"] == "completed"
    assert row["duration_ms"] < 6_000
    assert elapsed < 30


def test_a_hanging_reply_stops_at_the_task_timeout_even_with_retries(openai_server, tmp_path: Path) -> None:
    """Retries must not carry a task far past --task-timeout."""
    script = Script().add(PROMPT, Turn(hang=True, times=100))
    server = openai_server(script)
    started = time.perf_counter()
    run = run_one(server.api_base, tmp_path, "--task-timeout", "2")
    elapsed = time.perf_counter() - started
    (row,) = run.results
    assert row["error_type"] == "timeout", row
    assert row["duration_ms"] < 4_500, f"took {row['duration_ms']:.0f} ms for a 2 s task timeout"
    assert row["retries"] == 0
    assert elapsed < 30


def test_malformed_json_reply(openai_server, tmp_path: Path) -> None:
    script = Script().add(PROMPT, Turn(malformed_json=True, times=100))
    server = openai_server(script)
    run = run_one(server.api_base, tmp_path, "--max-retries", "0")
    assert run.rc == 0, run.stderr
    (row,) = run.results
    assert row["success"] is False
    assert row["response_correct"] is False
    # litellm reports a 200 with a body that is not JSON as a provider-side failure
    assert row["error_type"] == "server_error", row
    assert "Expecting value" in row["error"]
    assert row["attempts"] == 1
    assert run.metadata["status"] == "completed"


def test_malformed_json_once_then_success(openai_server, tmp_path: Path) -> None:
    script = Script().add(PROMPT, Turn(malformed_json=True), *good_turns())
    server = openai_server(script)
    run = run_one(server.api_base, tmp_path)
    (row,) = run.results
    assert run.rc == 0
    assert row["success"] is True, row
    assert row["retries"] == 1 and row["attempts"] == 3


def test_malformed_tool_call_arguments(openai_server, tmp_path: Path) -> None:
    bad_call = Turn(tool_calls=[("get_weather", {"location": "Paris, France"})], malformed_tool_call=True)
    script = Script().add(PROMPT, bad_call, bad_call, bad_call)
    server = openai_server(script)
    run = run_one(server.api_base, tmp_path, "--max-steps", "2")
    assert run.rc == 0, run.stderr
    (row,) = run.results
    assert row["success"] is False
    assert row["final_answer_called"] is False
    assert row["error_type"] == "max_steps", row
    assert "no final answer" in row["failure_reason"]
    assert run.metadata["status"] == "completed"


def test_a_malformed_tool_call_then_a_good_one_recovers(openai_server, tmp_path: Path) -> None:
    bad_call = Turn(tool_calls=[("get_weather", {"location": "Paris, France"})], malformed_tool_call=True)
    script = Script().add(PROMPT, bad_call, *good_turns())
    server = openai_server(script)
    run = run_one(server.api_base, tmp_path)
    (row,) = run.results
    assert row["success"] is True, row
    # smolagents hands unparsable arguments to a one-input tool as its text: the call is counted
    assert row["tools_used"] == ["get_weather", "get_weather"]
    assert row["steps"] == 3


def test_code_agent_with_failing_code_keeps_going(openai_server, tmp_path: Path) -> None:
    script = Script().add(
        PROMPT,
        code("import os\nos.system('true')"),
        code('r = get_weather(location="Paris, France")\nprint(r)'),
        code("final_answer('20°C')"),
    )
    server = openai_server(script)
    run = run_one(server.api_base, tmp_path, agent_type="code")
    (row,) = run.results
    assert row["success"] is True, row
    assert row["tools_used"] == ["get_weather"]
    assert row["steps"] == 3


@pytest.mark.parametrize("provider", ["litellm", "ollama", "inference"])
def test_unreachable_server_at_start_exits_3_before_any_task(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    if provider == "inference":
        hub_online(monkeypatch)  # else huggingface_hub refuses the request itself (a preflight error of its own)
    base = f"http://127.0.0.1:{closed_port()}" + ("/v1" if provider != "ollama" else "")
    model = "openai/model" if provider == "litellm" else "fake/model"  # litellm needs a provider it knows
    started = time.perf_counter()
    args = ["--model", model, "--provider", provider, "--api-base", base, "--output-format", "json", "--max-retries", "1"]
    run = run_main(args, tmp_path / "out")
    assert run.rc == 3, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("smoltrace-eval: error: cannot reach")
    assert base in lines[0]
    assert_no_traceback(run.stderr + run.stdout)
    assert not (tmp_path / "out").exists(), "no run folder before the model is reachable"
    assert "Results:" not in run.stdout
    assert time.perf_counter() - started < 10


def test_ollama_without_the_model_exits_3(ollama_server, tmp_path: Path) -> None:
    server = ollama_server(Script())
    run = run_main(["--model", "no-such-model", "--provider", "ollama", "--api-base", server.url], tmp_path / "out")
    assert run.rc == 3
    assert "has no model 'no-such-model'" in run.stderr
    assert "ollama pull no-such-model" in run.stderr
    assert not (tmp_path / "out").exists()


def test_ollama_rate_limit_then_success(ollama_server, tmp_path: Path) -> None:
    script = Script().add(PROMPT, error(429, retry_after=0.2), *good_turns())
    server = ollama_server(script)
    run = run_main(
        [
            "--model",
            "tiny",
            "--provider",
            "ollama",
            "--api-base",
            server.url,
            "--dataset-name",
            str(one_task(tmp_path)),
            "--disable-gpu-metrics",
            "--quiet",
        ],
        tmp_path / "out",
    )
    (row,) = run.results
    assert row["success"] is True, row
    assert row["retries"] == 1 and row["attempts"] == 3


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_task_timeout_between_steps_stops_the_agent_cleanly(openai_server, tmp_path: Path) -> None:
    """The deadline passes between steps: the agent stops (no further model call), the row says
    timeout, and nothing is reported on stderr (no 'generator ignored GeneratorExit')."""
    weather = call("get_weather", location="Paris, France")
    script = Script(latency_s=0.4).add(PROMPT, weather, weather, weather, weather, weather, weather, final("20"))
    server = openai_server(script)
    run = run_one(server.api_base, tmp_path, "--task-timeout", "1", "--max-steps", "10")
    import gc

    gc.collect()
    assert run.rc == 0
    (row,) = run.results
    assert row["error_type"] == "timeout", row
    assert "exceeded --task-timeout 1 s" in row["error"]
    assert row["success"] is False and row["final_answer_called"] is False
    assert script.requests <= 4, "the agent kept calling the model after its deadline"
    assert run.stderr == ""
