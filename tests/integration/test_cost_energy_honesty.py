"""Cost and energy figures say what is known: litellm's price for API models whether or not the run
is traced, null (not 0.0) where no price is known or nothing was measured, 0 for local models."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoltrace.costs import token_cost
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    ollama_server_fixture,
    openai_server_fixture,
    run_main,
    runner_env_fixture,
    standard_script,
)

ARGS = ["--limit", "1", "--max-steps", "3", "--quiet", "--disable-gpu-metrics"]


@pytest.mark.parametrize("traced", [False, True])
def test_an_api_model_is_priced_from_litellms_cost_map(runner_env: None, openai_server, tmp_path: Path, traced: bool) -> None:
    server = openai_server(standard_script())
    extra = ["--enable-otel"] if traced else []
    run = run_main(["--model", "openai/gpt-4o-mini", "--api-base", server.api_base, *ARGS, *extra], tmp_path / "out")
    assert run.rc == 0, run.stderr
    for row in run.results:
        assert row["prompt_tokens"] > 0
        assert row["cost_usd"] == pytest.approx(token_cost("openai/gpt-4o-mini", row["prompt_tokens"], row["completion_tokens"]))
        assert row["cost_usd"] > 0
    board = run.leaderboard
    assert board["total_cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in run.results), abs=1e-6)
    assert run.metadata["cost_source"] == "litellm"
    # nothing measured the energy of an API model: unknown, not zero
    assert board["energy_j"] is None and board["co2_emissions_g"] is None and board["power_cost_total_usd"] is None
    assert all(r["energy_j"] is None and r["co2_g"] is None for r in run.results)


def test_an_unpriced_api_model_has_no_cost_rather_than_zero(runner_env: None, openai_server, tmp_path: Path) -> None:
    server = openai_server(standard_script())
    run = run_main(["--model", "openai/fake", "--api-base", server.api_base, *ARGS], tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert all(r["cost_usd"] is None for r in run.results)
    assert run.leaderboard["total_cost_usd"] is None and run.leaderboard["avg_cost_per_test_usd"] is None
    assert run.metadata["cost_source"] == "unknown"


def test_a_local_model_costs_nothing_by_the_token(runner_env: None, ollama_server, tmp_path: Path) -> None:
    server = ollama_server(standard_script())
    run = run_main(["--provider", "ollama", "--model", "tiny", "--api-base", server.url, *ARGS], tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert all(r["cost_usd"] == 0.0 for r in run.results)
    assert run.leaderboard["total_cost_usd"] == 0.0
    assert run.metadata["cost_source"] == "local"
    assert run.leaderboard["energy_j"] is None  # GPU metrics off: nothing measured
