"""`--resume` and `publish` treat a run folder as data (issues 12 and 13): flags that would change
what the run is are refused, flags that change how it runs are taken (and recorded per segment),
and nothing that reaches the network or widens execution is read from the folder — a planted
metadata.json reaches no planted host and widens no import, and `publish` takes the token file and
the visibility from its own command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.chat_servers import Script, call, final
from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401 - fixture
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    ConnectionRecorder,
    assert_no_traceback,
    connection_recorder_fixture,
    openai_server_fixture,
    read_json,
    run_main,
    runner_env_fixture,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")

N = 4


def weather(tmp_path: Path) -> tuple[Path, Script, list[str]]:
    rows, script = [], Script()
    for i in range(N):
        rows.append(task(f"w{i}", f"Task {i}: what's the weather in Paris, France?", expected_tool="get_weather", expected_tool_calls=1))
        script.add(f"Task {i}:", call("get_weather", location="Paris, France"), final("20°C in Paris"))
    return write_jsonl(tmp_path / "weather.jsonl", rows), script, [f"tool:w{i}" for i in range(N)]


def first_run(openai_server, tmp_path: Path, *extra: str):
    dataset, script, uids = weather(tmp_path)
    server = openai_server(script)
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--agent-type", "tool", "--quiet"]
    run = run_main([*args, "--output-format", "json", "--run-id", "trusty", *extra], tmp_path / "out")
    assert run.rc == 0, run.stdout + run.stderr
    run.server = server  # type: ignore[attr-defined]
    return run, script, uids


def as_if_killed(run_dir: Path, keep: int) -> None:
    """The folder a SIGKILL after `keep` executions leaves: a shorter checkpoint, no results, running."""
    lines = (run_dir / "checkpoint.jsonl").read_text("utf-8").splitlines()[:keep]
    (run_dir / "checkpoint.jsonl").write_text("".join(line + "\n" for line in lines), "utf-8")
    for name in ("results.json", "leaderboard_row.json", "report.html"):
        (run_dir / name).unlink(missing_ok=True)
    meta = read_json(run_dir / "metadata.json")
    meta["status"] = "running"
    (run_dir / "metadata.json").write_text(json.dumps(meta), "utf-8")


def test_resume_refuses_flags_that_change_what_the_run_is(openai_server, tmp_path: Path) -> None:
    run, _, _ = first_run(openai_server, tmp_path)
    as_if_killed(run.run_dir, 2)
    before = (run.run_dir / "metadata.json").read_bytes()
    changed = run_main(
        ["--resume", str(run.run_dir), "--model", "openai/other", "--limit", "9", "--agent-type", "code", "--shard", "0/2"], tmp_path / "x"
    )
    assert changed.rc == 2
    line = changed.stderr.strip()
    assert "\n" not in line
    for flag in ("--model", "--limit", "--agent-type", "--shard"):
        assert flag in line
    assert "would change what the run is" in line
    assert (run.run_dir / "metadata.json").read_bytes() == before, "nothing touched"
    assert_no_traceback(changed.stdout + changed.stderr)


def test_resume_takes_how_it_runs_from_this_command_line_and_records_it_per_segment(openai_server, tmp_path: Path) -> None:
    """The first server is gone; the resume names a new one and other run settings. The same
    --model as stored is accepted (it changes nothing)."""
    run, _, uids = first_run(openai_server, tmp_path)
    as_if_killed(run.run_dir, 2)
    run.server.stop()  # type: ignore[attr-defined] # the old port is gone
    _, script, _ = weather(tmp_path)
    server = openai_server(script)
    args = ["--resume", str(run.run_dir), "--model", "openai/fake", "--api-base", server.api_base]
    resumed = run_main([*args, "--parallel-workers", "2", "--max-retries", "1", "--task-timeout", "30", "--quiet"], tmp_path / "x")
    assert resumed.rc == 0, resumed.stdout + resumed.stderr
    assert [r["test_case_uid"] for r in read_json(run.run_dir / "results.json")] == uids
    assert script.requests == 2 * (N - 2), "only the missing executions ran, against the new server"
    segments = read_json(run.run_dir / "metadata.json")["segments"]  # SegmentInfo owns how each process ran
    assert [s["kind"] for s in segments] == ["first", "resume"]
    settings = [s["settings"] for s in segments]
    assert settings[1]["api_base"] == server.api_base and settings[0]["api_base"] != server.api_base
    assert (settings[1]["parallel_workers"], settings[1]["max_retries"], settings[1]["task_timeout"]) == (2, 1, 30.0)
    assert "segment_settings" not in read_json(run.run_dir / "metadata.json"), "one owner"
    assert read_json(run.run_dir / "metadata.json")["config"]["max_retries"] == 1


def test_resume_of_a_run_that_used_api_base_needs_it_again(openai_server, tmp_path: Path) -> None:
    run, _, _ = first_run(openai_server, tmp_path)
    as_if_killed(run.run_dir, 2)
    again = run_main(["--resume", str(run.run_dir), "--quiet"], tmp_path / "x")
    assert again.rc == 2
    assert "this run used --api-base; give them again on this command line" in again.stderr


def plant(run_dir: Path, recorder: ConnectionRecorder, token_file: Path) -> None:
    """What someone with write access to the results volume could put in metadata.json."""
    meta = read_json(run_dir / "metadata.json")
    meta["config"].update(
        api_base=f"http://{recorder.address}/v1",
        otlp_forward=recorder.address,
        additional_imports=["*"],
        enable_tools=["read_file", "write_file"],
        working_directory="/",
        hf_token_file=str(token_file),
        private=False,
        gpu_exporter=recorder.address,
        model_args={"temperature": 0, "extra_headers": {"X-Planted": "1"}},
    )
    (run_dir / "metadata.json").write_text(json.dumps(meta), "utf-8")


def test_a_planted_run_folder_reaches_no_planted_host_and_widens_nothing(openai_server, connection_recorder, tmp_path: Path) -> None:
    run, _, uids = first_run(openai_server, tmp_path)
    as_if_killed(run.run_dir, 2)
    planted_token = tmp_path / "planted-token"
    planted_token.write_text("hf_attacker_token", "utf-8")
    plant(run.run_dir, connection_recorder, planted_token)
    _, script, _ = weather(tmp_path)
    server = openai_server(script)

    # the folder asks for a wider run than this command line: refused, nothing runs
    refused = run_main(["--resume", str(run.run_dir), "--api-base", server.api_base, "--quiet"], tmp_path / "x")
    assert refused.rc == 2
    for flag in ("--additional-imports", "--enable-tools", "--working-directory", "--otlp-forward", "--model-args extra_headers"):
        assert flag in refused.stderr
    assert script.requests == 0 and script.preflight_requests == 0

    # the tools and imports planted away, the headers given again (the user's own): the run goes
    # to the command line's server only; the planted address, exporter, token file and
    # visibility are never used
    meta = read_json(run.run_dir / "metadata.json")
    for key in ("additional_imports", "enable_tools", "working_directory", "otlp_forward"):
        meta["config"][key] = [] if key in ("additional_imports", "enable_tools") else None
    (run.run_dir / "metadata.json").write_text(json.dumps(meta), "utf-8")
    resumed = run_main(
        ["--resume", str(run.run_dir), "--api-base", server.api_base, "--model-args", 'extra_headers={"X-Mine": "1"}', "--quiet"],
        tmp_path / "x",
    )
    assert resumed.rc == 0, resumed.stdout + resumed.stderr
    assert connection_recorder.connections == 0, "no request reached the planted host"
    assert script.requests == 2 * (N - 2)
    config = read_json(run.run_dir / "metadata.json")["config"]
    assert config["api_base"] == server.api_base and config["gpu_exporter"] is None and config["otlp_forward"] is None
    assert config["additional_imports"] == [] and config["enable_tools"] == [] and config["private"] is True
    assert config["hf_token_file"] is None
    assert [r["test_case_uid"] for r in read_json(run.run_dir / "results.json")] == uids


def test_a_planted_folder_that_does_not_describe_a_valid_run_is_exit_2(openai_server, tmp_path: Path) -> None:
    run, _, _ = first_run(openai_server, tmp_path)
    as_if_killed(run.run_dir, 2)
    meta = read_json(run.run_dir / "metadata.json")
    meta["config"]["max_steps"] = 10_000  # the command line allows 1..100
    meta["config"]["run_id"] = "--debug"
    (run.run_dir / "metadata.json").write_text(json.dumps(meta), "utf-8")
    again = run_main(["--resume", str(run.run_dir), "--api-base", "http://127.0.0.1:9/v1"], tmp_path / "x")
    assert again.rc == 2, again.stdout + again.stderr
    assert "metadata.json does not describe a valid run" in again.stderr
    assert_no_traceback(again.stdout + again.stderr)


def test_publish_takes_the_token_and_visibility_from_its_command_line(
    openai_server, fake_hub, connection_recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted folder names the attacker's token file and public datasets: publish uses the
    user's token (HF_TOKEN) and publishes private datasets."""
    from tests.fakes.runner_fixtures import hub_online

    run, _, _ = first_run(openai_server, tmp_path)
    hub = fake_hub.hub
    hub.tokens["hf_attacker_token"] = "attacker"
    planted_token = tmp_path / "planted-token"
    planted_token.write_text("hf_attacker_token", "utf-8")
    plant(run.run_dir, connection_recorder, planted_token)
    hub_online(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    from smoltrace.cli import main

    assert main(["publish", str(run.run_dir)]) == 0
    users = {r.user for r in hub.requests}
    assert users == {hub.user}, users
    published = read_json(run.run_dir / "publish.json")["datasets"]
    for repo in (published["results"], published["leaderboard"]):
        assert hub.get_repo(repo).private is True
    assert connection_recorder.connections == 0
