"""The run record end to end (issue 11's scenarios), with real processes, the simulated GPU exporter
the runner starts itself, the embedded collector, and the fake Hub:

- Ctrl-C a traced run with GPU metrics, then --resume: every row keeps its trace, the energy of
  both segments is in the run total and in per-task energy_j, no false "no trace" warning;
- SIGKILL, then --resume: the killed segment's lost spans stay flagged in metadata;
- shards with a token never publish (no partial leaderboard row); merge publishes one row;
- two runs started in the same second publish into different datasets; re-publishing is idempotent;
- integrity failures planted in a run folder are refused by `publish` (exit 2) unless --force.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chat_servers import FakeOllamaServer, FakeOpenAIServer, Script, call, final
from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401 - fixture
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    cli_command,
    openai_server_fixture,
    read_json,
    run_main,
    run_subprocess,
    runner_env_fixture,
    standard_script,
    subprocess_env,
    task,
    write_jsonl,
)

CITIES = ["Paris, France", "London, UK", "New York, USA", "Tokyo, Japan", "Sydney, Australia", "Berlin, Germany"]


def weather_tasks(tmp_path: Path, latency_s: float) -> tuple[Path, Script, list[str]]:
    rows, script = [], Script(latency_s=latency_s)
    for i, city in enumerate(CITIES * 2):
        prompt = f"Task {i:02d}: what's the weather in {city}?"
        rows.append(task(f"w{i:02d}", prompt, expected_tool="get_weather", expected_tool_calls=1))
        script.add(f"Task {i:02d}:", call("get_weather", location=city), final(f"The weather in {city} is fine"))
    return write_jsonl(tmp_path / "weather.jsonl", rows), script, [f"tool:{r['id']}" for r in rows]


def checkpoint_uids(run_dir: Path) -> list[str]:
    path = run_dir / "checkpoint.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text("utf-8").splitlines():
        try:
            out.append(json.loads(line)["test_case_uid"])
        except (ValueError, KeyError):
            pass
    return out


def start_and_stop(args: list[str], out: Path, sig: int, after: int) -> tuple[Path, str, str, int]:
    """Run the CLI as a process, send `sig` once `after` executions are checkpointed."""
    proc = subprocess.Popen(
        [*cli_command(), *args],
        env=subprocess_env(SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    run_dir = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            dirs = list(out.glob("*")) if out.exists() else []
            if dirs and len(checkpoint_uids(dirs[0])) >= after:
                run_dir = dirs[0]
                break
            time.sleep(0.01)
        assert run_dir is not None, f"no checkpoint progress; rc={proc.poll()}"
        os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return run_dir, stdout, stderr, proc.returncode


def traced_gpu_args(server: FakeOllamaServer, dataset: Path, out: Path, run_id: str) -> list[str]:
    return [
        "--provider", "ollama", "--model", "tiny", "--api-base", server.url,  # type: ignore[attr-defined]
        "--dataset-name", str(dataset), "--agent-type", "tool", "--parallel-workers", "1", "--max-steps", "3",
        "--enable-otel", "--output-dir", str(out), "--run-id", run_id, "--quiet", "--output-format", "json",
    ]  # fmt: skip


def resume(run_dir: Path, server: FakeOllamaServer) -> subprocess.CompletedProcess[str]:
    """--resume; the model server's address is given again (a run folder never supplies it)."""
    return subprocess.run(
        [*cli_command(), "--resume", str(run_dir), "--quiet", "--api-base", server.url],  # type: ignore[attr-defined]
        env=subprocess_env(SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:2"),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_ctrl_c_then_resume_keeps_every_trace_and_both_segments_energy(tmp_path: Path, runner_env: None) -> None:
    dataset, script, uids = weather_tasks(tmp_path, latency_s=0.15)
    out = tmp_path / "out"
    with FakeOllamaServer(script) as server:
        run_dir, stdout, stderr, rc = start_and_stop(traced_gpu_args(server, dataset, out, "ctrl-c-run"), out, signal.SIGINT, 3)
        assert rc == 130, stdout + stderr
        first = read_json(run_dir / "metadata.json")
        assert first["status"] == "interrupted"
        done_before = [r["test_case_uid"] for r in read_json(run_dir / "results.json")]
        assert 3 <= len(done_before) < len(uids)
        resumed = resume(run_dir, server)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_no_traceback(resumed.stderr + stderr)
    assert "have no trace" not in resumed.stdout + resumed.stderr, "no false warning"

    rows = read_json(run_dir / "results.json")
    traces = read_json(run_dir / "traces.json")
    meta = read_json(run_dir / "metadata.json")
    assert [r["test_case_uid"] for r in rows] == uids
    # every row keeps its trace: one trace per execution, both segments' traces in traces.json
    by_uid = {uid: d for d in traces for uid in d["test_case_uids"]}
    assert sorted(by_uid) == sorted(uids) and len(traces) == len(uids)
    for r in rows:
        assert r["trace_id"] == by_uid[r["test_case_uid"]]["trace_id"], r["test_case_uid"]
    assert meta["telemetry"]["rows"]["rows_without_trace"] == []
    # the energy of both segments: in the run total, the leaderboard and per-task energy_j
    segments = meta["segments"]
    assert [s["kind"] for s in segments] == ["first", "resume"] and [s["status"] for s in segments] == ["interrupted", "completed"]
    seg_energy = [s["gpu_summary"]["energy_joules"] for s in segments]
    assert all(e > 0 for e in seg_energy), seg_energy
    total = meta["gpu_metrics"]["summary"]["energy_joules"]
    assert total == pytest.approx(sum(seg_energy))
    assert read_json(run_dir / "leaderboard_row.json")["energy_j"] == pytest.approx(total, abs=1e-3)
    assert all(r["energy_j"] is not None for r in rows), [r["test_case_uid"] for r in rows if r["energy_j"] is None]
    assert sum(r["energy_j"] for r in rows) == pytest.approx(total, rel=1e-3)
    assert sum(r["energy_j"] for r in rows if r["test_case_uid"] in done_before) == pytest.approx(seg_energy[0], rel=1e-3)
    # GPU samples of both segments
    stamps = {int(m["timestamp_unix_nano"]) for m in read_json(run_dir / "metrics_rows.json")}
    assert min(stamps) < int(datetime.fromisoformat(segments[1]["started_at"].replace("Z", "+00:00")).timestamp() * 1e9)
    assert meta["integrity"]["ok"] is True, meta["integrity"]
    assert meta["notices"] == []


def test_sigkill_then_resume_flags_the_lost_spans(tmp_path: Path, runner_env: None) -> None:
    dataset, script, uids = weather_tasks(tmp_path, latency_s=0.15)
    out = tmp_path / "out"
    with FakeOllamaServer(script) as server:
        run_dir, _, stderr, rc = start_and_stop(traced_gpu_args(server, dataset, out, "kill-run"), out, signal.SIGKILL, 3)
        assert rc == -signal.SIGKILL
        done_before = checkpoint_uids(run_dir)
        resumed = resume(run_dir, server)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_no_traceback(resumed.stderr + stderr)
    meta = read_json(run_dir / "metadata.json")
    rows = read_json(run_dir / "results.json")
    assert [r["test_case_uid"] for r in rows] == uids
    assert [s["status"] for s in meta["segments"]] == ["killed", "completed"]
    lost = meta["telemetry"]["rows"]["lost_with_killed_segment"]
    assert sorted(lost) == sorted(done_before) == sorted(meta["telemetry"]["rows"]["rows_without_trace"])
    assert any("have no trace" in n and "killed" in n for n in meta["notices"]), meta["notices"]
    assert f"{len(done_before)} execution(s) have no trace" in resumed.stdout
    findings = meta["integrity"]["findings"]
    assert [(f["check"], f["severity"]) for f in findings] == [("trace_per_row", "warning")], findings
    # energy: the killed segment's GPU summary died with it; what was measured is apportioned exactly
    measured = [r for r in rows if r["energy_j"] is not None]
    assert {r["test_case_uid"] for r in measured} == set(uids) - set(done_before)
    assert sum(r["energy_j"] for r in measured) == pytest.approx(meta["gpu_metrics"]["summary"]["energy_joules"], rel=1e-3)


# -- shards, merge and the Hub ----------------------------------------------------------------
def shard_script() -> Script:
    s = Script()
    s.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    s.add("What time is it in UTC", call("get_current_time", timezone="UTC"), final("It is 12:00 UTC"))
    s.add("1234 + 4321", call("calculator", expression="1234 + 4321"), final(5555))
    return s


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "hf_token"
    path.write_text(token, "utf-8")
    return path


def leaderboard_files(hub: Any) -> list[str]:
    name = f"{hub.user}/smoltrace-leaderboard"
    try:
        hub.get_repo(name)
    except KeyError:
        return []
    return [f for f in hub.list_files(name) if f.startswith("data/")]


def test_shards_with_a_token_never_publish_and_merge_publishes_one_row(runner_env: None, fake_hub, tmp_path: Path) -> None:
    from smoltrace.cli import main

    hub = fake_hub.hub
    token = token_file(tmp_path, hub.token)
    server = FakeOpenAIServer(shard_script()).start()
    try:
        common = ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "3", "--agent-type", "tool", "--quiet"]
        shards = []
        for i in range(2):
            run = run_main([*common, "--run-id", "sharded-hub", "--shard", f"{i}/2", "--hf-token-file", str(token)], tmp_path / "shards")
            assert run.rc == 0, run.stdout + run.stderr
            assert "smoltrace-eval merge" in run.stdout and "Published" not in run.stdout
            assert leaderboard_files(hub) == [], "no partial leaderboard row, ever"
            assert not list(hub.repos), f"a shard created datasets: {list(hub.repos)}"
        shards = sorted((tmp_path / "shards").iterdir())
        for shard in shards:  # publishing a shard by hand is refused too
            assert main(["publish", str(shard), "--hf-token-file", str(token)]) == 2
        assert not list(hub.repos)
    finally:
        server.stop()
    merged = tmp_path / "merged"
    assert main(["merge", str(merged), *map(str, shards), "--hf-token-file", str(token)]) == 0
    (row_file,) = leaderboard_files(hub)
    assert row_file == "data/sharded-hub.parquet"
    published = read_json(merged / "publish.json")
    board = read_json(merged / "leaderboard_row.json")
    assert board["total_tests"] == 3 and published["rows"]["results"] == 3
    # publishing the merged run again changes nothing: still one row
    assert main(["publish", str(merged), "--hf-token-file", str(token)]) == 0
    assert leaderboard_files(hub) == [row_file]
    assert read_json(merged / "publish.json")["datasets"] == published["datasets"]


def test_two_runs_started_in_the_same_second_never_share_a_dataset(
    runner_env: None, fake_hub, openai_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smoltrace.evaluate
    from smoltrace.cli import main

    hub = fake_hub.hub
    token = token_file(tmp_path, hub.token)
    server = openai_server(standard_script())
    same_second = datetime(2026, 12, 4, 12, 0, 5, tzinfo=UTC)
    real_now = smoltrace.evaluate.utc_now
    monkeypatch.setattr(smoltrace.evaluate, "utc_now", lambda: same_second)
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "1", "--max-steps", "3", "--quiet"]
    runs = [run_main([*args, "--run-id", run_id, "--hf-token-file", str(token)], tmp_path / run_id) for run_id in ("run-a", "run-b")]
    monkeypatch.setattr(smoltrace.evaluate, "utc_now", real_now)
    for run in runs:
        assert run.rc == 0, run.stdout + run.stderr
    a, b = (read_json(run.run_dir / "publish.json")["datasets"] for run in runs)
    assert a["results"] == f"{hub.user}/smoltrace-results-20261204_120005"
    assert b["results"].startswith(f"{hub.user}/smoltrace-results-20261204_120005-") and b["results"] != a["results"]
    assert {a["results"], a["metrics"]}.isdisjoint({b["results"], b["metrics"]})
    from datasets import load_dataset

    for names, run_id in ((a, "run-a"), (b, "run-b")):
        rows = load_dataset(names["results"], split="train", token=hub.token).to_list()
        assert {r["run_id"] for r in rows} == {run_id}, "each run's results stay its own"
    assert len(leaderboard_files(hub)) == 2
    # re-publishing is idempotent, even without the local record of the names
    for name in ("publish.json", "hub_datasets.json"):
        (runs[1].run_dir / name).unlink()
    commits_a = len(hub.get_repo(a["results"]).commits)
    assert main(["publish", str(runs[1].run_dir), "--hf-token-file", str(token)]) == 0
    assert read_json(runs[1].run_dir / "publish.json")["datasets"] == b
    assert len(hub.get_repo(a["results"]).commits) == commits_a, "run A's dataset untouched"
    assert len(leaderboard_files(hub)) == 2


# -- integrity before publishing --------------------------------------------------------------
def plant(run_dir: Path, dest: Path, how: str) -> Path:
    shutil.copytree(run_dir, dest)
    for name in ("publish.json", "hub_datasets.json"):
        (dest / name).unlink(missing_ok=True)
    rows, traces, meta = (read_json(dest / n) for n in ("results.json", "traces.json", "metadata.json"))
    if how == "trace_per_row":
        traces = traces[1:]
    elif how == "orphan_span":
        child = next(s for s in traces[0]["spans"] if s["parent_span_id"])
        child["parent_span_id"] = "f" * 16
    elif how == "root_span":
        child = next(s for s in traces[0]["spans"] if s["parent_span_id"])
        child["parent_span_id"] = None
    elif how == "tokens":
        rows[0]["total_tokens"] += 7
    elif how == "energy_sum":
        meta["gpu_metrics"]["summary"] = {"gpu_available": True, "energy_joules": 100.0}
        for r in rows:
            r["energy_j"] = 1.0
    elif how == "row_count":
        rows = rows[1:]
    for name, data in (("results.json", rows), ("traces.json", traces), ("metadata.json", meta)):
        (dest / name).write_text(json.dumps(data), "utf-8")
    return dest


def test_publish_refuses_a_run_that_fails_its_integrity_checks(
    runner_env: None, fake_hub, openai_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from smoltrace.cli import main

    hub = fake_hub.hub
    token = token_file(tmp_path, hub.token)
    server = openai_server(standard_script())
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "1", "--max-steps", "3", "--quiet", "--enable-otel"]
    run = run_main([*args, "--output-format", "json"], tmp_path / "out")
    assert run.rc == 0 and run.metadata["integrity"]["ok"] is True, run.metadata.get("integrity")
    capsys.readouterr()
    for how in ("trace_per_row", "orphan_span", "root_span", "tokens", "energy_sum", "row_count"):
        planted = plant(run.run_dir, tmp_path / f"planted-{how}", how)
        assert main(["publish", str(planted), "--hf-token-file", str(token)]) == 2, how
        err = capsys.readouterr().err
        assert "fails its integrity checks" in err and f"  - {how}: " in err, (how, err)
        assert_no_traceback(err)
    assert not list(hub.repos), "nothing reached the Hub"
    forced = plant(run.run_dir, tmp_path / "forced", "tokens")
    assert main(["publish", str(forced), "--hf-token-file", str(token), "--force"]) == 0
    assert len(leaderboard_files(hub)) == 1
