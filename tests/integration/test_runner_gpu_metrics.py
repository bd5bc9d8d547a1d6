"""The GPU-metrics rule end to end, for every provider, with no flag, --disable-gpu-metrics and
--enable-gpu-metrics (docs/DESIGN.md):

- local providers (transformers, ollama): on by default; the runner starts its own exporter
  (here simulated with SMOLTRACE_GPU_EXPORTER_BACKEND=simulated:1) or uses --gpu-exporter;
- API providers (litellm, inference): off, and the exporter is never contacted, unless
  --enable-gpu-metrics forces it on;
- --disable-gpu-metrics: off for everyone, with the exact [INFO] line;
- an unreachable exporter costs only the GPU metrics: a warning, and metadata says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.fakes.chat_servers import FakeOllamaServer, FakeOpenAIServer
from tests.fakes.exporter_client import OwnerStub
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    ConnectionRecorder,
    closed_port,
    connection_recorder_fixture,
    hub_online,
    run_main,
    runner_env_fixture,
    standard_script,
    subprocess_env,
)
from tests.fakes.tiny_model import tiny_model_dir_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("runner_env")

INFO_LINE = "[INFO] GPU metrics disabled by user (--disable-gpu-metrics flag)"
PROVIDERS = ("litellm", "inference", "ollama", "transformers")
LOCAL = ("ollama", "transformers")


# -- a simulated exporter of our own (the sidecar case) ---------------------------------------
class SimulatedExporter:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smoltrace_gpu_exporter.cli",
                "--grpc-address",
                "127.0.0.1:0",
                "--metrics-address",
                "127.0.0.1:0",
                "--backend",
                "simulated:2",
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            env=subprocess_env(),
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline() if self.proc.stdout else ""), daemon=True)
        reader.start()
        reader.join(20)
        ready = json.loads(lines[0]) if lines and lines[0] else {}
        if ready.get("event") != "ready":
            self.close()
            raise AssertionError(f"the simulated exporter did not start: {lines}")
        self.address = ready["grpc"]
        self.channel = grpc.insecure_channel(self.address)
        self.stub = OwnerStub(self.channel)

    def close(self) -> None:
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SimulatedExporter]:
    exporter = SimulatedExporter()
    yield exporter
    exporter.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeOllamaServer]]:
    openai = FakeOpenAIServer(standard_script()).start()
    ollama = FakeOllamaServer(standard_script()).start()
    yield openai, ollama  # type: ignore[misc]
    openai.stop()
    ollama.stop()


@pytest.fixture
def provider_args(servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """provider_args(provider) -> the flags that run one tool task on that provider's fake."""
    openai, ollama = servers

    def args(provider: str) -> list[str]:
        common = ["--limit", "1", "--agent-type", "tool", "--provider", provider]
        if provider == "litellm":
            return [*common, "--model", "openai/fake", "--api-base", openai.api_base]
        if provider == "inference":
            hub_online(monkeypatch)
            token = tmp_path / "token"
            token.write_text("hf_fake", "utf-8")
            return [*common, "--model", "org/fake", "--api-base", openai.api_base, "--hf-token-file", str(token), "--output-format", "json"]
        if provider == "ollama":
            return [*common, "--model", "tiny", "--api-base", ollama.url]
        model_dir = request.getfixturevalue("tiny_model_dir")
        return [*common, "--model", str(model_dir), "--max-steps", "1", "--model-args", "max_new_tokens=4"]

    return args


def info_lines(stdout: str) -> list[str]:
    """The rule's console lines (a multi-GPU sidecar's all_visible warning is not one of them)."""
    return [line for line in stdout.splitlines() if "GPU metrics" in line and "measured on all" not in line]


