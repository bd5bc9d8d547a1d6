"""Issue 10, runner side, against real exporters (simulated backends) and real runner processes:

- which GPUs a run owns on a 4-GPU host (NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES, --gpus),
  sent in StartSampling.gpu_uuids and recorded as metadata `gpu_scope`; unknown GPUs are exit 2
  before any task runs;
- the embedded exporter: a terminal Ctrl-C (SIGINT to the process group) keeps the run's GPU
  summary; a SIGKILLed runner leaves no exporter behind; it gets none of the runner's secrets and
  server-side auth/TLS variables do not lock the runner out of it;
- a token-protected and a TLS sidecar, reached with --gpu-exporter-token-file / --gpu-exporter-tls-ca,
  the token never written anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from smoltrace.gpu import GpuDecision, GpuSession
from smoltrace.gpu_scope import SOURCE_REMOTE, ScopeInputs
from tests.fakes.chat_servers import FakeOpenAIServer, Script, call, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    ConnectionRecorder,
    assert_no_traceback,
    cli_command,
    connection_recorder_fixture,
    read_json,
    run_main,
    runner_env_fixture,
    standard_script,
    subprocess_env,
    task,
    write_jsonl,
)
from tests.fakes.telemetry_procs import ReadyLineProcess, child_env

pytestmark = pytest.mark.usefixtures("runner_env")

UUIDS = [f"GPU-5170a7ed-0000-4000-8000-{i:012d}" for i in range(4)]
TOKEN = "sidecar-token-7f3a9c1e5b"


def exporter(gpus: int, *extra: str, env: dict[str, str] | None = None) -> ReadyLineProcess:
    command = [sys.executable, "-m", "smoltrace_gpu_exporter.cli", "--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0"]
    return ReadyLineProcess([*command, "--backend", f"simulated:{gpus}", "--log-level", "WARNING", *extra], env=env or child_env())


@pytest.fixture(scope="module")
def four_gpus() -> Iterator[str]:
    proc = exporter(4)
    yield str(proc.ready["grpc"])
    proc.close()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    fake = FakeOpenAIServer(standard_script()).start()
    yield fake  # type: ignore[misc]
    fake.stop()


def api_run(server: FakeOpenAIServer, *extra: str) -> list[str]:
    """One tool task on the fake OpenAI server with GPU metrics forced on."""
    return ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "1", "--agent-type", "tool", "--enable-gpu-metrics", *extra]


def measured_uuids(metadata: dict) -> list[str]:
    return [d["uuid"] for d in metadata["gpu_metrics"]["summary"]["devices"]]


# -- which GPUs -----------------------------------------------------------------------------------
def test_nvidia_visible_devices_uuid_is_the_only_gpu_charged(
    four_gpus: str, server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", UUIDS[2])
    run = run_main(api_run(server, "--gpu-exporter", four_gpus), tmp_path / "out")
    assert run.rc == 0, run.stderr
    meta = run.metadata
    assert measured_uuids(meta) == [UUIDS[2]]  # not all 4 (4x the energy)
    assert meta["gpu_scope"] == {
        "source": "nvidia_visible_devices",
        "uuids": [UUIDS[2]],
        "note": f"NVIDIA_VISIBLE_DEVICES={UUIDS[2]}",
        "measured": True,
    }
    assert meta["gpu_metrics"]["scope"] == meta["gpu_scope"]
    assert [d["uuid"] for d in meta["gpu_metrics"]["devices"]] == [UUIDS[2]]
    assert "measured on all" not in run.stdout


def test_cuda_visible_devices_uuids_and_pci_indices(
    four_gpus: str, server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[1]},{UUIDS[3]}")
    run = run_main(api_run(server, "--gpu-exporter", four_gpus), tmp_path / "a")
    assert run.rc == 0, run.stderr
    assert sorted(measured_uuids(run.metadata)) == [UUIDS[1], UUIDS[3]]
    assert run.metadata["gpu_scope"]["source"] == "cuda_visible_devices"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    run = run_main(api_run(server, "--gpu-exporter", four_gpus), tmp_path / "b")
    assert run.rc == 0, run.stderr
    assert measured_uuids(run.metadata) == [UUIDS[0]]


def test_gpus_flag_wins_and_nothing_set_is_all_visible_with_a_warning(
    four_gpus: str, server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", UUIDS[0])
    run = run_main(api_run(server, "--gpu-exporter", four_gpus, "--gpus", "3"), tmp_path / "a")
    assert run.rc == 0, run.stderr
    assert measured_uuids(run.metadata) == [UUIDS[3]]
    assert run.metadata["gpu_scope"]["source"] == "gpus_flag"
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES")
    run = run_main(api_run(server, "--gpu-exporter", four_gpus), tmp_path / "b")
    assert run.rc == 0, run.stderr
    assert sorted(measured_uuids(run.metadata)) == UUIDS
    assert run.metadata["gpu_scope"]["source"] == "all_visible"
    assert "[WARN] GPU metrics: the run is measured on all 4 GPUs" in run.stdout


@pytest.mark.parametrize(("flag", "env"), [("GPU-deadbeef-0000-0000", None), (None, "7")])
def test_unknown_gpus_exit_2_before_any_task(
    flag: str | None, env: str | None, four_gpus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = standard_script()
    with FakeOpenAIServer(script) as fake:
        if env:
            monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", env)
        extra = ["--gpus", flag] if flag else []
        run = run_main(api_run(fake, "--gpu-exporter", four_gpus, *extra), tmp_path / "out")  # type: ignore[arg-type]
        requests = script.requests
    assert run.rc == 2
    (line,) = run.stderr.strip().splitlines()
    assert (flag or env) in line and all(u in line for u in UUIDS), line
    assert_no_traceback(run.stderr)
    assert run.run_dirs == []  # nothing written
    assert requests <= 1  # the preflight at most; no task ran


MIG_UUIDS = [f"MIG-5170a7ed-0000-4000-8000-{slot:012d}" for slot in range(2)]


@pytest.fixture(scope="module")
def mig_host() -> Iterator[str]:
    """A 2-GPU host whose GPU 0 is split into two MIG instances."""
    proc = ReadyLineProcess(
        [
            sys.executable,
            "-m",
            "smoltrace_gpu_exporter.cli",
            "--grpc-address",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
            "--backend",
            "simulated:2,mig=0:2",
            "--log-level",
            "WARNING",
        ],
        env=child_env(),
    )
    yield str(proc.ready["grpc"])
    proc.close()


def test_a_run_scoped_to_a_mig_instance_by_index_form_or_uuid(
    mig_host: str, server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "0:1")  # MIG device 1 of GPU 0, as the container toolkit reads it
    run = run_main(api_run(server, "--gpu-exporter", mig_host), tmp_path / "a")
    assert run.rc == 0, run.stderr
    meta = run.metadata
    assert meta["gpu_scope"]["uuids"] == [MIG_UUIDS[1]] and meta["gpu_scope"]["source"] == "nvidia_visible_devices"
    (device,) = meta["gpu_metrics"]["summary"]["devices"]
    assert (device["uuid"], device["is_mig"], device["parent_uuid"], device["energy_method"]) == (
        MIG_UUIDS[1],
        True,
        UUIDS[0],
        "mig_memory_share",
    )
    assert meta["gpu_metrics"]["devices"] == [
        {
            "index": 0,
            "uuid": MIG_UUIDS[1],
            "name": "Simulated GPU 80GB MIG 3g.40gb",
            "memory_total_bytes": device["memory_total_bytes"],
            "is_mig": True,
            "parent_uuid": UUIDS[0],
            "mig_index": 1,
        }
    ]
    # half the parent's memory: half its power over the run, never the whole GPU's
    assert 0 < device["energy_joules"] < 0.55 * device["power_watts"]["max"] * device["duration_seconds"]
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES")
    run = run_main(api_run(server, "--gpu-exporter", mig_host, "--gpus", MIG_UUIDS[0]), tmp_path / "b")
    assert run.rc == 0, run.stderr
    assert measured_uuids(run.metadata) == [MIG_UUIDS[0]]


@pytest.mark.parametrize("value", ["0:5", "MIG-5170a7ed-dead-4000-8000-000000000000"])
def test_an_unknown_mig_device_is_exit_2_listing_the_instances(
    value: str, mig_host: str, server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", value)
    run = run_main(api_run(server, "--gpu-exporter", mig_host), tmp_path / "out")
    assert run.rc == 2
    (line,) = run.stderr.strip().splitlines()
    assert value in line and f"0:1 {MIG_UUIDS[1]}" in line and UUIDS[1] in line, line
    assert_no_traceback(run.stderr)
    assert run.run_dirs == []


def test_nvidia_visible_devices_none_measures_nothing(
    server: FakeOpenAIServer, connection_recorder: ConnectionRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "void")
    run = run_main(api_run(server, "--gpu-exporter", connection_recorder.address), tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert connection_recorder.connections == 0
    assert run.metadata["gpu_scope"]["measured"] is False
    assert run.metadata["gpu_metrics"]["enabled"] is True  # the rule's answer (and console line) unchanged


def test_a_remote_ollama_server_is_not_measured_locally(connection_recorder: ConnectionRecorder) -> None:
    session = GpuSession(GpuDecision(True, "local provider ollama"), "remote-1", scope_inputs=ScopeInputs.read(None, {}))
    session.open(remote_server="gpu-box.internal")
    session.start(otlp_endpoint="")
    report = session.stop()
    assert report.scope is not None and report.scope["source"] == SOURCE_REMOTE and report.scope["measured"] is False
    assert "gpu-box.internal" in (report.warning or "") and "--gpu-exporter" in (report.warning or "")
    assert report.embedded is False and report.summary is None
    # with an exporter named beside that server, it is used
    named = GpuSession(
        GpuDecision(True, "local provider ollama"),
        "remote-2",
        address=connection_recorder.address,
        scope_inputs=ScopeInputs.read(None, {}),
        rpc_timeout_s=1.0,
    )
    named.open(remote_server="gpu-box.internal")
    named.stop()
    assert connection_recorder.connections >= 1


# -- token and TLS --------------------------------------------------------------------------------
def all_text(run_dir: Path) -> str:
    return "\n".join(p.read_text("utf-8", errors="replace") for p in run_dir.rglob("*") if p.is_file())


def test_a_token_protected_sidecar(server: FakeOpenAIServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", "utf-8")
    proc = exporter(2, "--auth-token-file", str(token_file))
    try:
        address = str(proc.ready["grpc"])
        run = run_main(
            api_run(server, "--gpu-exporter", address, "--gpus", "1", "--gpu-exporter-token-file", str(token_file)), tmp_path / "ok"
        )
        assert run.rc == 0, run.stderr
        assert measured_uuids(run.metadata) == [UUIDS[1]]
        assert float(run.metadata["gpu_metrics"]["summary"]["energy_joules"]) > 0
        for text in (run.stdout, run.stderr, all_text(run.run_dir)):
            assert TOKEN not in text
        refused = run_main(api_run(server, "--gpu-exporter", address), tmp_path / "refused")
        assert refused.rc == 0
        assert "UNAUTHENTICATED" in (refused.metadata["gpu_metrics"]["warning"] or "")
    finally:
        proc.close()


def test_a_tls_sidecar_verified_against_its_ca(server: FakeOpenAIServer, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr[:200]}")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN, "utf-8")
    proc = exporter(1, "--tls-cert", str(cert), "--tls-key", str(key), "--auth-token-file", str(token_file))
    try:
        address = str(proc.ready["grpc"])
        args = ["--gpu-exporter", address, "--gpu-exporter-token-file", str(token_file)]
        run = run_main(api_run(server, *args, "--gpu-exporter-tls-ca", str(cert)), tmp_path / "tls")
        assert run.rc == 0, run.stderr
        assert run.metadata["gpu_metrics"]["tls"] is True
        assert float(run.metadata["gpu_metrics"]["summary"]["energy_joules"]) > 0
        assert TOKEN not in all_text(run.run_dir)
        plain = run_main(api_run(server, *args), tmp_path / "plain")  # no CA: plaintext to a TLS port fails
        assert plain.rc == 0 and plain.metadata["gpu_metrics"]["summary"] is None
    finally:
        proc.close()


def test_server_side_variables_do_not_lock_the_runner_out_of_its_own_child(
    server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell set up for a remote sidecar (auth token file, TLS, 0.0.0.0) still gets the embedded child working."""
    token_file = tmp_path / "sidecar-token"
    token_file.write_text(TOKEN, "utf-8")
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_BACKEND", "simulated:1")
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_CARBON_INTENSITY", "100")
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_AUTH_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS", "0.0.0.0:50051")
    run = run_main(api_run(server), tmp_path / "out")
    assert run.rc == 0, run.stderr
    gpu = run.metadata["gpu_metrics"]
    assert gpu["embedded_exporter"] is True and gpu["exporter"].startswith("127.0.0.1:")
    assert gpu["summary"] is not None and float(gpu["summary"]["energy_joules"]) > 0
    assert float(gpu["summary"]["carbon_intensity_g_per_kwh"]) == 100.0  # its documented settings still apply


