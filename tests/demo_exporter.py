"""`make demo`: the GPU-exporter half of a smoltrace run, end to end, on any machine.

Starts the real `smoltrace-gpu-exporter` CLI with two simulated GPUs on free ports, and an OTLP
receiver (tests/fakes/otlp_receiver.py) as the run's collector; drives one ~3 s run over gRPC the
way the runner does (StartSampling, Heartbeat, WatchRun, StopSampling); prints the run summary, a
few /metrics lines and what arrived over OTLP; then stops the exporter with SIGTERM.

    python -m tests.demo_exporter
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import IO, Any

import grpc

from smoltrace_proto import pb, pb_grpc
from tests.fakes.exporter_client import OwnerStub
from tests.fakes.otlp_receiver import OtlpReceiver

RUN_SECONDS = 3.0
INTERVAL_MS = 100
SHOWN_METRICS = (
    "smoltrace_gpu_power_watts",
    "smoltrace_gpu_energy_joules_total",
    "smoltrace_gpu_exporter_up",
    "smoltrace_gpu_exporter_nvml_up",
    "smoltrace_gpu_exporter_runs_started_total",
    "smoltrace_gpu_exporter_otlp_exported_samples_total",
)


def say(text: str = "") -> None:
    print(text, flush=True)


def exporter_command() -> list[str]:
    script = Path(sys.executable).with_name("smoltrace-gpu-exporter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "smoltrace_gpu_exporter.cli"]


def read_ready_line(stdout: IO[str], timeout: float) -> dict[str, Any]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"the exporter printed no ready line within {timeout:.0f} s") from None
    if not line:
        raise RuntimeError("the exporter exited before it was ready")
    return json.loads(line)


def short_labels(line: str) -> str:
    """Drop the long uuid/name labels from a /metrics line, for the screen."""
    if "{" not in line:
        return line
    name, rest = line.split("{", 1)
    labels, value = rest.rsplit("}", 1)
    kept = [item for item in labels.split(",") if not item.startswith(("uuid=", "name="))]
    return f"{name}{{{','.join(kept)}}}{value}" if kept else f"{name}{value}"


def describe_sample(sample: pb.Sample, t0_ns: int) -> str:
    parts = [
        f"GPU{d.index} {d.utilization_percent:5.1f}% {d.power_watts:5.0f} W {d.temperature_celsius:4.1f} C {d.energy_joules:7.1f} J"
        for d in sample.devices
    ]
    return f"    +{(sample.timestamp_unix_nano - t0_ns) / 1e9:4.1f}s  " + " | ".join(parts)


def drive_run(stub: pb_grpc.GpuExporterStub, receiver: OtlpReceiver) -> tuple[str, pb.RunSummary]:
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    started = stub.StartSampling(
        pb.StartSamplingRequest(
            run_id=run_id,
            interval_ms=INTERVAL_MS,
            otlp_endpoint=receiver.endpoint,
            lease_seconds=30,
            resource_attributes={"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "provider": "transformers", "agent_type": "both"},
        ),
        timeout=10,
    )
    say(
        f"[gRPC StartSampling] run {run_id}: gpu_available={started.gpu_available}, simulated={started.simulated}, "
        f"energy method {started.energy_method!r}, every {started.interval_ms} ms"
    )
    for device in started.devices:
        say(f"    GPU{device.index} {device.name} {device.uuid} ({device.memory_total_bytes / 2**30:.0f} GiB)")
    state = stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=10)
    say(
        f"[gRPC GetRun] phase {pb.RunState.Phase.Name(state.phase)}, {state.sample_count} sample(s) so far, attributes {dict(state.resource_attributes)}"
    )
    say(f"[gRPC WatchRun] live samples of {run_id}, time since the run started (every 5th shown):")
    summary: pb.RunSummary | None = None
    t_start = time.monotonic()
    next_heartbeat = t_start + 1.0
    t0_ns = state.start_unix_ms * 1_000_000
    last: pb.Sample | None = None
    printed = False
    for count, sample in enumerate(stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=15)):
        last, printed = sample, count % 5 == 0
        if printed:
            say(describe_sample(sample, t0_ns))
        now = time.monotonic()
        if summary is not None:
            continue  # stopped: the stream goes on to the stop boundary read, then ends
        if now - t_start >= RUN_SECONDS:
            summary = stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=10)
        elif now >= next_heartbeat:
            beat = stub.Heartbeat(pb.HeartbeatRequest(run_id=run_id), timeout=10)
            say(f"    [gRPC Heartbeat] lease extended to {time.strftime('%H:%M:%S', time.localtime(beat.lease_expires_unix_ms / 1000))}")
            next_heartbeat = now + 1.0
    if summary is None or last is None:
        raise RuntimeError("the WatchRun stream ended before the run was stopped")
    if not printed:
        say(describe_sample(last, t0_ns) + "  <- stop boundary read")
    say(f"    the stream ended after the stop boundary read; {count + 1} samples streamed")
    return run_id, summary


def print_summary(summary: pb.RunSummary) -> None:
    say(
        f"[gRPC StopSampling] RunSummary of {summary.run_id}: {summary.duration_seconds:.2f} s, {summary.sample_count} samples, stop reason {summary.stop_reason!r}"
    )
    say("    GPU   energy J    CO2 g   util avg/max %   power avg/max W   samples  method")
    for d in summary.devices:
        say(
            f"    {d.index:>3} {d.energy_joules:10.1f} {d.co2_grams:8.4f}   {d.utilization_percent.avg:6.1f} / {d.utilization_percent.max:5.1f}"
            f"   {d.power_watts.avg:7.1f} / {d.power_watts.max:5.1f}   {d.sample_count:7d}  {d.energy_method}"
        )
    say(
        f"    all {summary.energy_joules:10.1f} {summary.co2_grams:8.4f}   {summary.utilization_percent.avg:6.1f} / "
        f"{summary.utilization_percent.max:5.1f}   {summary.power_watts.avg:7.1f} / {summary.power_watts.max:5.1f}   "
        f"{summary.sample_count:7d}  {summary.energy_method}"
    )
    say(
        f"    CO2 = {summary.energy_joules:.1f} J / 3.6e6 x {summary.carbon_intensity_g_per_kwh:.0f} g/kWh x PUE {summary.pue:.1f}"
        f" = {summary.co2_grams:.4f} g; cost {summary.power_cost_usd:.6f} USD; OTLP exported {summary.otlp_exported_samples}"
        f", dropped {summary.otlp_dropped_samples}"
    )


def print_metrics(metrics_address: str) -> None:
    url = f"http://{metrics_address}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    lines = [line for line in body.splitlines() if line.split("{")[0].split(" ")[0] in SHOWN_METRICS]
    say(f"[HTTP GET {url}] {len(body.splitlines())} lines; a few (uuid/name labels left out here):")
    for line in lines:
        say(f"    {short_labels(line)}")


def print_otlp(receiver: OtlpReceiver, run_id: str, summary: pb.RunSummary) -> None:
    points = receiver.points(where=lambda p: p.resource.get("run.id") == run_id)
    per_metric = Counter(p.metric for p in points)
    say(f"[OTLP receiver {receiver.endpoint}] {len(points)} data points in {len(receiver.metrics_requests())} export requests:")
    for name, count in sorted(per_metric.items()):
        say(f"    {name:<26} {count:4d}  ({count // max(1, len(summary.devices))} per GPU)")
    resource = next((r for r in receiver.resource_attributes() if r.get("run.id") == run_id), {})
    shown = {k: resource.get(k) for k in ("service.name", "run.id", "gpu.simulated", "model", "provider")}
    say(f"    resource: {shown}")
    complete = per_metric.get("gen_ai.gpu.utilization", 0) == summary.sample_count * len(summary.devices)
    say(f"    every sample of the run arrived by the time StopSampling returned: {'yes' if complete else 'NO'}")
    if not complete:
        raise RuntimeError("the OTLP receiver is missing samples of the run")


def main() -> int:
    began = time.monotonic()
    env = dict(os.environ, OTEL_EXPORTER_OTLP_TIMEOUT=os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "2"), PYTHONUNBUFFERED="1")
    command = [
        *exporter_command(),
        "--backend",
        "simulated:2",
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-address",
        "127.0.0.1:0",
        "--otlp-export-interval-ms",
        "1000",
        "--log-level",
        "WARNING",
    ]
    say("smoltrace GPU-exporter demo: two simulated GPUs, one run over gRPC, /metrics, OTLP")
    with tempfile.TemporaryFile(mode="w+") as stderr, OtlpReceiver() as receiver:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True, env=env)
        code: int | None = None
        try:
            assert proc.stdout is not None
            ready = read_ready_line(proc.stdout, timeout=15)
            say(f"[exporter] `{' '.join(['smoltrace-gpu-exporter', *command[len(exporter_command()) :]])}`")
            say(
                f"    pid {proc.pid}, ready in {time.monotonic() - began:.1f} s: gRPC {ready['grpc']}, /metrics {ready['metrics']}, "
                f"backend {ready['backend']}, {ready['gpus']} GPUs"
            )
            say(f"[OTLP receiver] tests/fakes/otlp_receiver.py listening on {receiver.endpoint} (the run's collector)")
            say()
            with grpc.insecure_channel(ready["grpc"]) as channel:
                stub = OwnerStub(channel)
                run_id, summary = drive_run(stub, receiver)
                say()
                print_summary(summary)
            say()
            print_metrics(ready["metrics"])
            say()
            print_otlp(receiver, run_id, summary)
            say()
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=5)
            say(f"[exporter] SIGTERM -> exited {code} in {time.monotonic() - stopping:.2f} s; demo took {time.monotonic() - began:.1f} s")
        except Exception as err:  # noqa: BLE001 - report, clean up, exit non-zero
            stderr.seek(0)
            say(f"demo failed: {type(err).__name__}: {err}")
            tail = stderr.read()[-2000:]
            if tail:
                say(f"exporter stderr:\n{tail}")
            return 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
