"""Faults of issue #7 that the older suites did not cover: the GPU exporter restarted, slow, or
terminated during a run; its lease expiring after the runner died; the Hub failing in the middle
of a publish; the runner killed at several points and resumed (with and without tracing); canary
secrets in --debug logs of a subprocess run. The evaluation always completes, local outputs are
whole, metadata says what is missing. docs/RELIABILITY.md maps every scenario to its test."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from smoltrace_proto import pb, pb_grpc
from tests.fakes import hub_server
from tests.fakes.chat_servers import FakeOpenAIServer, Script, call, final
from tests.fakes.exporter_client import OwnerStub
from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401 - fixture
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    cli_command,
    read_json,
    run_main,
    run_subprocess,
    runner_env_fixture,
    standard_script,
    subprocess_env,
    task,
    write_jsonl,
)
from tests.fakes.telemetry_procs import HookScript, ReadyLineProcess, SimulatedExporter, free_port, wait_until

FULL = os.environ.get("SMOLTRACE_RELIABILITY_FULL") == "1"  # `make reliability` runs the extra kill points


def exporter_on(port: int) -> ReadyLineProcess:
    return ReadyLineProcess(
        [
            sys.executable,
            "-m",
            "smoltrace_gpu_exporter.cli",
            "--grpc-address",
            f"127.0.0.1:{port}",
            "--metrics-address",
            "127.0.0.1:0",
            "--backend",
            "simulated:2",
            "--otlp-export-interval-ms",
            "200",
            "--log-level",
            "WARNING",
        ]
    )


def three_tasks() -> HookScript:
    s = HookScript()
    s.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    s.add("What time", call("get_current_time", timezone="UTC"), final("It is 12:00 UTC"))
    s.add("1234 + 4321", call("calculator", expression="1234 + 4321"), final(5555))
    return s


def run_with_exporter(server: FakeOpenAIServer, address: str, out: Path, *extra: str):
    return run_main(
        [
            "--model",
            "openai/fake",
            "--api-base",
            server.api_base,  # type: ignore[attr-defined]
            "--agent-type",
            "tool",
            "--limit",
            "3",
            "--enable-gpu-metrics",
            "--gpu-exporter",
            address,
            "--quiet",
            *extra,
        ],
        out,
    )


def assert_complete_without_summary(run: Any, warning_part: str) -> None:
    assert run.rc == 0, run.stdout + run.stderr
    assert len(run.results) == 3 and all(r["success"] for r in run.results), run.results
    assert run.metadata["status"] == "completed"
    gpu = run.metadata["gpu_metrics"]
    assert gpu["summary"] is None, gpu
    assert gpu["warning"] and warning_part in gpu["warning"], gpu
    assert run.leaderboard["total_tests"] == 3
    for name in ("results.json", "traces.json", "metrics.json", "leaderboard_row.json", "metadata.json", "report.html"):
        assert (run.run_dir / name).exists(), name


# -- the exporter during a run ------------------------------------------------------------------
def test_exporter_restarted_mid_run(tmp_path: Path, runner_env: None) -> None:
    """Killed after the first task and back on the same port before the second: the new process
    does not know the run, so StopSampling is NOT_FOUND; the evaluation completes and says so."""
    port = free_port()
    holder: dict[str, ReadyLineProcess] = {"exporter": exporter_on(port)}

    def restart() -> None:
        holder["exporter"].kill()
        holder["exporter"] = exporter_on(port)

    script = three_tasks()
    script.on_start["What time"] = restart
    try:
        with FakeOpenAIServer(script) as server:
            run = run_with_exporter(server, f"127.0.0.1:{port}", tmp_path / "out")
        assert not script.hook_errors, script.hook_errors
        assert holder["exporter"].proc.poll() is None, "the restarted exporter is still up"
        assert_complete_without_summary(run, "NOT_FOUND")
        assert "StopSampling failed" in run.metadata["gpu_metrics"]["warning"]
        # the restarted exporter serves new runs
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = OwnerStub(channel)
        stub.StartSampling(pb.StartSamplingRequest(run_id="after-restart", interval_ms=100), timeout=10)
        assert stub.StopSampling(pb.StopSamplingRequest(run_id="after-restart"), timeout=10).run_id == "after-restart"
        channel.close()
    finally:
        holder["exporter"].close()


class SlowExporter(pb_grpc.GpuExporterServicer):
    """Answers StartSampling only after `delay_s` (beyond the runner's 5 s RPC timeout)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.release = threading.Event()

    def StartSampling(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC naming
        self.calls.append("StartSampling")
        self.release.wait(self.delay_s)
        return pb.StartSamplingResponse(gpu_available=True)

    def StopSampling(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.calls.append("StopSampling")
        return pb.RunSummary(run_id=request.run_id)


def test_exporter_slow_to_answer(tmp_path: Path, runner_env: None) -> None:
    servicer = SlowExporter(delay_s=30)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GpuExporterServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        started = time.monotonic()
        with FakeOpenAIServer(three_tasks()) as model:
            run = run_with_exporter(model, f"127.0.0.1:{port}", tmp_path / "out")
        elapsed = time.monotonic() - started
    finally:
        servicer.release.set()
        server.stop(grace=0)
    assert_complete_without_summary(run, "DEADLINE_EXCEEDED")
    assert servicer.calls == ["StartSampling"], "a run whose start timed out is not stopped"
    assert run.metadata["gpu_metrics"]["gpu_available"] in (None, False)
    assert "[WARN] GPU metrics:" in run.stdout
    assert elapsed < 30, f"the slow exporter held the run for {elapsed:.1f} s"


def test_exporter_sigterm_mid_run(tmp_path: Path, runner_env: None) -> None:
    exporter = SimulatedExporter(gpus=2, export_interval_ms=200)
    codes: list[int] = []
    script = three_tasks()
    script.on_start["What time"] = lambda: codes.append(exporter.terminate(timeout=10))
    try:
        with FakeOpenAIServer(script) as server:
            run = run_with_exporter(server, exporter.address, tmp_path / "out")
    finally:
        exporter.close()
    assert not script.hook_errors, script.hook_errors
    assert codes == [0], "SIGTERM: the exporter exits 0"
    assert_complete_without_summary(run, "StopSampling failed")
    assert "UNAVAILABLE" in run.metadata["gpu_metrics"]["warning"]


LEASE_CLIENT = textwrap.dedent(
    """
    import sys, time
    from smoltrace.gpu import GpuDecision, GpuSession
    session = GpuSession(
        GpuDecision(True, "test"), sys.argv[2], address=sys.argv[1], lease_seconds=int(sys.argv[3]), interval_ms=100, auth_token=sys.argv[4]
    )
    session.start()
    print("started" if session.report.warning is None else "warning " + str(session.report.warning), flush=True)
    time.sleep(600)
    """
)


def test_lease_expires_after_the_runner_dies(tmp_path: Path) -> None:
    """The runner's own GpuSession (short lease: the runner's default is 60 s) is SIGKILLed; the
    exporter stops the run itself with stop_reason lease_expired within the lease."""
    lease_s = 3
    token = tmp_path / "token"
    token.write_text("operator-token")  # the test watches the runner's run as the exporter's operator
    admin = (("authorization", "Bearer operator-token"),)
    exporter = SimulatedExporter(gpus=2, extra=("--auth-token-file", str(token)))
    client = subprocess.Popen(
        [sys.executable, "-c", LEASE_CLIENT, exporter.address, "orphan-run", str(lease_s), "operator-token"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=subprocess_env(),
    )
    channel = grpc.insecure_channel(exporter.address)
    stub = pb_grpc.GpuExporterStub(channel)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "started", client.stderr.read() if client.stderr else ""
        state = stub.GetRun(pb.GetRunRequest(run_id="orphan-run"), timeout=10, metadata=admin)
        assert state.phase == pb.RunState.ACTIVE
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        killed_at = time.monotonic()

        def stopped() -> Any:
            s = stub.GetRun(pb.GetRunRequest(run_id="orphan-run"), timeout=10, metadata=admin)
            return s if s.phase == pb.RunState.STOPPED else None

        state = wait_until(stopped, lease_s + 5, interval=0.1, what="the lease to expire")
        waited = time.monotonic() - killed_at
        assert state.summary.stop_reason == "lease_expired"
        assert waited <= lease_s + 1.5, f"stopped {waited:.1f} s after the kill, lease {lease_s} s"
        assert state.summary.sample_count >= 2 and state.summary.energy_joules > 0
        # the summary is kept: a late StopSampling gets it
        assert stub.StopSampling(pb.StopSamplingRequest(run_id="orphan-run"), timeout=10, metadata=admin).stop_reason == "lease_expired"
    finally:
        channel.close()
        if client.poll() is None:
            client.kill()
            client.wait(timeout=5)
        for stream in (client.stdout, client.stderr):
            if stream is not None:
                stream.close()
        exporter.close()


# -- the Hub failing in the middle of a publish ---------------------------------------------------
def test_hub_fails_mid_publish_then_publish_succeeds(runner_env: None, fake_hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The results and metrics commits succeed, the traces commit is refused (403, not retried):
    exit 4, local files whole, nothing claims to be published; `publish RUN_DIR` then completes
    the rest, twice, without duplicate rows."""
    from tests.fakes.runner_fixtures import hub_online

    hub_online(monkeypatch)
    hub = fake_hub.hub
    refused: list[str] = []
    original = hub_server._Handler._commit

    def commit(self: Any, user: Any, body: bytes, repo_type: str, repo_id: str, revision: str) -> None:
        if "smoltrace-traces-" in repo_id and not refused:
            refused.append(repo_id)
            raise hub_server.HubError(403, "Injected: traces repo is read-only")
        original(self, user, body, repo_type, repo_id, revision)

    monkeypatch.setattr(hub_server._Handler, "_commit", commit)
    token = tmp_path / "hf_token"
    token.write_text(hub.token, "utf-8")
    with FakeOpenAIServer(standard_script()) as server:
        run = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,
                "--limit",
                "1",
                "--max-steps",
                "3",  # type: ignore[attr-defined]
                "--enable-otel",
                "--hf-token-file",
                str(token),
                "--quiet",
            ],
            tmp_path / "out",
        )
    assert refused, "the traces commit was attempted"
    assert run.rc == 4, run.stdout + run.stderr
    assert "publishing to the Hub failed" in run.stderr and "403" in run.stderr
    assert f"smoltrace-eval publish {run.run_dir}" in run.stdout
    local = read_json(run.run_dir / "results.json")
    traces = read_json(run.run_dir / "traces.json")
    assert len(local) == 2 and len(traces) == 2
    for name in ("results.json", "traces.json", "metrics.json", "leaderboard_row.json", "metadata.json", "report.html", "checkpoint.jsonl"):
        assert (run.run_dir / name).exists(), name
    assert not (run.run_dir / "publish.json").exists()
    assert run.metadata.get("published") is None, "metadata does not claim a publish that failed"
    repos = {repo_id for (_, repo_id) in hub.repos}
    assert any("smoltrace-results-" in r for r in repos) and any("smoltrace-metrics-" in r for r in repos)
    assert f"{hub.user}/smoltrace-leaderboard" not in repos, "the leaderboard row comes last and was not written"

    from datasets import load_dataset

    from smoltrace.cli import main

    for _ in range(2):
        assert main(["publish", str(run.run_dir), "--hf-token-file", str(token)]) == 0
    names = json.loads((run.run_dir / "publish.json").read_text())["datasets"]
    assert read_json(run.run_dir / "metadata.json")["published"]["datasets"] == names
    results = load_dataset(names["results"], split="train", token=hub.token).to_list()
    assert sorted(r["test_case_uid"] for r in results) == sorted(r["test_case_uid"] for r in local), "no duplicate rows"
    hub_traces = load_dataset(names["traces"], split="train", token=hub.token).to_list()
    assert sorted(t["trace_id"] for t in hub_traces) == sorted(t["trace_id"] for t in traces)
    board = load_dataset(names["leaderboard"], split="train", token=hub.token).to_list()
    assert len(board) == 1 and board[0]["total_tests"] == 2 and board[0]["traces_dataset"] == names["traces"]


# -- the runner killed at several points, then --resume -------------------------------------------
CITIES = ["Paris, France", "London, UK", "New York, USA", "Tokyo, Japan", "Sydney, Australia", "Berlin, Germany"]
KILL_POINTS = [pytest.param(2, True, id="k2-otel")] + [
    pytest.param(k, otel, id=f"k{k}{'-otel' if otel else ''}", marks=pytest.mark.skipif(not FULL, reason="make reliability only"))
    for k, otel in ((1, False), (5, False), (7, True), (10, False))
]


def weather_tasks(tmp_path: Path, n: int) -> tuple[Path, Script, list[str]]:
    rows, script = [], Script(latency_s=0.12)  # a wide enough window to kill mid-run on a loaded machine
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        prompt = f"Task {i:02d}: what's the weather in {city}?"
        rows.append(task(f"w{i:02d}", prompt, expected_tool="get_weather", expected_tool_calls=1))
        script.add(f"Task {i:02d}:", call("get_weather", location=city), final(f"The weather in {city} is fine"))
    return write_jsonl(tmp_path / "weather.jsonl", rows), script, [f"tool:{r['id']}" for r in rows]


def checkpoint_uids(run_dir: Path) -> list[str]:
    path = run_dir / "checkpoint.jsonl"
    if not path.exists():
        return []
    uids = []
    for line in path.read_text("utf-8").splitlines():
        try:
            uids.append(json.loads(line)["test_case_uid"])
        except (ValueError, KeyError):
            pass  # a torn last line
    return uids


@pytest.mark.parametrize(("kill_after", "otel"), KILL_POINTS)
def test_sigkill_at_a_point_then_resume(tmp_path: Path, runner_env: None, kill_after: int, otel: bool) -> None:
    n = 16
    dataset, script, uids = weather_tasks(tmp_path, n)
    out = tmp_path / "out"
    rng = random.Random(kill_after)
    workers = rng.choice([1, 2])
    with FakeOpenAIServer(script) as server:
        args = [
            "--model",
            "openai/fake",
            "--api-base",
            server.api_base,  # type: ignore[attr-defined]
            "--dataset-name",
            str(dataset),
            "--agent-type",
            "tool",
            "--parallel-workers",
            str(workers),
            "--output-dir",
            str(out),
            "--run-id",
            f"kill-{kill_after}",
            "--quiet",
            "--output-format",
            "json",
            *(["--enable-otel"] if otel else []),
        ]
        proc = subprocess.Popen(
            [*cli_command(), *args],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        run_dir = None
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                dirs = list(out.glob("*")) if out.exists() else []
                if dirs and len(checkpoint_uids(dirs[0])) >= kill_after:
                    run_dir = dirs[0]
                    break
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, first_err = proc.communicate(timeout=10)
        assert run_dir is not None, f"no checkpoint progress; stderr: {first_err}"
        done_before = checkpoint_uids(run_dir)
        assert kill_after <= len(done_before) < n, done_before
        assert not (run_dir / "results.json").exists()
        resumed = run_subprocess(["--resume", str(run_dir), "--quiet", "--api-base", server.api_base], timeout=120)  # type: ignore[attr-defined]
    assert resumed.returncode == 0, resumed.stderr
    assert_no_traceback(resumed.stderr + first_err)
    rows = read_json(run_dir / "results.json")
    assert [r["test_case_uid"] for r in rows] == uids, "every task exactly once, in plan order"
    assert all(r["success"] for r in rows)
    assert sorted(checkpoint_uids(run_dir)) == sorted(uids), "the checkpoint holds each task once"
    meta = read_json(run_dir / "metadata.json")
    assert meta["status"] == "completed" and meta["num_results"] == n
    assert meta["timings"]["executions_this_process"] == n - len(done_before)
    assert read_json(run_dir / "leaderboard_row.json")["total_tests"] == n
    if otel:
        traces = read_json(run_dir / "traces.json")
        traced = [uid for d in traces for uid in d["test_case_uids"]]
        assert len(traced) == len(set(traced)), "one trace per result at most"
        resumed_uids = [u for u in uids if u not in done_before]
        # the killed segment's spans died with its embedded collector: only the resumed segment is traced
        assert sorted(traced) == sorted(resumed_uids)
        report = meta["telemetry"]
        assert sorted(report["rows"]["rows_without_trace"]) == sorted(done_before), report["rows"]
        assert any("have no trace" in w for w in report["warnings"]), report["warnings"]


# -- canaries in --debug logs of a subprocess run --------------------------------------------------
def test_credentials_absent_from_debug_logs_and_report(tmp_path: Path, runner_env: None) -> None:
    """The HF token file, an api_key model arg and OPENAI_API_KEY never appear in --debug stdout/stderr
    (litellm, smolagents, OTel and our own debug logging), nor in any file of the run, report.html
    included. Not planted in the prompt here: a secret the user writes into the prompt is redacted
    in spans and outputs (test_telemetry_secrets.py) but litellm's --debug request log prints the
    prompt as sent (see docs/RELIABILITY.md, findings)."""
    hf, arg, env_key = "zqHFdebug0a1b2c3d4e5f", "zqARGdebug9f8e7d6c5b4a", "zqENVdebug1122334455aa"
    token = tmp_path / "tok"
    token.write_text(hf, "utf-8")
    with FakeOpenAIServer(standard_script()) as server:
        result = run_subprocess(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,
                "--limit",
                "1",  # type: ignore[attr-defined]
                "--enable-otel",
                "--hf-token-file",
                str(token),
                "--model-args",
                f"api_key={arg}",
                "--output-format",
                "json",
                "--debug",
                "--output-dir",
                str(tmp_path / "out"),
            ],
            env=subprocess_env(OPENAI_API_KEY=env_key),
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stderr) > 1000, "--debug logged"
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files)
    for canary in (hf, arg, env_key):
        assert canary not in result.stdout, canary
        assert canary not in result.stderr, canary
        for path in files:
            assert canary not in path.read_text("utf-8", errors="replace"), (canary, path.name)
