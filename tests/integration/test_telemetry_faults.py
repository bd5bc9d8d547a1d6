"""Telemetry faults during a run: the GPU exporter killed mid-run, the collector's receiver going
away and coming back mid-run, and two evaluations sharing one exporter at the same time. The
evaluation always completes; metadata says what is missing."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

import smoltrace.telemetry_session
from smoltrace import telemetry
from smoltrace.collector.receiver import OtlpGrpcReceiver
from tests.fakes.chat_servers import PREFLIGHT_MARKER, FakeOpenAIServer, Turn, call, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    cli_command,
    read_json,
    run_main,
    runner_env_fixture,
    subprocess_env,
)
from tests.fakes.telemetry_procs import CollectorSpy, HookScript, SimulatedExporter, wait_until

WEATHER, TIME, CALC = "tool:tool_weather_single", "tool:tool_time_single", "tool:tool_calculator_single"


def three_tool_tasks() -> HookScript:
    s = HookScript()
    s.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    s.add("What time", call("get_current_time", timezone="UTC"), final("It is 12:00 UTC"))
    s.add("1234 + 4321", call("calculator", expression="1234 + 4321"), final(5555))
    return s


@pytest.fixture
def exporter():
    process = SimulatedExporter(gpus=2, export_interval_ms=200)
    yield process
    process.close()


def test_exporter_killed_mid_run(tmp_path: Path, runner_env: None, monkeypatch: pytest.MonkeyPatch, exporter: SimulatedExporter) -> None:
    spy = CollectorSpy()
    monkeypatch.setattr(smoltrace.telemetry_session, "Collector", spy.cls)
    script = three_tool_tasks()
    run_id = "run-exporter-killed"

    def kill_exporter() -> None:
        # some samples reached the run's collector first: the metrics that exist are kept
        # the exporter labels this process's samples with its segment of the run (run_id/seg-...)
        def sampled() -> bool:
            runs = spy.only.store.runs() if spy.instances else {}
            return any(k.startswith(f"{run_id}/seg-") and v.get("data_points", 0) > 0 for k, v in runs.items())

        wait_until(sampled, 10, what="GPU samples")
        exporter.kill()

    script.on_start["What time"] = kill_exporter
    with FakeOpenAIServer(script) as server:
        run = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,
                "--agent-type",
                "tool",
                "--limit",
                "2",
                "--enable-gpu-metrics",
                "--gpu-exporter",
                exporter.address,
                "--run-id",
                run_id,
                "--quiet",
            ],  # type: ignore[attr-defined]
            tmp_path / "out",
        )
    assert not script.hook_errors, script.hook_errors
    assert exporter.proc.returncode is not None, "the exporter was killed during the run"
    assert run.rc == 0, run.stdout + run.stderr
    assert [r["test_case_uid"] for r in run.results] == [WEATHER, TIME]
    assert all(r["success"] for r in run.results)
    gpu = run.metadata["gpu_metrics"]
    assert gpu["enabled"] is True and gpu["exporter"] == exporter.address and gpu["gpu_available"] is True
    assert gpu["summary"] is None
    assert gpu["warning"] and "StopSampling failed" in gpu["warning"]
    assert run.metadata["status"] == "completed"
    metrics = read_json(run.run_dir / "metrics.json")
    assert metrics["resourceMetrics"], "what arrived before the kill is kept"
    assert read_json(run.run_dir / "metrics_rows.json")
    assert all(r["energy_j"] is None for r in run.results), "no summary, no per-task energy"
    assert run.metadata["telemetry"]["rows"]["energy_attributed"] is False


def test_collector_receiver_down_mid_run_then_back(tmp_path: Path, runner_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded collector's receiver stops after the first task (its spans delivered), stays
    down for the second and is back, on the same port, for the third."""
    spy = CollectorSpy()
    monkeypatch.setattr(smoltrace.telemetry_session, "Collector", spy.cls)
    tracings: list[telemetry.RunTracing] = []

    class RecordingRunTracing(telemetry.RunTracing):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            tracings.append(self)

    monkeypatch.setattr(telemetry, "RunTracing", RecordingRunTracing)
    script = three_tool_tasks()
    events: list[str] = []

    def go_down() -> None:
        (tracing,) = tracings
        assert tracing.provider.force_flush(10_000)  # the first task's spans are in
        spy.only.receiver.stop(grace=0)
        events.append("down")

    def come_back() -> None:
        (tracing,) = tracings
        tracing.provider.force_flush(10_000)  # the second task's spans are tried (and lost) while it is down
        collector = spy.only
        collector.receiver = OtlpGrpcReceiver(collector.ingest, collector.endpoint)
        collector.receiver.start()
        # let the run's OTLP channel get past its reconnect back-off before the third task ends
        channel = tracing._processor.span_exporter._inner._channel
        grpc.channel_ready_future(channel).result(timeout=30)
        events.append("up")

    script.on_start["What time"] = go_down
    script.on_start["1234 + 4321"] = come_back
    with FakeOpenAIServer(script) as server:
        run = run_main(
            ["--model", "openai/fake", "--api-base", server.api_base, "--agent-type", "tool", "--limit", "3", "--enable-otel", "--quiet"],  # type: ignore[attr-defined]
            tmp_path / "out",
        )
    assert not script.hook_errors, script.hook_errors
    assert events == ["down", "up"]
    assert run.rc == 0, run.stdout + run.stderr
    assert [r["test_case_uid"] for r in run.results] == [WEATHER, TIME, CALC]
    assert all(r["success"] for r in run.results)
    assert all(r["trace_id"] for r in run.results), "every task was traced"
    report = run.metadata["telemetry"]
    assert report["rows"]["rows_without_trace"] == [TIME], report
    traces = read_json(run.run_dir / "traces.json")
    assert {uid for d in traces for uid in d["test_case_uids"]} == {WEATHER, CALC}
    assert report["received"]["traces"] == 2


