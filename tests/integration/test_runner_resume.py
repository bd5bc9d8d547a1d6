"""A run killed with SIGKILL mid-way continues with `--resume RUN_DIR`: every planned execution
ends up in results.json exactly once, and finished ones are not run again. The real CLI runs as a
subprocess against a fake server (in this process) with some latency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.chat_servers import FakeOpenAIServer, Script, call, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    cli_command,
    openai_server_fixture,
    read_json,
    run_subprocess,
    runner_env_fixture,
    subprocess_env,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")

CITIES = ["Paris, France", "London, UK", "New York, USA", "Tokyo, Japan", "Sydney, Australia", "Berlin, Germany"]
HF_SECRET = "hf_RESUMEsecret0123456789"
KEY_SECRET = "sk-RESUME-planted-key-42"


def weather_tasks(tmp_path: Path) -> tuple[Path, Script, list[str]]:
    rows, script = [], Script(latency_s=0.05)
    for i, city in enumerate(CITIES * 2):
        prompt = f"Task {i:02d}: what's the weather in {city}?"
        rows.append(task(f"w{i:02d}", prompt, expected_tool="get_weather", expected_tool_calls=1))
        script.add(f"Task {i:02d}:", call("get_weather", location=city), final(f"The weather in {city} is fine"))
    uids = [f"tool:{r['id']}" for r in rows]
    return write_jsonl(tmp_path / "weather.jsonl", rows), script, uids


def checkpoint_lines(run_dir: Path) -> int:
    path = run_dir / "checkpoint.jsonl"
    return len(path.read_text("utf-8").splitlines()) if path.exists() else 0


def test_resume_after_kill(tmp_path: Path) -> None:
    dataset, script, uids = weather_tasks(tmp_path)
    script.latency_s = 0.15  # a run of ~4 s: the kill lands mid-run even on a loaded machine
    out = tmp_path / "out"
    token_file = tmp_path / "token"
    token_file.write_text(HF_SECRET, "utf-8")
    with FakeOpenAIServer(script) as server:
        args = [
            "--model", "openai/fake", "--api-base", server.api_base,  # type: ignore[attr-defined]
            "--dataset-name", str(dataset), "--agent-type", "tool", "--parallel-workers", "1",
            "--output-dir", str(out), "--run-id", "resume-run", "--quiet",
            "--hf-token-file", str(token_file), "--model-args", f"api_key={KEY_SECRET}", "temperature=0", "--output-format", "json",
        ]  # fmt: skip
        proc = subprocess.Popen(
            [*cli_command(), *args],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            run_dir = None
            while time.monotonic() < deadline and proc.poll() is None:
                dirs = list(out.glob("*")) if out.exists() else []
                if dirs and checkpoint_lines(dirs[0]) >= 3:
                    run_dir = dirs[0]
                    break
                time.sleep(0.01)
            assert run_dir is not None, f"no checkpoint progress; rc={proc.poll()}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, first_err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert not (run_dir / "results.json").exists(), "killed before the end: no results.json yet"
        meta = read_json(run_dir / "metadata.json")
        assert meta["status"] == "running"
        assert "api_key=[REDACTED]" in meta["command"]  # the killed run's own command line
        assert not any(KEY_SECRET in part for part in meta["command"])
        done_before = {
            json.loads(line)["test_case_uid"] for line in (run_dir / "checkpoint.jsonl").read_text("utf-8").splitlines() if line.strip()
        }
        assert 3 <= len(done_before) < len(uids), done_before

        requests_before = script.requests
        # what reaches the network (the server, the key) is given again: a folder never supplies it
        resume_args = ["--resume", str(run_dir), "--quiet", "--api-base", server.api_base, "--model-args", f"api_key={KEY_SECRET}"]  # type: ignore[attr-defined]
        resumed = run_subprocess(resume_args, timeout=90)
        requests_during_resume = script.requests - requests_before

    assert resumed.returncode == 0, resumed.stderr
    assert_no_traceback(resumed.stderr + first_err)
    assert f"Results: {run_dir}" in resumed.stdout
    rows = read_json(run_dir / "results.json")
    got = [r["test_case_uid"] for r in rows]
    assert got == uids, "every planned execution exactly once, in plan order"
    assert all(r["success"] for r in rows), [r for r in rows if not r["success"]]
    assert {r["run_id"] for r in rows} == {"resume-run"}
    # finished executions were not run again: two model calls per remaining task
    assert requests_during_resume == 2 * (len(uids) - len(done_before))
    meta = read_json(run_dir / "metadata.json")
    assert meta["status"] == "completed"
    assert meta["num_results"] == meta["num_planned"] == len(uids)
    assert meta["timings"]["executions_this_process"] == len(uids) - len(done_before)
    assert meta["run_id"] == "resume-run"
    assert read_json(run_dir / "leaderboard_row.json")["total_tests"] == len(uids)
    assert [p.name for p in out.iterdir()] == [run_dir.name], "no second run folder"
    # no secret anywhere, command lines included
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text("utf-8", errors="replace")
            assert HF_SECRET not in text and KEY_SECRET not in text, path
    assert meta["config"]["model_args"]["temperature"] == 0  # the stored settings carry on
    assert meta["config"]["model_args"].get("api_key", "[REDACTED]") == "[REDACTED]"


def test_resume_of_a_finished_run_runs_nothing(openai_server, tmp_path: Path) -> None:
    dataset, script, uids = weather_tasks(tmp_path)
    script.latency_s = 0
    server = openai_server(script)
    from tests.fakes.runner_fixtures import run_main

    run = run_main(["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--quiet"], tmp_path / "out")
    assert run.rc == 0
    before = script.requests, script.preflight_requests
    files = {str(p.relative_to(run.run_dir)): p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()}
    again = run_main(["--resume", str(run.run_dir), "--quiet", "--api-base", server.api_base], tmp_path / "ignored")
    assert again.rc == 0
    assert "Nothing to resume" in again.stdout and "is complete (12/12 passed)" in again.stdout
    assert (script.requests, script.preflight_requests) == before, "no request at all, not even the preflight"
    assert [r["test_case_uid"] for r in run.results] == uids
    assert not (tmp_path / "ignored").exists(), "a resumed run stays in its folder"
    after = {str(p.relative_to(run.run_dir)): p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()}
    assert after == files, "a no-op: no file rewritten"


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = run_subprocess(["--resume", str(tmp_path)], timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"smoltrace-eval: error: --resume {tmp_path}: not a smoltrace run folder (no metadata.json)"


def test_torn_checkpoint_line_is_ignored(openai_server, tmp_path: Path) -> None:
    """A kill in the middle of a checkpoint write leaves half a line: that execution runs again."""
    from tests.fakes.runner_fixtures import run_main

    dataset, script, uids = weather_tasks(tmp_path)
    script.latency_s = 0
    server = openai_server(script)
    run = run_main(["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--quiet"], tmp_path / "out")
    run_dir = run.run_dir
    lines = (run_dir / "checkpoint.jsonl").read_text("utf-8").splitlines()
    (run_dir / "checkpoint.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][: len(lines[4]) // 2], "utf-8")
    (run_dir / "results.json").unlink()
    before = script.requests
    again = run_main(["--resume", str(run_dir), "--quiet", "--api-base", server.api_base], tmp_path / "ignored")
    assert again.rc == 0
    assert [r["test_case_uid"] for r in run.results] == uids
    assert script.requests - before == 2 * (len(uids) - 4)


def test_ctrl_c_keeps_finished_work_and_resume_completes(tmp_path: Path) -> None:
    """SIGINT: exit 130, the finished executions are saved, and --resume runs only the rest."""
    dataset, script, uids = weather_tasks(tmp_path)
    script.latency_s = 0.25  # a run of ~3 s: the signal lands mid-run even on a loaded machine
    out = tmp_path / "out"
    with FakeOpenAIServer(script) as server:
        args = [
            "--model", "openai/fake", "--api-base", server.api_base,  # type: ignore[attr-defined]
            "--dataset-name", str(dataset), "--parallel-workers", "2", "--output-dir", str(out), "--quiet",
        ]  # fmt: skip
        proc = subprocess.Popen(
            [*cli_command(), *args],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                dirs = list(out.glob("*")) if out.exists() else []
                if dirs and checkpoint_lines(dirs[0]) >= 2:
                    break
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        assert proc.returncode == 130, stdout + stderr
        assert_no_traceback(stderr)
        (run_dir,) = list(out.iterdir())
        assert f"Interrupted: continue with  smoltrace-eval --resume {run_dir}" in stdout
        meta = read_json(run_dir / "metadata.json")
        assert meta["status"] == "interrupted"
        partial = [r["test_case_uid"] for r in read_json(run_dir / "results.json")]
        assert 2 <= len(partial) < len(uids)
        assert len(set(partial)) == len(partial)
        assert all(r["error_type"] != "interrupted" for r in read_json(run_dir / "results.json"))

        resumed = run_subprocess(["--resume", str(run_dir), "--quiet", "--api-base", server.api_base], timeout=90)  # type: ignore[attr-defined]
    assert resumed.returncode == 0, resumed.stderr
    assert [r["test_case_uid"] for r in read_json(run_dir / "results.json")] == uids
    assert read_json(run_dir / "metadata.json")["status"] == "completed"
