"""Publishing to the Hub end to end, against the fake Hub, with the real huggingface_hub and datasets."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from smoltrace.hub import HubPublisher
from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401 - fixture
from tests.fakes.runner_fixtures import openai_server_fixture, run_main, runner_env_fixture, standard_script  # noqa: F401

KINDS = ("results", "traces", "metrics", "leaderboard")


def evaluate(server, out: Path, token_file: Path, *extra: str):
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "1", "--max-steps", "3", "--quiet"]
    return run_main([*args, "--hf-token-file", str(token_file), *extra], out)


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "hf_token"
    path.write_text(token, "utf-8")
    return path


def load(repo: str, token: str) -> list[dict]:
    from datasets import load_dataset

    return load_dataset(repo, split="train", token=token).to_list()


def test_a_run_publishes_four_loadable_private_datasets(runner_env: None, fake_hub, openai_server, tmp_path: Path) -> None:
    hub = fake_hub.hub
    server = openai_server(standard_script())
    run = evaluate(server, tmp_path / "out", token_file(tmp_path, hub.token), "--enable-otel")
    assert run.rc == 0, run.stderr
    published = json.loads((run.run_dir / "publish.json").read_text())
    names = published["datasets"]
    assert set(names) == set(KINDS)
    assert all(name.startswith(f"{hub.user}/smoltrace-") for name in names.values())
    assert names["leaderboard"] == f"{hub.user}/smoltrace-leaderboard"
    for kind in KINDS:
        repo = hub.get_repo(names[kind])
        assert repo.private, kind  # private by default, the leaderboard too
        card = hub.read_file(names[kind], "README.md").decode()
        assert f'load_dataset("{names[kind]}", split="train")' in card
    results = load(names["results"], hub.token)
    local = json.loads((run.run_dir / "results.json").read_text())
    assert [r["test_case_uid"] for r in results] == [r["test_case_uid"] for r in local]
    assert results[0]["trace_id"] == local[0]["trace_id"] and results[0]["tools_used"] == local[0]["tools_used"]
    traces = load(names["traces"], hub.token)
    assert {t["trace_id"] for t in traces} == {r["trace_id"] for r in local}
    assert isinstance(traces[0]["spans"][0]["attributes"], dict)  # span attributes as a struct
    (placeholder,) = load(names["metrics"], hub.token)  # API model: one row, GPU columns null
    assert placeholder["run_id"] == local[0]["run_id"] and placeholder["gpu_id"] is None and placeholder["gpu_power_watts"] is None
    board = load(names["leaderboard"], hub.token)
    assert len(board) == 1 and board[0]["run_id"] == local[0]["run_id"] and board[0]["provider"] == "litellm"
    assert board[0]["submitted_by"] == hub.user and board[0]["results_dataset"] == names["results"]
    # the card documents exactly the columns in the Parquet
    card = hub.read_file(names["results"], "README.md").decode()
    documented = [line.split("`")[1] for line in card.splitlines() if line.startswith("| `")]
    assert documented == list(results[0].keys())
    metadata = json.loads((run.run_dir / "metadata.json").read_text())
    assert metadata["published"]["datasets"] == names
    assert hub.token not in "".join(p.read_text() for p in run.run_dir.glob("*.json"))


def test_leaderboard_is_append_only_under_concurrent_runs(runner_env: None, fake_hub, openai_server, tmp_path: Path) -> None:
    hub = fake_hub.hub
    server = openai_server(standard_script())
    first = evaluate(server, tmp_path / "a", token_file(tmp_path, hub.token), "--run-id", "run-a")
    assert first.rc == 0, first.stderr
    # two more publishers at once, from the finished folder under other run ids
    folders = []
    for run_id in ("run-b", "run-c"):
        folder = tmp_path / run_id
        folder.mkdir()
        for path in first.run_dir.glob("*.json"):
            text = path.read_text().replace("run-a", run_id)
            (folder / path.name).write_text(text)
        folders.append(folder)
    errors: list[BaseException] = []

    def publish(folder: Path) -> None:
        try:
            HubPublisher(hub.token).publish(folder)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=publish, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    board = load(f"{hub.user}/smoltrace-leaderboard", hub.token)
    assert sorted(r["run_id"] for r in board) == ["run-a", "run-b", "run-c"]
    files = hub.list_files(f"{hub.user}/smoltrace-leaderboard")
    assert {"data/run-a.parquet", "data/run-b.parquet", "data/run-c.parquet"} <= set(files)


def test_failed_publish_keeps_local_files_and_publish_later_is_idempotent(
    runner_env: None, fake_hub, openai_server, tmp_path: Path
) -> None:
    hub = fake_hub.hub
    server = openai_server(standard_script())
    hub.fail_next_commit(status=403, message="Injected: storage quota exceeded")
    token = token_file(tmp_path, hub.token)
    run = evaluate(server, tmp_path / "out", token)
    assert run.rc == 4, run.stdout + run.stderr
    assert "publishing to the Hub failed" in run.stderr and f"smoltrace-eval publish {run.run_dir}" in run.stdout
    for name in ("results.json", "traces.json", "metrics.json", "leaderboard_row.json", "metadata.json", "report.html"):
        assert (run.run_dir / name).exists(), name
    assert not (run.run_dir / "publish.json").exists()

    from smoltrace.cli import main

    for _ in range(2):  # publish later, twice: same files rewritten, no duplicate rows
        assert main(["publish", str(run.run_dir), "--hf-token-file", str(token)]) == 0
    names = json.loads((run.run_dir / "publish.json").read_text())["datasets"]
    assert names["traces"] == ""  # not traced: no traces dataset, and the leaderboard says so
    assert len(load(names["results"], hub.token)) == len(json.loads((run.run_dir / "results.json").read_text()))
    (row,) = load(names["leaderboard"], hub.token)
    assert row["traces_dataset"] is None


def test_hub_errors_are_retried(runner_env: None, fake_hub, openai_server, tmp_path: Path) -> None:
    hub = fake_hub.hub
    server = openai_server(standard_script())
    run = evaluate(server, tmp_path / "out", token_file(tmp_path, hub.token), "--output-format", "json")
    assert run.rc == 0 and not (run.run_dir / "publish.json").exists()  # json: nothing published
    assert hub.count("commit") == 0
    hub.inject_failure("commit", status=503, times=1)
    hub.inject_failure("create_repo", status=429, times=1, retry_after=0)
    report = HubPublisher(hub.token).publish(run.run_dir)
    assert report.rows["results"] == 2  # one task for each agent type
    assert hub.count("commit", status=503) == 1 and hub.count("create_repo", status=429) == 1


def test_a_refused_token_stops_before_any_task(runner_env: None, fake_hub, openai_server, tmp_path: Path) -> None:
    server = openai_server(standard_script())
    run = evaluate(server, tmp_path / "out", token_file(tmp_path, "hf_not_a_valid_token"), "--output-format", "hub")
    assert run.rc == 2
    assert run.stderr.startswith("smoltrace-eval: error: cannot publish to the Hub")
    assert not (tmp_path / "out").exists()
    assert server.script.requests == 0


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_publish_of_a_folder_that_is_not_a_run(runner_env: None, fake_hub, tmp_path: Path, folder: str) -> None:
    from smoltrace.cli import main

    target = tmp_path / folder
    if folder == "empty":
        target.mkdir()
    assert main(["publish", str(target), "--hf-token-file", str(token_file(tmp_path, fake_hub.hub.token))]) == 2