# -- two evaluations sharing one exporter ---------------------------------------------------------
class MeetingScript(HookScript):
    """Holds the first request of each of `parties` runs until all of them made it: the runs'
    sampling sessions are certainly live at the same time."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=60)
        self.met = 0

    def next_turn(self, messages: list[dict[str, Any]]) -> Turn:
        probe = any(PREFLIGHT_MARKER in str(m.get("content")) for m in messages)  # the runner's preflight, before sampling starts
        if not probe and not any(m.get("role") == "assistant" for m in messages):
            try:
                self.barrier.wait()
                self.met += 1
            except threading.BrokenBarrierError:
                pass
        return super().next_turn(messages)


def test_two_runs_at_once_share_one_exporter(tmp_path: Path, exporter: SimulatedExporter) -> None:
    script = MeetingScript(parties=2)
    script.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    run_ids = ("run-shared-x", "run-shared-y")
    with FakeOpenAIServer(script) as server:
        procs = [
            subprocess.Popen(
                [
                    *cli_command(),
                    "--model",
                    "openai/fake",
                    "--api-base",
                    server.api_base,  # type: ignore[attr-defined]
                    "--agent-type",
                    "tool",
                    "--limit",
                    "1",
                    "--enable-gpu-metrics",
                    "--gpu-exporter",
                    exporter.address,
                    "--run-id",
                    run_id,
                    "--output-dir",
                    str(tmp_path / run_id),
                    "--quiet",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                env=subprocess_env(),
            )
            for run_id in run_ids
        ]
        outputs = []
        try:
            for proc in procs:
                out, _ = proc.communicate(timeout=90)
                outputs.append(out)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out
    assert script.met == 2, "both runs were in flight together"
    summaries = {}
    for run_id in run_ids:
        (run_dir,) = (tmp_path / run_id).iterdir()
        meta = read_json(run_dir / "metadata.json")
        gpu = meta["gpu_metrics"]
        assert meta["run_id"] == run_id
        assert gpu["exporter"] == exporter.address and gpu["embedded_exporter"] is False and gpu["warning"] is None
        summary = gpu["summary"]
        assert summary["run_id"] == run_id and float(summary["energy_joules"]) > 0
        summaries[run_id] = summary
        metrics = read_json(run_dir / "metrics.json")
        assert metrics["run_id"] == run_id and metrics["resourceMetrics"]
        for rm in metrics["resourceMetrics"]:
            resource = {a["key"]: a["value"] for a in rm["resource"]["attributes"]}
            assert resource["run.id"] == {"stringValue": run_id}, "only this run's metrics"
        rows = read_json(run_dir / "metrics_rows.json")
        assert rows and {r["run_id"] for r in rows} == {run_id}
        (row,) = read_json(run_dir / "results.json")
        assert row["energy_j"] == pytest.approx(float(summary["energy_joules"]), rel=1e-6)
    x, y = summaries.values()
    assert x["start_unix_ms"] < y["end_unix_ms"] and y["start_unix_ms"] < x["end_unix_ms"], "the sampling windows overlap"
    assert x["energy_joules"] != y["energy_joules"]