# -- no flag ----------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["litellm", "inference"])
def test_api_provider_never_contacts_the_exporter(
    provider: str, provider_args, connection_recorder: ConnectionRecorder, tmp_path: Path
) -> None:
    run = run_main([*provider_args(provider), "--gpu-exporter", connection_recorder.address], tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert run.results[0]["success"], run.results
    assert connection_recorder.connections == 0
    assert info_lines(run.stdout) == []
    assert "[WARN]" not in run.stdout
    gpu = run.metadata["gpu_metrics"]
    assert gpu["enabled"] is False
    assert gpu["reason"] == f"API provider {provider} does not use the local GPU"
    assert gpu["exporter"] is None and gpu["summary"] is None and gpu["warning"] is None
    assert run.leaderboard["energy_j"] is None and run.leaderboard["gpu_power_avg_w"] is None  # nothing measured


def test_api_provider_ignores_the_exporter_environment_variable(
    provider_args, connection_recorder: ConnectionRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER", connection_recorder.address)
    run = run_main(provider_args("litellm"), tmp_path / "out")
    assert run.rc == 0
    assert connection_recorder.connections == 0
    assert run.metadata["gpu_metrics"]["enabled"] is False


@pytest.mark.parametrize("provider", LOCAL)
def test_local_provider_starts_its_own_exporter(provider: str, provider_args, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_BACKEND", "simulated:1")  # read by the exporter the runner spawns
    run = run_main(provider_args(provider), tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert info_lines(run.stdout) == [], run.stdout
    gpu = run.metadata["gpu_metrics"]
    assert gpu["enabled"] is True
    assert gpu["reason"] == f"local provider {provider}"
    assert gpu["embedded_exporter"] is True
    assert gpu["exporter"].startswith("127.0.0.1:")
    assert gpu["gpu_available"] is True
    assert len(gpu["devices"]) == 1
    assert gpu["warning"] is None
    assert gpu["summary"]["run_id"] == run.metadata["run_id"]
    assert float(gpu["summary"]["energy_joules"]) > 0
    assert run.leaderboard["energy_j"] > 0
    assert run.leaderboard["co2_emissions_g"] > 0


def real_gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU
        return False
    pynvml.nvmlShutdown()
    return True


def test_local_provider_without_a_gpu_says_so(provider_args, tmp_path: Path) -> None:
    """The real NVML backend with no driver: the soft 'no GPU' path, and the run completes."""
    if real_gpu_present():
        pytest.skip("this machine has an NVIDIA driver: the no-GPU path cannot be seen")
    run = run_main(provider_args("ollama"), tmp_path / "out")
    assert run.rc == 0, run.stderr
    gpu = run.metadata["gpu_metrics"]
    assert gpu["enabled"] is True and gpu["embedded_exporter"] is True
    assert gpu["gpu_available"] is False
    assert gpu["devices"] == []
    assert gpu["warning"]
    assert any(line.startswith("[WARN] GPU metrics:") for line in run.stdout.splitlines())
    assert run.results[0]["success"]


@pytest.mark.parametrize("provider", LOCAL)
def test_local_provider_uses_the_sidecar(provider: str, provider_args, sidecar: SimulatedExporter, tmp_path: Path) -> None:
    run = run_main([*provider_args(provider), "--gpu-exporter", sidecar.address, "--run-id", f"sidecar-{provider}"], tmp_path / "out")
    assert run.rc == 0, run.stderr
    gpu = run.metadata["gpu_metrics"]
    assert gpu["enabled"] is True and gpu["embedded_exporter"] is False
    assert gpu["exporter"] == sidecar.address
    assert gpu["gpu_available"] is True and len(gpu["devices"]) == 2
    assert float(gpu["summary"]["energy_joules"]) > 0
    assert gpu["summary"]["run_id"] == f"sidecar-{provider}"  # the sidecar's own summary of this run
    assert gpu["sampling_run_id"].startswith(f"sidecar-{provider}/seg-")  # this process's segment of the run


# -- --disable-gpu-metrics ----------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_disable_flag(provider: str, provider_args, connection_recorder: ConnectionRecorder, tmp_path: Path) -> None:
    run = run_main([*provider_args(provider), "--disable-gpu-metrics", "--gpu-exporter", connection_recorder.address], tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert run.stdout.splitlines()[0] == INFO_LINE
    assert info_lines(run.stdout) == [INFO_LINE]
    assert connection_recorder.connections == 0
    gpu = run.metadata["gpu_metrics"]
    assert gpu["enabled"] is False
    assert gpu["reason"] == "disabled by --disable-gpu-metrics"
    assert gpu["summary"] is None and gpu["exporter"] is None
    assert run.metadata["config"]["disable_gpu_metrics"] is True


# -- --enable-gpu-metrics -----------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_enable_flag(provider: str, provider_args, sidecar: SimulatedExporter, tmp_path: Path) -> None:
    run_id = f"enable-{provider}"
    run = run_main(
        [*provider_args(provider), "--enable-gpu-metrics", "--gpu-exporter", sidecar.address, "--run-id", run_id], tmp_path / "out"
    )
    assert run.rc == 0, run.stderr
    assert info_lines(run.stdout) == []
    gpu = run.metadata["gpu_metrics"]
    assert gpu["enabled"] is True
    if provider in LOCAL:
        assert gpu["reason"] == f"local provider {provider}"  # a no-op for local providers
    else:
        assert gpu["reason"] == f"forced on by --enable-gpu-metrics for API provider {provider}"
    assert gpu["exporter"] == sidecar.address
    assert float(gpu["summary"]["energy_joules"]) > 0
    assert gpu["summary"]["run_id"] == run_id
    assert gpu["sampling_run_id"].startswith(f"{run_id}/seg-")
    assert run.leaderboard["energy_j"] > 0


def test_disable_wins_over_enable(provider_args, connection_recorder: ConnectionRecorder, tmp_path: Path) -> None:
    run = run_main(
        [*provider_args("litellm"), "--enable-gpu-metrics", "--disable-gpu-metrics", "--gpu-exporter", connection_recorder.address],
        tmp_path / "out",
    )
    assert run.rc == 0
    assert info_lines(run.stdout) == [INFO_LINE]
    assert connection_recorder.connections == 0
    assert run.metadata["gpu_metrics"]["enabled"] is False


# -- failures -----------------------------------------------------------------------------------
def test_unreachable_exporter_is_a_warning_and_the_run_completes(provider_args, tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    run = run_main([*provider_args("ollama"), "--gpu-exporter", address], tmp_path / "out")
    assert run.rc == 0, run.stderr
    warnings = [line for line in run.stdout.splitlines() if line.startswith("[WARN] GPU metrics:")]
    assert len(warnings) == 1, run.stdout
    assert run.results[0]["success"]
    gpu = run.metadata["gpu_metrics"]
    assert gpu["enabled"] is True
    assert gpu["exporter"] == address
    assert gpu["summary"] is None
    assert address in gpu["warning"] and "UNAVAILABLE" in gpu["warning"]
    assert run.metadata["status"] == "completed"
    assert run.leaderboard["energy_j"] is None  # the exporter never answered: nothing measured


def test_unreachable_exporter_from_the_environment(provider_args, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER", address)
    run = run_main(provider_args("ollama"), tmp_path / "out")
    assert run.rc == 0
    assert run.metadata["gpu_metrics"]["exporter"] == address
    assert address in run.metadata["gpu_metrics"]["warning"]
