"""The real `smoltrace-gpu-exporter` CLI as a child process: ready line, a run over gRPC with OTLP
to a real receiver, /metrics, SIGTERM with a live run, bad flags and environment variables."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

import grpc
import pynvml
import pytest
from grpc_health.v1 import health_pb2

from smoltrace_gpu_exporter import __version__
from smoltrace_proto import pb
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.integration.conftest import (
    RPC_TIMEOUT_S,
    ExporterProcess,
    connect,
    run_cli,
    scrape,
    series,
    start_request,
    subprocess_env,
    value_of,
)

BASE_ARGS = ["--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0", "--log-level", "WARNING"]
ADDRESS = re.compile(r"^127\.0\.0\.1:\d{2,5}$")

pytestmark = pytest.mark.slow


def of_run(run_id: str) -> Callable:
    return lambda p: p.resource.get("run.id") == run_id


def test_cli_serves_a_run_then_shuts_down_cleanly_on_sigterm(
    spawn_exporter: Callable[..., ExporterProcess], otlp_receiver: OtlpReceiver
) -> None:
    started = time.monotonic()
    proc = spawn_exporter([*BASE_ARGS, "--backend", "simulated:2", "--otlp-export-interval-ms", "500"])
    ready = proc.wait_ready(timeout=20)
    assert time.monotonic() - started < 15
    assert ready["version"] == __version__
    assert ADDRESS.match(ready["grpc"]) and ADDRESS.match(ready["metrics"]) and ready["grpc"] != ready["metrics"]
    assert (ready["backend"], ready["simulated"], ready["nvml_up"], ready["gpus"], ready["message"]) == ("simulated", True, True, 2, "")

    client = connect(ready["grpc"])
    try:
        assert client.check() == health_pb2.HealthCheckResponse.SERVING
        # run 1: start, heartbeat, stop; the receiver holds all of it when StopSampling returns
        first = client.stub.StartSampling(
            start_request("cli-run-1", interval_ms=100, otlp_endpoint=otlp_receiver.endpoint, resource_attributes={"model": "m1"}),
            timeout=RPC_TIMEOUT_S,
        )
        assert first.gpu_available and first.simulated and len(first.devices) == 2
        time.sleep(0.6)
        client.stub.Heartbeat(pb.HeartbeatRequest(run_id="cli-run-1"), timeout=RPC_TIMEOUT_S)
        time.sleep(0.4)
        summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="cli-run-1"), timeout=RPC_TIMEOUT_S)
        assert summary.energy_joules > 0 and summary.energy_method == "counter" and summary.simulated
        assert summary.co2_grams == pytest.approx(summary.energy_joules / 3.6e6 * 475.0, rel=1e-9)
        utilization = otlp_receiver.points("gen_ai.gpu.utilization", of_run("cli-run-1"))
        for gpu in ("0", "1"):
            assert len([p for p in utilization if p.attributes["gpu_id"] == gpu]) == summary.sample_count
        resource = otlp_receiver.resource_attributes()[-1]
        assert resource["run.id"] == "cli-run-1" and resource["gpu.simulated"] is True and resource["model"] == "m1"

        metrics = scrape(ready["metrics"])
        assert value_of(metrics, "smoltrace_gpu_exporter_gpus") == 2
        assert value_of(metrics, "smoltrace_gpu_exporter_runs_started_total") == 1
        assert value_of(metrics, "smoltrace_gpu_exporter_otlp_exported_samples_total") == summary.sample_count
        assert len(series(metrics, "smoltrace_gpu_power_watts")) == 2

        # run 2 is live (and watched) when SIGTERM comes
        client.stub.StartSampling(start_request("cli-run-2", interval_ms=100, otlp_endpoint=otlp_receiver.endpoint), timeout=RPC_TIMEOUT_S)
        watched: list[pb.Sample] = []
        watch_errors: list[grpc.RpcError] = []
        first_sample = threading.Event()

        def watch() -> None:
            try:
                for sample in client.stub.WatchRun(pb.WatchRunRequest(run_id="cli-run-2"), timeout=20):
                    watched.append(sample)
                    first_sample.set()
            except grpc.RpcError as err:
                watch_errors.append(err)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert first_sample.wait(5)
        time.sleep(0.5)
        live = client.stub.GetRun(pb.GetRunRequest(run_id="cli-run-2"), timeout=RPC_TIMEOUT_S)
        assert live.phase == pb.RunState.ACTIVE

        code, took = proc.terminate(timeout=5.0)
        assert code == 0, proc.stderr_text()
        assert took < 5.0
        watcher.join(timeout=5)
        assert not watcher.is_alive()
    finally:
        client.close()
    assert not watch_errors, watch_errors  # the stream ended cleanly at shutdown
    assert len(watched) >= 5

    # the live run was stopped at shutdown and its final samples were flushed before exit
    run2 = otlp_receiver.points("gen_ai.gpu.energy", of_run("cli-run-2"))
    last = watched[-1]  # the shutdown boundary read
    assert last.timestamp_unix_nano > watched[-2].timestamp_unix_nano
    for reading in last.devices:
        final = [p for p in run2 if p.attributes["gpu_id"] == str(reading.index) and p.time_unix_nano == last.timestamp_unix_nano]
        assert len(final) == 1, f"GPU {reading.index}: the final sample of the live run was not delivered"
        assert final[0].value == pytest.approx(reading.energy_joules, rel=1e-12)
        assert len([p for p in run2 if p.attributes["gpu_id"] == str(reading.index)]) >= live.sample_count + 1
    lines = proc.stdout_after_exit()
    assert len(lines) == 1 and json.loads(lines[0]) == ready  # stdout holds the ready line and nothing else
    assert "Traceback" not in proc.stderr_text()


def test_cli_idle_exits_quickly_on_sigterm_and_sigint(spawn_exporter: Callable[..., ExporterProcess]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = spawn_exporter([*BASE_ARGS, "--backend", "simulated:1"])
        proc.wait_ready()
        proc.proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0, proc.stderr_text()
        assert "Traceback" not in proc.stderr_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--backend", "bogus"], "--backend must be 'nvml' or 'simulated[:N]'", id="backend-bogus"),
        pytest.param(["--backend", "simulated:0"], "1 <= N <= 64", id="backend-zero-gpus"),
        pytest.param(["--backend", "simulated:2,mig=2:3"], "beyond GPUs 0..1", id="backend-mig-no-such-gpu"),
        pytest.param(["--backend", "simulated:1,mig=0:8"], "needs 1..7 MIG instances", id="backend-mig-too-many"),
        pytest.param(["--pue", "0.5"], "--pue must be 1.0..10", id="pue-0.5"),
        pytest.param(["--grpc-address", "nonsense"], "--grpc-address must be HOST:PORT", id="grpc-address-nonsense"),
        pytest.param(["--metrics-address", "127.0.0.1:99999"], "port must be 0..65535", id="metrics-port-too-big"),
        pytest.param(["--carbon-intensity", "-5"], "--carbon-intensity", id="negative-carbon"),
        pytest.param(["--otlp-export-interval-ms", "5"], "--otlp-export-interval-ms", id="export-interval"),
        pytest.param(["--log-level", "LOUD"], "--log-level", id="log-level"),
        pytest.param(["--auth-token-file", "/nonexistent/token"], "cannot read --auth-token-file", id="missing-token-file"),
        pytest.param(["--tls-cert", "/nonexistent/cert.pem"], "--tls-cert and --tls-key go together", id="half-tls"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run_cli(["--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0", *args])
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("smoltrace-gpu-exporter: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_badly_typed_flag_is_an_argparse_error() -> None:
    result = run_cli(["--idle-interval-ms", "abc"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "smoltrace-gpu-exporter: error: argument --idle-interval-ms: invalid int value: 'abc'"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--grpc-address", "--metrics-address"])
def test_address_in_use_exits_2_naming_the_flag(flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        args = {"--grpc-address": "127.0.0.1:0", "--metrics-address": "127.0.0.1:0"}
        args[flag] = f"127.0.0.1:{port}"
        result = run_cli([*(x for item in args.items() for x in item), "--backend", "simulated:1", "--log-level", "WARNING"])
    assert result.returncode == 2, result
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]  # gRPC's C core may log its own line before ours
    assert last.startswith("smoltrace-gpu-exporter: error: cannot listen on " + flag), result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_module_entry_point() -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0 and result.stdout.strip() == f"smoltrace-gpu-exporter {__version__}"
    import subprocess

    as_module = subprocess.run(
        [sys.executable, "-m", "smoltrace_gpu_exporter.cli", "--backend", "nope"],
        capture_output=True,
        text=True,
        timeout=20,
        env=subprocess_env(),
        check=False,
    )
    assert as_module.returncode == 2 and "--backend must be" in as_module.stderr


def test_environment_variables_configure_the_exporter(spawn_exporter: Callable[..., ExporterProcess], otlp_receiver: OtlpReceiver) -> None:
    env = subprocess_env(
        SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:1",
        SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS="127.0.0.1:0",
        SMOLTRACE_GPU_EXPORTER_METRICS_ADDRESS="127.0.0.1:0",
        SMOLTRACE_GPU_EXPORTER_LOG_LEVEL="WARNING",
        SMOLTRACE_GPU_EXPORTER_CARBON_INTENSITY="200",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url,  # the standard variable gives the default endpoint
    )
    proc = spawn_exporter([], env=env)
    ready = proc.wait_ready()
    assert (ready["backend"], ready["gpus"]) == ("simulated", 1)
    client = connect(ready["grpc"])
    try:
        started = client.stub.StartSampling(start_request("env-run"), timeout=RPC_TIMEOUT_S)
        assert started.carbon_intensity_g_per_kwh == 200.0 and len(started.devices) == 1
        time.sleep(0.3)
        summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="env-run"), timeout=RPC_TIMEOUT_S)
        assert summary.co2_grams == pytest.approx(summary.energy_joules / 3.6e6 * 200.0, rel=1e-9)
    finally:
        client.close()
    assert len(otlp_receiver.points("gen_ai.gpu.power", of_run("env-run"))) == summary.sample_count
    assert proc.terminate()[0] == 0

    # flags win over the environment
    proc = spawn_exporter([*BASE_ARGS, "--backend", "simulated:2"], env={**env, "SMOLTRACE_GPU_EXPORTER_BACKEND": "bogus"})
    assert proc.wait_ready()["gpus"] == 2
    assert proc.terminate()[0] == 0

    # a malformed environment value is a one-line error naming the variable
    result = run_cli([], env={**env, "SMOLTRACE_GPU_EXPORTER_PUE": "abc"})
    assert result.returncode == 2
    assert result.stderr.strip() == "smoltrace-gpu-exporter: error: SMOLTRACE_GPU_EXPORTER_PUE='abc' is not a valid float"


def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_nvml_works(), reason="NVML answers on this machine (a GPU driver is present); soft mode needs none")
def test_cli_soft_mode_without_a_driver(spawn_exporter: Callable[..., ExporterProcess]) -> None:
    proc = spawn_exporter([*BASE_ARGS, "--backend", "nvml"])
    ready = proc.wait_ready()
    assert (ready["backend"], ready["simulated"], ready["nvml_up"], ready["gpus"]) == ("nvml", False, False, 0)
    assert ready["message"]  # why there is no GPU
    metrics = scrape(ready["metrics"])
    assert value_of(metrics, "smoltrace_gpu_exporter_nvml_up") == 0
    assert value_of(metrics, "smoltrace_gpu_exporter_up") == 1
    client = connect(ready["grpc"])
    try:
        started = client.stub.StartSampling(start_request("soft-cli"), timeout=RPC_TIMEOUT_S)
        assert not started.gpu_available and started.message
        assert not client.stub.StopSampling(pb.StopSamplingRequest(run_id="soft-cli"), timeout=RPC_TIMEOUT_S).gpu_available
    finally:
        client.close()
    assert proc.terminate()[0] == 0
