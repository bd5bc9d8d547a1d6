"""Ollama through Ollama's own client, against a protocol-level fake server: OLLAMA_HOST forms,
preflight (list/show), --ollama-pull, and where the model sits after warm-up (ps)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    ollama_server_fixture,
    run_main,
    runner_env_fixture,
    standard_script,
)

ARGS = ["--provider", "ollama", "--limit", "1", "--max-steps", "3", "--agent-type", "tool", "--disable-gpu-metrics"]


def test_ollama_host_in_ollamas_own_short_form_reaches_the_server(
    runner_env: None, ollama_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ollama_server(standard_script())
    monkeypatch.setenv("OLLAMA_HOST", f":{server.port}")  # Ollama reads this as 127.0.0.1:<port>
    run = run_main(["--model", "tiny", *ARGS], tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert run.results[0]["success"]
    assert f"127.0.0.1:{server.port}" in run.stdout


def test_a_missing_model_names_the_pull_command(runner_env: None, ollama_server, tmp_path: Path) -> None:
    server = ollama_server(standard_script())
    run = run_main(["--model", "qwen2.5-coder:3b", "--api-base", server.url, *ARGS], tmp_path / "out")
    assert run.rc == 3
    assert "has no model 'qwen2.5-coder:3b'" in run.stderr and "`ollama pull qwen2.5-coder:3b`" in run.stderr
    assert "--ollama-pull" in run.stderr
    assert_no_traceback(run.stderr)
    assert not (tmp_path / "out").exists()
    assert server.script.requests == 0


def test_ollama_pull_fetches_a_missing_model_then_runs(runner_env: None, ollama_server, tmp_path: Path) -> None:
    server = ollama_server(standard_script())
    server.pullable = {"fresh:latest": 3_000_000}
    run = run_main(["--model", "fresh", "--api-base", server.url, "--ollama-pull", *ARGS], tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert server.pulls == ["fresh:latest"]
    assert "fresh:latest" in server.models
    assert run.results[0]["success"]


def test_a_model_that_cannot_be_pulled_is_one_clear_error(runner_env: None, ollama_server, tmp_path: Path) -> None:
    server = ollama_server(standard_script())
    run = run_main(["--model", "nowhere", "--api-base", server.url, "--ollama-pull", *ARGS], tmp_path / "out")
    assert run.rc == 3
    assert "`ollama pull nowhere` failed" in run.stderr
    assert_no_traceback(run.stderr)


@pytest.mark.parametrize(("share", "where"), [(1.0, "gpu"), (0.0, "cpu"), (0.5, "split")])
def test_model_placement_after_warm_up(runner_env: None, ollama_server, tmp_path: Path, share: float, where: str) -> None:
    server = ollama_server(standard_script())
    server.vram_share = share
    run = run_main(["--model", "tiny", "--api-base", server.url, *ARGS], tmp_path / "out")
    assert run.rc == 0, run.stderr
    placement = run.metadata["model_placement"]
    assert placement["placement"] == where and placement["model"] == "tiny:latest"
    assert placement["size_vram"] == int(placement["size"] * share)
    warned = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("[WARN]") and "measure nothing of it" in line]
    assert bool(warned) == (where == "cpu"), run.stdout + run.stderr
    assert server.script.requests == 1 + 1  # the preload generated nothing: two chat turns only