# -- lifecycle of the embedded exporter (real processes) ------------------------------------------
def slow_run(tmp_path: Path) -> tuple[list[str], FakeOpenAIServer]:
    rows = [task(f"w{i:02d}", f"Task {i:02d}: what's the weather in Paris?", expected_tool="get_weather") for i in range(12)]
    dataset = write_jsonl(tmp_path / "tasks.jsonl", rows)
    script = Script(latency_s=0.25).add("Task", call("get_weather", location="Paris, France"), final("Fine in Paris"))
    fake = FakeOpenAIServer(script).start()
    args = [
        "--model", "openai/fake", "--api-base", fake.api_base, "--dataset-name", str(dataset), "--agent-type", "tool",  # type: ignore[attr-defined]
        "--enable-gpu-metrics", "--output-dir", str(tmp_path / "out"), "--output-format", "json", "--quiet",
    ]  # fmt: skip
    return args, fake  # type: ignore[return-value]


def exporter_child(runner: psutil.Process, timeout: float = 60.0) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in runner.children(recursive=True):
            try:
                if any("gpu_exporter" in part or "gpu_child" in part for part in child.cmdline()):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.05)
    raise AssertionError("the runner started no embedded exporter")


def wait_for_checkpoint(out: Path, lines: int, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for path in out.glob("*/checkpoint.jsonl"):
            if len(path.read_text("utf-8").splitlines()) >= lines:
                return
        time.sleep(0.02)
    raise AssertionError("the run did not get going")


def gone(process: psutil.Process, timeout: float) -> bool:
    try:
        process.wait(timeout)
        return True
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_ctrl_c_to_the_process_group_keeps_the_gpu_summary(tmp_path: Path) -> None:
    args, fake = slow_run(tmp_path)
    env = subprocess_env(SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:1", HF_TOKEN="hf_childMustNotSee0123")
    proc = subprocess.Popen(
        [*cli_command(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True,  # its own process group, as a shell job: the terminal's Ctrl-C goes to all of it
    )  # fmt: skip
    try:
        child = exporter_child(psutil.Process(proc.pid))
        child_environ = child.environ()
        wait_for_checkpoint(tmp_path / "out", 2, proc)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
        fake.stop()
    assert proc.returncode == 130, stdout + stderr
    assert "OPENAI_API_KEY" not in child_environ and "HF_TOKEN" not in child_environ
    (run_dir,) = list((tmp_path / "out").iterdir())
    gpu = read_json(run_dir / "metadata.json")["gpu_metrics"]
    assert gpu["summary"] is not None, gpu  # StopSampling reached a live exporter
    assert float(gpu["summary"]["energy_joules"]) > 0
    assert gpu["summary"]["stop_reason"] == "client"
    assert gone(child, 10)


def test_a_killed_runner_leaves_no_exporter_behind(tmp_path: Path) -> None:
    args, fake = slow_run(tmp_path)
    env = subprocess_env(SMOLTRACE_GPU_EXPORTER_BACKEND="simulated:1")
    proc = subprocess.Popen(
        [*cli_command(), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True
    )
    child: psutil.Process | None = None
    try:
        child = exporter_child(psutil.Process(proc.pid))
        wait_for_checkpoint(tmp_path / "out", 1, proc)
        proc.kill()
        proc.wait(10)
        assert gone(child, 10), "the embedded exporter outlived its runner"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if child is not None and child.is_running():
            child.kill()
        fake.stop()


# -- segments: --resume against a long-lived sidecar, shards of one run on one node -----------------
def test_resume_against_a_long_lived_sidecar_samples_a_new_segment(four_gpus: str, server: FakeOpenAIServer, tmp_path: Path) -> None:
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "2", "--agent-type", "tool", "--enable-gpu-metrics"]
    first = run_main([*args, "--gpu-exporter", four_gpus, "--gpus", "0", "--run-id", "resume-seg-1"], tmp_path / "out")
    assert first.rc == 0, first.stderr
    before = first.metadata["gpu_metrics"]
    checkpoint = first.run_dir / "checkpoint.jsonl"
    checkpoint.write_text(checkpoint.read_text("utf-8").splitlines()[0] + "\n", "utf-8")  # as if killed after one task
    meta_path = first.run_dir / "metadata.json"
    meta_path.write_text(json.dumps({**read_json(meta_path), "status": "interrupted"}), "utf-8")
    resumed = run_main(
        ["--resume", str(first.run_dir), "--api-base", server.api_base, "--enable-gpu-metrics", "--gpu-exporter", four_gpus, "--gpus", "0"],
        tmp_path / "unused",
    )
    assert resumed.rc == 0, resumed.stderr
    after = read_json(first.run_dir / "metadata.json")["gpu_metrics"]
    # the same run id, a new segment on the exporter: a stopped id cannot be started again
    assert after["sampling_run_id"] != before["sampling_run_id"]
    assert after["sampling_run_id"].startswith("resume-seg-1/seg-")
    assert after["summary"] is not None, after["warning"]
    assert after["summary"]["run_id"] == "resume-seg-1" and float(after["summary"]["energy_joules"]) > 0


def test_shards_of_one_run_on_one_node_are_separate_runs_to_the_exporter(four_gpus: str, server: FakeOpenAIServer, tmp_path: Path) -> None:
    from smoltrace.merge import merge_runs

    args = ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "2", "--agent-type", "tool", "--enable-gpu-metrics"]
    shards = []
    for index in range(2):
        run = run_main(
            [*args, "--gpu-exporter", four_gpus, "--gpus", "1", "--run-id", "node-shards", "--shard", f"{index}/2"], tmp_path / "shards"
        )
        assert run.rc == 0, run.stderr
        shards.append(run.run_dirs[-1] if index else run.run_dir)
    gpus = [read_json(d / "metadata.json")["gpu_metrics"] for d in shards]
    assert gpus[0]["sampling_run_id"] != gpus[1]["sampling_run_id"]
    assert all("/seg-s" in g["sampling_run_id"] for g in gpus)
    assert all(g["summary"] is not None for g in gpus), [g["warning"] for g in gpus]
    energies = [float(g["summary"]["energy_joules"]) for g in gpus]
    assert energies[0] != energies[1]  # two measurements, not one summary handed to both
    merged = merge_runs(tmp_path / "merged", shards)
    total = read_json(merged / "metadata.json")["gpu_metrics"]["summary"]["energy_joules"]
    assert abs(float(total) - sum(energies)) < 1e-6
