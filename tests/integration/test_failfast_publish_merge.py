"""Honest exits of `publish` and `merge` (issue 12): publishing never ends in a traceback — a Hub
that refuses connections, 401, 403, 404, 409, 5xx each get one line, exit 4 (2 for a refused token)
and the run folder stays as it was; merging a missing or not-completed shard writes nothing
(exit 2) unless --allow-partial."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from smoltrace.merge import MergeError, merge_runs
from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401 - fixture
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    closed_port,
    hub_online,
    openai_server_fixture,
    run_main,
    run_subprocess,
    runner_env_fixture,
    standard_script,
    subprocess_env,
)

pytestmark = pytest.mark.usefixtures("runner_env")


@pytest.fixture(name="run_dir")
def run_dir_fixture(openai_server, tmp_path: Path) -> Path:
    server = openai_server(standard_script())
    run = run_main(
        ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "1", "--quiet", "--output-format", "json"], tmp_path / "out"
    )
    assert run.rc == 0, run.stderr
    return run.run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run folder, segments included; hub_datasets.json (the dataset names the run
    claimed on the Hub, kept so that a retry publishes into the same datasets) is bookkeeping, not data."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != "hub_datasets.json"
    }


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_publish_with_the_hub_refusing_connections_is_one_line_exit_4(run_dir: Path) -> None:
    before = snapshot(run_dir)
    env = subprocess_env(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_TOKEN="hf_someone")
    env.pop("HF_HUB_OFFLINE", None)
    result = run_subprocess(["publish", str(run_dir)], timeout=120, env=env)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "the Hub is unreachable" in one_line(result.stderr)
    assert f"smoltrace-eval publish {run_dir}" in result.stdout
    assert_no_traceback(result.stdout + result.stderr)
    assert snapshot(run_dir) == before, "the files stay as they are"


@pytest.mark.parametrize(
    ("route", "status", "code", "words"),
    [
        ("whoami", 401, 2, "refused the token (HTTP 401)"),
        ("create_repo", 403, 4, "refused the write (HTTP 403"),
        ("create_repo", 404, 4, "404 Not Found"),
        ("commit", 409, 4, "conflict (HTTP 409"),
        ("commit", 500, 4, "the Hub failed (HTTP 500) after the retries"),
    ],
)
def test_publish_hub_errors_are_one_line(
    run_dir: Path,
    fake_hub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    route: str,
    status: int,
    code: int,
    words: str,
) -> None:
    from smoltrace.cli import main

    hub = fake_hub.hub
    hub_online(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    hub.inject_failure(route, status=status, times=100, retry_after=0)
    before = snapshot(run_dir)
    assert main(["publish", str(run_dir)]) == code
    out = capsys.readouterr()
    assert words in one_line(out.err)
    assert_no_traceback(out.out + out.err)
    assert snapshot(run_dir) == before


def shard_folder(root: Path, index: int, count: int, status: str = "completed") -> Path:
    folder = root / f"shard-{index}"
    folder.mkdir(parents=True)
    meta = {"run_id": "r", "model": "m", "provider": "litellm", "agent_type": "tool", "dataset_used": "d", "dataset_sha256": "x"}
    meta |= {"shard": {"index": index, "count": count}, "status": status, "config": {}, "started_at": "2026-12-04T10:00:00Z"}
    (folder / "metadata.json").write_text(json.dumps(meta), "utf-8")
    row = {"test_case_uid": f"tool:t{index}", "test_index": index, "success": True, "task_id": f"t{index}", "agent_type": "tool"}
    row |= {"model": "m", "evaluation_date": "2026-12-04T10:00:01Z", "prompt": "p", "run_id": "r"}  # a valid ResultRow
    (folder / "results.json").write_text(json.dumps([row]), "utf-8")
    return folder


def test_merge_with_a_shard_that_did_not_complete_writes_nothing_unless_allowed(tmp_path: Path) -> None:
    shards = [shard_folder(tmp_path, 0, 2), shard_folder(tmp_path, 1, 2, status="interrupted")]
    with pytest.raises(MergeError, match=r"not completed: .*shard-1 \(interrupted\); nothing written"):
        merge_runs(tmp_path / "merged", shards)
    assert not (tmp_path / "merged").exists()
    out = merge_runs(tmp_path / "merged", shards, allow_partial=True)
    meta = json.loads((out / "metadata.json").read_text("utf-8"))
    assert meta["status"] == "partial" and meta["partial"]["not_completed"]
    assert json.loads((out / "leaderboard_row.json").read_text("utf-8"))["status"] == "partial"


def test_merge_cli_with_a_missing_shard_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    shards = [shard_folder(tmp_path, 0, 3), shard_folder(tmp_path, 2, 3)]
    from smoltrace.cli import main

    assert main(["merge", str(tmp_path / "merged"), *map(str, shards)]) == 2
    assert not (tmp_path / "merged").exists()
    shutil.rmtree(tmp_path / "merged", ignore_errors=True)
    assert main(["merge", str(tmp_path / "merged"), *map(str, shards), "--allow-partial"]) == 0
    assert json.loads((tmp_path / "merged" / "metadata.json").read_text("utf-8"))["partial"]["missing_shards"] == [1]
