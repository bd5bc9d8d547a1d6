"""Ending clean (issue 12): SIGTERM and SIGHUP (a `docker stop`, a preempted Kubernetes pod, a
closed terminal) are handled like the first Ctrl-C — no new task, running ones finish within
--shutdown-grace, then results, traces, the GPU summary and the report are written, metadata
says interrupted, the exit code says which signal, and the resume command is printed. A second
signal cuts the grace short and still writes what is done. Real processes: the CLI with tracing
and the embedded (simulated) GPU exporter, against a fake model server in this process."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.chat_servers import FakeOpenAIServer, Script, call, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    cli_command,
    read_json,
    run_subprocess,
    runner_env_fixture,
    subprocess_env,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")

N = 10


def weather(tmp_path: Path, slow_from: int | None = None) -> tuple[Path, Script, list[str]]:
    """N tool tasks; from `slow_from` on, a task never answers and calls the tool until --max-steps."""
    rows, script = [], Script(latency_s=0.2)
    for i in range(N):
        prompt = f"Task {i:02d}: what's the weather in Paris, France?"
        rows.append(task(f"w{i:02d}", prompt, expected_tool="get_weather", expected_tool_calls=1))
        if slow_from is not None and i >= slow_from:
            script.add(f"Task {i:02d}:", call("get_weather", location="Paris, France"))  # repeats: never a final answer
        else:
            script.add(f"Task {i:02d}:", call("get_weather", location="Paris, France"), final("20°C in Paris"))
    return write_jsonl(tmp_path / "weather.jsonl", rows), script, [f"tool:{r['id']}" for r in rows]


def checkpoint_lines(out: Path) -> int:
    dirs = list(out.glob("*")) if out.exists() else []
    path = dirs[0] / "checkpoint.jsonl" if dirs else None
    return len(path.read_text("utf-8").splitlines()) if path and path.exists() else 0


def start(args: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*cli_command(), *args],
        env=subprocess_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def wait_for_lines(proc: subprocess.Popen[str], out: Path, lines: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and checkpoint_lines(out) < lines:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal"
    assert checkpoint_lines(out) >= lines


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_mid_run_writes_everything_then_resume_completes(tmp_path: Path, signum: int, code: int) -> None:
    dataset, script, uids = weather(tmp_path)
    out = tmp_path / "out"
    with FakeOpenAIServer(script) as server:
        args = [
            "--model", "openai/fake", "--api-base", server.api_base,  # type: ignore[attr-defined]
            "--dataset-name", str(dataset), "--parallel-workers", "2", "--output-dir", str(out), "--quiet",
            "--output-format", "json", "--enable-otel", "--enable-gpu-metrics", "--run-id", "signalled",
        ]  # fmt: skip
        proc = start(args, SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:1")
        try:
            wait_for_lines(proc, out, 2)
            proc.send_signal(signum)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        assert proc.returncode == code, stdout + stderr
        assert_no_traceback(stdout + stderr)
        (run_dir,) = list(out.iterdir())
        assert f"Interrupted: continue with  smoltrace-eval --resume {run_dir}" in stdout
        assert "no new tasks" in stderr
        meta = read_json(run_dir / "metadata.json")
        assert meta["status"] == "interrupted"
        assert meta["stop_reason"]["signal"] == signal.Signals(signum).name and meta["stop_reason"]["exit_code"] == code
        rows = read_json(run_dir / "results.json")
        done = [r["test_case_uid"] for r in rows]
        assert 2 <= len(done) < N and len(set(done)) == len(done)
        assert all(r["error_type"] != "interrupted" and r["success"] for r in rows), "in-flight tasks finished within the grace"
        traced = {uid for d in read_json(run_dir / "traces.json") for uid in d["test_case_uids"]}
        assert traced == set(done), "every finished execution has its trace"
        gpu = meta["gpu_metrics"]
        assert gpu["summary"] and gpu["summary"]["sample_count"] > 0, gpu  # sampling stopped, summary kept
        assert (run_dir / "report.html").exists() and (run_dir / "leaderboard_row.json").exists()

        resumed = run_subprocess(
            ["--resume", str(run_dir), "--quiet", "--api-base", server.api_base],  # type: ignore[attr-defined]
            timeout=120,
            env=subprocess_env(SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:1"),
        )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = read_json(run_dir / "results.json")
    assert [r["test_case_uid"] for r in rows] == uids, "every task exactly once"
    assert read_json(run_dir / "metadata.json")["status"] == "completed"


def test_a_second_signal_cuts_the_grace_short_and_still_writes_what_is_done(tmp_path: Path) -> None:
    """Two quick tasks finish, the third never ends by itself (it would use --max-steps 40 at
    0.2 s a call); --shutdown-grace 120. Ctrl-C, then Ctrl-C again: the run stops at once,
    keeps the two finished tasks and says interrupted (it used to say "interrupted before the
    run started" and leave no results)."""
    dataset, script, _ = weather(tmp_path, slow_from=2)
    out = tmp_path / "out"
    with FakeOpenAIServer(script) as server:
        args = [
            "--model", "openai/fake", "--api-base", server.api_base,  # type: ignore[attr-defined]
            "--dataset-name", str(dataset), "--parallel-workers", "1", "--output-dir", str(out), "--quiet",
            "--output-format", "json", "--max-steps", "40", "--shutdown-grace", "120",
        ]  # fmt: skip
        proc = start(args)
        try:
            wait_for_lines(proc, out, 2)
            time.sleep(0.5)  # the third task is running
            proc.send_signal(signal.SIGINT)
            time.sleep(1.0)
            assert proc.poll() is None, "the first signal waits for the running task"
            second = time.monotonic()
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
            after_second = time.monotonic() - second
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert proc.returncode == 130, stdout + stderr
    assert after_second < 30, "the grace (120 s) was cut short"
    assert "before the run started" not in stderr
    assert "again: stopping running tasks now" in stderr
    assert_no_traceback(stdout + stderr)
    (run_dir,) = list(out.iterdir())
    rows = read_json(run_dir / "results.json")
    assert [r["test_case_uid"] for r in rows] == ["tool:w00", "tool:w01"], "the cut-short task is not kept: it runs on --resume"
    assert read_json(run_dir / "metadata.json")["status"] == "interrupted"


def test_sigterm_before_the_run_folder_exists_exits_143_leaving_nothing(tmp_path: Path) -> None:
    """During start-up (here: the preflight request hangs) a SIGTERM ends the process at once."""
    script = Script()
    script.add("smoltrace preflight", Script().default)
    script.rules[0].turns[0].delay_s = 30
    out = tmp_path / "out"
    with FakeOpenAIServer(script) as server:
        proc = start(["--model", "openai/fake", "--api-base", server.api_base, "--output-dir", str(out), "--output-format", "json"])  # type: ignore[attr-defined]
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and script.preflight_requests == 0:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert proc.returncode == 143, stdout + stderr
    assert "interrupted before the run started" in stderr
    assert_no_traceback(stdout + stderr)
    assert not out.exists()
