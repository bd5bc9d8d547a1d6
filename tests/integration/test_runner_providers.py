"""Every provider end to end against fakes on 127.0.0.1: litellm (fake OpenAI server), ollama (fake
Ollama server, via --api-base and via OLLAMA_HOST), inference (InferenceClientModel pointed at the
fake OpenAI server) and transformers (a tiny random-weight model built locally)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.chat_servers import FakeOllamaServer, Script
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    hub_online,
    ollama_server_fixture,
    openai_server_fixture,
    run_main,
    runner_env_fixture,
    standard_script,
)
from tests.fakes.tiny_model import tiny_model_dir_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("runner_env")

HF_MODEL = "hf.co/kshitijthakkar/loggenix-moe-0.3B-A0.1B-smolagents-v0:f16"


def assert_both_passed(run, provider: str, model: str) -> None:
    assert run.rc == 0, run.stdout + run.stderr
    assert [r["test_case_uid"] for r in run.results] == ["tool:tool_weather_single", "code:code_calculator_single"]
    tool, code_row = run.results
    assert tool["success"] and code_row["success"], run.results
    assert tool["tools_used"] == ["get_weather"]
    assert code_row["tools_used"] == ["calculator"]
    for row in run.results:
        assert row["provider"] == provider and row["model"] == model
        assert row["total_tokens"] > 0
    assert run.leaderboard["provider"] == provider
    assert run.metadata["provider"] == provider


def test_litellm(openai_server, tmp_path: Path) -> None:
    script = standard_script()
    server = openai_server(script)
    run = run_main(["--model", "openai/fake", "--provider", "litellm", "--api-base", server.api_base, "--limit", "1"], tmp_path / "out")
    assert_both_passed(run, "litellm", "openai/fake")
    assert "litellm openai/fake at " + server.api_base in " ".join(run.stdout.split())
    assert script.models_seen == ["fake"] * 4  # the provider prefix is litellm's, not the server's


def test_ollama_via_api_base_with_a_hub_model_name(ollama_server, tmp_path: Path) -> None:
    script = standard_script()
    server = ollama_server(script)
    run = run_main(
        ["--model", HF_MODEL, "--provider", "ollama", "--api-base", server.url, "--limit", "1", "--disable-gpu-metrics"], tmp_path / "out"
    )
    assert_both_passed(run, "ollama", HF_MODEL)
    assert f"ollama {HF_MODEL} at {server.url}" in " ".join(run.stdout.split())  # the console may wrap it
    assert set(script.models_seen) == {HF_MODEL}
    assert script.requests == 4


def test_ollama_via_ollama_host(ollama_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = standard_script()
    server = ollama_server(script)
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.port}")  # Ollama's own form: no scheme
    run = run_main(["--model", "ollama/tiny", "--provider", "ollama", "--limit", "1", "--disable-gpu-metrics"], tmp_path / "out")
    assert_both_passed(run, "ollama", "ollama/tiny")
    assert f"at http://127.0.0.1:{server.port}" in run.stdout
    assert set(script.models_seen) == {"tiny"}


def test_ollama_api_base_wins_over_ollama_host(ollama_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    used, unused = standard_script(), standard_script()
    server, other = ollama_server(used), ollama_server(unused)
    monkeypatch.setenv("OLLAMA_HOST", other.url)
    run = run_main(
        [
            "--model",
            "tiny",
            "--provider",
            "ollama",
            "--api-base",
            server.url,
            "--limit",
            "1",
            "--agent-type",
            "tool",
            "--disable-gpu-metrics",
        ],
        tmp_path / "out",
    )
    assert run.rc == 0
    assert run.results[0]["success"]
    assert used.requests == 2 and unused.requests == 0


def test_inference_with_an_endpoint(openai_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """InferenceClientModel (huggingface_hub's InferenceClient) with --api-base: the fake OpenAI
    server stands in for a dedicated endpoint. huggingface_hub's offline switch would block the
    request, so it is lifted for this test (the fake is on 127.0.0.1)."""
    hub_online(monkeypatch)
    token_file = tmp_path / "token"
    token_file.write_text("hf_fake_inference_token", "utf-8")
    script = standard_script()
    server = openai_server(script)
    run = run_main(
        [
            "--model",
            "org/fake-model",
            "--provider",
            "inference",
            "--api-base",
            server.api_base,
            "--hf-token-file",
            str(token_file),
            "--output-format",
            "json",
            "--limit",
            "1",
        ],
        tmp_path / "out",
    )
    assert_both_passed(run, "inference", "org/fake-model")
    assert set(script.models_seen) == {"org/fake-model"}  # the model id still travels in each request
    assert script.auth_seen == {"Bearer hf_fake_inference_token"}


def test_inference_without_a_token_is_one_clear_error(tmp_path: Path) -> None:
    run = run_main(["--model", "org/fake-model", "--provider", "inference"], tmp_path / "out")
    assert run.rc == 3
    assert (
        run.stderr.strip() == "smoltrace-eval: error: --provider inference needs a Hugging Face token: set HF_TOKEN or pass --hf-token-file"
    )
    assert not (tmp_path / "out").exists()


def test_transformers_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A random-weight model: the tasks fail, but the run completes with a row per execution."""
    run = run_main(
        [
            "--model",
            str(tiny_model_dir),
            "--provider",
            "transformers",
            "--limit",
            "1",
            "--max-steps",
            "1",
            "--model-args",
            "max_new_tokens=8",
            "--disable-gpu-metrics",
            "--quiet",
        ],
        tmp_path / "out",
    )
    assert run.rc == 0, run.stderr
    assert_no_traceback(run.stderr)
    assert [r["test_case_uid"] for r in run.results] == ["tool:tool_weather_single", "code:code_calculator_single"]
    for row in run.results:
        assert row["provider"] == "transformers"
        assert row["steps"] >= 1
        assert row["attempts"] >= 1
        assert row["completion_tokens"] <= 8 * row["attempts"]  # max_new_tokens reached the model
        assert row["success"] is False  # random weights
        assert row["error_type"] is not None
    meta = run.metadata
    assert meta["status"] == "completed" and meta["num_results"] == 2
    assert meta["config"]["model_args"] == {"max_new_tokens": 8}


def test_transformers_folder_without_config_exits_3(tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    run = run_main(["--model", str(tmp_path / "empty-model"), "--provider", "transformers"], tmp_path / "out")
    assert run.rc == 3
    assert "not a transformers model folder (no config.json)" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_transformers_broken_weights_exit_3_without_a_run_folder(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": "not a number"}), "utf-8")
    run = run_main(["--model", str(broken), "--provider", "transformers", "--disable-gpu-metrics"], tmp_path / "out")
    assert run.rc == 3, run.stdout + run.stderr
    assert run.stderr.startswith("smoltrace-eval: error: cannot load transformers model")
    assert len(run.stderr.strip().splitlines()) == 1
    assert_no_traceback(run.stderr)
    assert not (tmp_path / "out").exists()


def test_ollama_fake_lists_the_hub_model(ollama_server) -> None:
    """The fake's /api/tags is what preflight reads: keep it honest."""
    import urllib.request

    server: FakeOllamaServer = ollama_server(Script())
    with urllib.request.urlopen(f"{server.url}/api/tags", timeout=5) as response:
        names = [m["name"] for m in json.loads(response.read())["models"]]
    assert HF_MODEL in names and "tiny:latest" in names
