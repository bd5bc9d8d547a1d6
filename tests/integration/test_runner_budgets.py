"""Budgets stop a run: the real CLI against a fake OpenAI server. A token budget reached stops
dispatch (the running executions finish), writes everything with metadata status
budget_exhausted and budget {kind, limit, used}, says why and exits 5; `--resume` with a higher
budget finishes the run with every task exactly once. An energy budget stops a run measured by the
simulated GPU exporter; budgets that cannot be enforced are refused before anything runs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.chat_servers import FakeOpenAIServer
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    read_json,
    run_main,
    run_subprocess,
    runner_env_fixture,
    subprocess_env,
)
from tests.integration.test_runner_resume import weather_tasks

pytestmark = pytest.mark.usefixtures("runner_env")


def base_args(server: FakeOpenAIServer, dataset: Path, out: Path, workers: int = 2) -> list[str]:
    return [
        "--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--agent-type", "tool",
        "--parallel-workers", str(workers), "--output-dir", str(out), "--quiet", "--output-format", "json",
    ]  # fmt: skip


def test_token_budget_stops_and_resume_finishes_every_task_once(tmp_path: Path) -> None:
    dataset, script, uids = weather_tasks(tmp_path)
    out = tmp_path / "out"
    with FakeOpenAIServer(script) as server:
        first = run_subprocess(
            [*base_args(server, dataset, out), "--max-tokens", "1", "--run-id", "budget-run"], timeout=120, env=subprocess_env()
        )
        assert first.returncode == 5, first.stdout + first.stderr
        assert_no_traceback(first.stdout + first.stderr)
        (run_dir,) = list(out.iterdir())
        meta = read_json(run_dir / "metadata.json")
        assert meta["status"] == "budget_exhausted"
        assert meta["budget"]["kind"] == "tokens" and meta["budget"]["limit"] == 1 and meta["budget"]["used"] >= 1
        done = read_json(run_dir / "results.json")
        assert 1 <= len(done) <= 2  # the first result reaches the budget; at most the 2 running ones finish
        assert "budget reached: tokens" in first.stdout + first.stderr
        assert f"--resume {run_dir}" in first.stdout + first.stderr
        assert (run_dir / "report.html").is_file() and (run_dir / "leaderboard_row.json").is_file()

        # resumed with the same budget: still reached, nothing new runs
        again = run_subprocess(["--resume", str(run_dir), "--api-base", server.api_base, "--quiet"], timeout=120, env=subprocess_env())
        assert again.returncode == 5, again.stdout + again.stderr
        assert len(read_json(run_dir / "results.json")) == len(done)

        # a higher budget: the run finishes
        final = run_subprocess(
            ["--resume", str(run_dir), "--api-base", server.api_base, "--quiet", "--max-tokens", "100000000"],
            timeout=180,
            env=subprocess_env(),
        )
        assert final.returncode == 0, final.stdout + final.stderr
    rows = read_json(run_dir / "results.json")
    assert sorted(r["test_case_uid"] for r in rows) == sorted(uids)
    lines = [json.loads(line) for line in (run_dir / "checkpoint.jsonl").read_text("utf-8").splitlines() if line.strip()]
    assert Counter(r["test_case_uid"] for r in lines) == Counter(uids)  # every task ran exactly once
    meta = read_json(run_dir / "metadata.json")
    assert meta["status"] == "completed" and meta["config"]["max_tokens"] == 100000000
    assert meta["spend"]["tokens"] == sum(r["total_tokens"] for r in rows)


def test_energy_budget_with_the_simulated_exporter(tmp_path: Path) -> None:
    dataset, script, _ = weather_tasks(tmp_path)
    script.latency_s = 0.2
    out = tmp_path / "out"
    env = subprocess_env(SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:2")
    with FakeOpenAIServer(script) as server:
        proc = run_subprocess(
            [*base_args(server, dataset, out, workers=1), "--enable-gpu-metrics", "--max-energy-j", "1"], timeout=120, env=env
        )
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (run_dir,) = list(out.iterdir())
    meta = read_json(run_dir / "metadata.json")
    assert meta["status"] == "budget_exhausted" and meta["budget"]["kind"] == "energy_j"
    assert meta["budget"]["used"] >= 1.0
    assert 1 <= len(read_json(run_dir / "results.json")) < 12  # stopped once the live reading passed 1 J
    assert meta["spend"]["energy_j"] == pytest.approx(meta["budget"]["used"])  # used = the final spend


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-energy-j", "100"], "--max-energy-j needs GPU metrics for this run, and they are off"),
        (["--max-co2-g", "1"], "--max-co2-g needs GPU metrics for this run, and they are off"),
        (["--max-cost-usd", "1"], "--max-cost-usd: litellm has no price for openai/fake"),
    ],
)
def test_budgets_that_cannot_be_enforced_are_refused(tmp_path: Path, flags: list[str], message: str) -> None:
    dataset, script, _ = weather_tasks(tmp_path)
    out = tmp_path / "out"
    with FakeOpenAIServer(script) as server:
        args = [a for a in base_args(server, dataset, out) if a not in ("--output-dir", str(out))]
        run = run_main([*args, *flags], out)
    assert run.rc == 2, run.stdout + run.stderr
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # refused before the run folder exists
