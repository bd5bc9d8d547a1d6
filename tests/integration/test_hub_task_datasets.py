"""Task datasets the way SMOLTRACE users have them: pushed with `datasets.push_to_hub` (Parquet)
to the (fake) Hub, named without a revision; the commit read is resolved and recorded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakes.hub_env import fake_hub_session
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    hub_online,
    openai_server_fixture,
    run_main,
    runner_env_fixture,
    standard_script,
    task,
)

WEATHER = task("tool_weather_single", "What's the weather in Paris, France?", expected_tool="get_weather", expected_keywords=["20"])
CALC = task("code_calculator_single", "What is 234 multiplied by 67?", agent_type="code", expected_answer="15678")


def push(repo: str, rows: list[dict], token: str, **kwargs) -> str:
    from datasets import Dataset
    from huggingface_hub import HfApi

    Dataset.from_list(rows).push_to_hub(repo, token=token, **kwargs)
    return HfApi(token=token).dataset_info(repo).sha


def evaluate(server, tmp_path: Path, name: str, *extra: str):
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", name, "--max-steps", "3", "--quiet"]
    return run_main([*args, "--output-format", "json", *extra], tmp_path / "out")


@pytest.fixture
def online(runner_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake Hub that stores Parquet through LFS (as the real one does), this process online to it."""
    with fake_hub_session(tmp_path, lfs_suffixes=(".parquet",)) as session:
        hub_online(monkeypatch)
        monkeypatch.setenv("HF_TOKEN", session.token)
        yield session
        assert not session.hub.internal_errors, session.hub.internal_errors


def test_a_parquet_dataset_pushed_with_datasets_runs_without_a_revision(online, openai_server, tmp_path: Path) -> None:
    repo = f"{online.hub.user}/smoltrace-tasks"
    sha = push(repo, [WEATHER, CALC], online.token)
    assert any(f.endswith(".parquet") for f in online.hub.list_files(repo))
    run = evaluate(openai_server(standard_script()), tmp_path, repo)
    assert run.rc == 0, run.stderr
    assert {r["test_case_uid"] for r in run.results} == {"tool:tool_weather_single", "code:code_calculator_single"}
    assert all(r["success"] for r in run.results)
    meta = run.metadata
    assert run.leaderboard["dataset_used"] == repo
    assert re.fullmatch(r"[0-9a-f]{40}", meta["dataset_revision"]) and meta["dataset_revision"] == sha
    assert re.fullmatch(r"[0-9a-f]{64}", meta["dataset_sha256"])


def test_a_branch_or_an_old_commit_is_resolved_to_the_commit_read(online, openai_server, tmp_path: Path) -> None:
    repo = f"{online.hub.user}/tasks-history"
    first = push(repo, [WEATHER], online.token)
    second = push(repo, [WEATHER, CALC], online.token)
    assert first != second
    server = openai_server(standard_script())
    old = evaluate(server, tmp_path / "old", repo, "--dataset-revision", first)
    assert old.rc == 0, old.stderr
    assert old.metadata["dataset_revision"] == first and len(old.results) == 1  # the old commit's one task
    head = evaluate(server, tmp_path / "head", repo, "--dataset-revision", "main")
    assert head.rc == 0, head.stderr
    assert head.metadata["dataset_revision"] == second and len(head.results) == 2


def test_bad_rows_of_a_hub_dataset_are_listed_before_anything_runs(online, openai_server, tmp_path: Path) -> None:
    repo = f"{online.hub.user}/bad-tasks"
    push(repo, [WEATHER, {**CALC, "difficulty": "impossible"}, {**WEATHER, "id": "dup", "agent_type": "robot"}], online.token)
    script = standard_script()
    run = evaluate(openai_server(script), tmp_path, repo)
    assert run.rc == 2
    assert "row 2: difficulty" in run.stderr and "row 3: agent_type" in run.stderr
    assert "Traceback" not in run.stderr
    assert script.requests == 0  # nothing ran


@pytest.mark.parametrize(
    ("name", "revision", "message"),
    [("tester/missing", None, "no such dataset"), ("tester/smoltrace-tasks", "no-such-branch", "revision 'no-such-branch' not found")],
)
def test_a_missing_dataset_or_revision_is_one_clear_error(
    online, openai_server, tmp_path: Path, name: str, revision: str | None, message: str
) -> None:
    push("tester/smoltrace-tasks", [WEATHER], online.token)
    extra = ["--dataset-revision", revision] if revision else []
    run = evaluate(openai_server(standard_script()), tmp_path, name, *extra)
    assert run.rc == 2 and message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
