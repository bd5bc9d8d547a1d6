"""The deployments' topologies, run for real.

- Compose (docker-compose.yml): the exporter as its own service, the runner reaching it by address
  with --gpu-exporter and forcing GPU metrics on, its embedded collector receiving the exporter's
  OTLP push. Here as local processes (always; CI covers it): `smoltrace-gpu-exporter --backend
  simulated:2` and `smoltrace-eval` against the fake OpenAI server with `--collector-address
  127.0.0.1:0` (one shard below checks the collector advertised under a host name, as compose
  advertises runner:4317). With a Docker engine, the same scenario also runs in containers built from
  deploy/docker/*.Dockerfile (testcontainers), on one network, by service name.
- Kubernetes (deploy/k8s/indexed-job.yaml + merge-job.yaml): each shard is a runner with its own
  exporter (the pod's sidecar) whose OTEL_RESOURCE_ATTRIBUTES is the manifest's downward-API string;
  the shards run the manifest's own runner arguments (model and addresses swapped for the fakes),
  then the merge Job's own shell script merges them with the real `smoltrace-eval merge`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.chat_servers import FakeOpenAIServer, Script, call, code, final
from tests.fakes.runner_fixtures import cli_command, closed_port, read_json
from tests.fakes.runner_fixtures import subprocess_env as runner_env
from tests.integration.conftest import ExporterProcess
from tests.integration.conftest import subprocess_env as exporter_env

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
GPU_METRICS = {"gen_ai.gpu.utilization", "gen_ai.gpu.memory.used", "gen_ai.gpu.temperature", "gen_ai.co2.emissions", "gen_ai.gpu.energy"}
RUNNER_TIMEOUT_S = 120
SHARDS = 2  # the manifest asks for 4 GPUs; the same script with N=2 keeps this test fast


# -- helpers ----------------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def compose_service_env(service: str) -> dict[str, str]:
    environment = load_yaml(ROOT / "docker-compose.yml")["services"][service]["environment"]
    if isinstance(environment, dict):
        return {k: str(v) for k, v in environment.items()}
    return dict(item.split("=", 1) for item in environment if "=" in item)


def container_env(pod_spec: dict[str, Any], name: str, values: dict[str, str]) -> dict[str, str]:
    """A container's env with downward-API and secret entries replaced by `values` and $(VAR)
    references expanded in order, as the kubelet does."""
    containers = pod_spec.get("initContainers", []) + pod_spec["containers"]
    (container,) = [c for c in containers if c["name"] == name]
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
        elif item["name"] in values:
            env[item["name"]] = values[item["name"]]
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], text)


def resource_attributes(resource_metrics: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in resource_metrics["resource"]["attributes"]}


def metric_names(metrics: dict[str, Any]) -> set[str]:
    return {m["name"] for rm in metrics["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"]}


def deploy_script() -> Script:
    """Answers for the tasks of deploy/k8s/configmap-tasks.yaml and the first default tool task."""
    script = Script()
    script.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    script.add("234 multiplied", code('r = calculator(expression="234*67")\nprint(r)'), code("final_answer(15678)"))
    script.add("Tokyo, Japan or in London", call("get_weather", location="Tokyo, Japan"), final("Tokyo is warmer"))
    return script


@dataclass
class RunnerProcess:
    name: str
    proc: subprocess.Popen[str]
    output_dir: Path
    stdout: str = ""
    stderr: str = ""

    def wait(self) -> int:
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=RUNNER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate()
            raise AssertionError(
                f"{self.name}: smoltrace-eval did not finish in {RUNNER_TIMEOUT_S} s\n{self.stdout}\n{self.stderr}"
            ) from None
        return self.proc.returncode

    @property
    def run_dir(self) -> Path:
        dirs = [p for p in self.output_dir.iterdir() if p.is_dir()] if self.output_dir.is_dir() else []
        assert len(dirs) == 1, f"{self.name}: expected one run folder in {self.output_dir}, got {dirs}\n{self.stdout}\n{self.stderr}"
        return dirs[0]

    def json(self, name: str) -> Any:
        return read_json(self.run_dir / name)


def start_runner(name: str, args: list[str], output_dir: Path) -> RunnerProcess:
    proc = subprocess.Popen(
        [*cli_command(), *args, "--output-dir", str(output_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=runner_env(),
    )
    return RunnerProcess(name, proc, output_dir)


@dataclass
class Topology:
    compose_exporter: str
    compose_run: RunnerProcess
    advertised: str  # the collector name the last shard advertised
    run_id: str
    results_root: Path
    shards: list[RunnerProcess]
    shard_pods: list[str]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("topology")
    server = FakeOpenAIServer(deploy_script()).start()
    exporters: list[ExporterProcess] = []
    runners: list[RunnerProcess] = []
    try:
        # compose: one exporter service (its environment from docker-compose.yml, addresses on loopback)
        env = compose_service_env("gpu-exporter")
        compose_exporter = ExporterProcess(
            ["--backend", "simulated:2", "--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0", "--log-level", "WARNING"],
            env=exporter_env(OTEL_RESOURCE_ATTRIBUTES=env["OTEL_RESOURCE_ATTRIBUTES"]),
        )
        exporters.append(compose_exporter)
        compose_address = compose_exporter.wait_ready()["grpc"]
        model = ["--provider", "litellm", "--model", "openai/fake", "--api-base", server.api_base]
        # as docker-compose.yml passes them (--gpus ${SMOLTRACE_GPUS:-all}); --enable-gpu-metrics because the fake model is an API one
        common = [
            *model,
            "--gpu-exporter",
            compose_address,
            "--gpus",
            "all",
            "--enable-gpu-metrics",
            "--enable-otel",
            "--output-format",
            "json",
        ]
        runners.append(
            start_runner(
                "compose", [*common, "--agent-type", "tool", "--limit", "1", "--collector-address", "127.0.0.1:0"], tmp / "compose"
            )
        )
        # kubernetes: the indexed Job's pods, each a runner with its own sidecar exporter
        job = load_yaml(K8S / "indexed-job.yaml")
        pod = job["spec"]["template"]["spec"]
        (runner_container,) = pod["containers"]
        tasks_file = tmp / "tasks.jsonl"
        tasks_file.write_text(load_yaml(K8S / "configmap-tasks.yaml")["data"]["tasks.jsonl"], "utf-8")
        results_root = tmp / "results"
        run_id = container_env(pod, "runner", {})["SMOLTRACE_RUN_ID"]
        shard_pods = []
        for index in range(SHARDS):
            pod_name = f"smoltrace-shards-{index}-abcde"
            downward = {
                "K8S_POD_NAME": pod_name,
                "K8S_POD_UID": f"00000000-0000-4000-8000-00000000000{index}",
                "K8S_NAMESPACE": "evals",
                "K8S_NODE_NAME": f"gpu-node-{index}",
                "K8S_JOB_NAME": job["metadata"]["name"],
                "SHARD_INDEX": str(index),
            }
            sidecar_env = container_env(pod, "gpu-exporter", downward)
            sidecar = ExporterProcess(
                ["--backend", "simulated:1", "--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0", "--log-level", "WARNING"],
                env=exporter_env(OTEL_RESOURCE_ATTRIBUTES=sidecar_env["OTEL_RESOURCE_ATTRIBUTES"]),
            )
            exporters.append(sidecar)
            sidecar_address = sidecar.wait_ready()["grpc"]
            values = {**container_env(pod, "runner", downward), "JOB_COMPLETION_INDEX": str(index)}
            args = [expand(a, values) for a in runner_container["args"]]
            args = [a.replace(f"/{job['spec']['completions']}", f"/{SHARDS}") if re.fullmatch(r"\d+/\d+", a) else a for a in args]
            args = [a.replace("=/results", f"={results_root}") for a in args]
            overrides = {
                "--model": "openai/fake",
                "--provider": "litellm",
                "--dataset-name": str(tasks_file),
                "--gpu-exporter": sidecar_address,
            }
            args = [f"{a.split('=', 1)[0]}={overrides[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in overrides else a for a in args]
            args = strip_flag(args, "--model-args", 1)
            output_flag = next(a for a in args if a.startswith("--output-dir="))
            args.remove(output_flag)
            if index == SHARDS - 1:
                # the last shard also stands in for compose's collector, bound to 0.0.0.0:4317 and
                # advertised as runner:4317: bound on loopback here, advertised under a host name
                port = closed_port()
                advertised = f"localhost:{port}"
                args += ["--collector-address", f"127.0.0.1:{port}", "--collector-advertise", advertised]
            runners.append(
                start_runner(
                    f"shard-{index}",
                    # litellm stands in for the manifest's transformers: GPU metrics forced on as they are for a local provider
                    [
                        *args,
                        "--api-base",
                        server.api_base,
                        "--enable-gpu-metrics",
                        "--max-steps",
                        "2",
                        "--output-format",
                        "json",
                        "--quiet",
                    ],
                    Path(output_flag.split("=", 1)[1]),
                )
            )
            shard_pods.append(pod_name)
        for runner in runners:
            runner.wait()
        yield Topology(compose_address, runners[0], advertised, run_id, results_root, runners[1:], shard_pods)
    finally:
        for runner in runners:
            if runner.proc.poll() is None:
                runner.proc.kill()
                runner.proc.communicate()
        for exporter in exporters:
            exporter.close()
        server.stop()


def strip_flag(args: list[str], flag: str, values: int) -> list[str]:
    if flag not in args:
        return args
    at = args.index(flag)
    return args[:at] + args[at + 1 + values :]


def assert_completed(run: RunnerProcess) -> None:
    assert run.proc.returncode == 0, f"{run.name}: exit {run.proc.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback (most recent call last)" not in run.stderr, run.stderr
    assert "[WARN]" not in run.stdout, run.stdout


def assert_gpu_run(run: RunnerProcess, exporter: str | None, gpus: int) -> dict[str, Any]:
    """The run was measured by the sidecar at `exporter` (not an embedded one), its summary is in
    metadata.json and its OTLP metrics reached the collector (metrics.json). Returns metrics.json."""
    meta = run.json("metadata.json")
    gpu = meta["gpu_metrics"]
    assert gpu["enabled"] is True, gpu
    assert gpu["embedded_exporter"] is False, gpu
    if exporter is not None:
        assert gpu["exporter"] == exporter, gpu
    assert gpu["gpu_available"] is True, gpu
    assert len(gpu["devices"]) == gpus, gpu["devices"]
    summary = gpu["summary"]
    assert summary and summary["run_id"] == meta["run_id"], summary
    assert summary["energy_joules"] > 0 and summary["co2_grams"] > 0, summary
    assert summary["sample_count"] >= 1 and len(summary["devices"]) == gpus, summary
    metrics = run.json("metrics.json")
    assert metrics["run_id"] == meta["run_id"]
    assert metrics["resourceMetrics"], f"{run.name}: no GPU metrics reached the collector; telemetry: {meta.get('telemetry')}"
    assert metric_names(metrics) >= GPU_METRICS, metric_names(metrics)
    for rm in metrics["resourceMetrics"]:
        attributes = resource_attributes(rm)
        assert attributes["run.id"] == meta["run_id"], attributes
        assert attributes["service.name"] == "smoltrace-gpu-exporter", attributes
    return metrics


# -- compose, as processes --------------------------------------------------------------------
def test_compose_topology_as_processes_measures_the_run_through_the_sidecar(topology: Topology) -> None:
    run = topology.compose_run
    assert_completed(run)
    meta = run.json("metadata.json")
    assert meta["status"] == "completed" and meta["passed"] == 1, meta
    metrics = assert_gpu_run(run, topology.compose_exporter, gpus=2)
    # OTEL_RESOURCE_ATTRIBUTES of the compose exporter service reaches every OTLP resource
    expected = dict(pair.split("=", 1) for pair in compose_service_env("gpu-exporter")["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    for rm in metrics["resourceMetrics"]:
        attributes = resource_attributes(rm)
        assert expected.items() <= attributes.items(), attributes
        assert attributes["gpu.simulated"] is True
    assert meta["telemetry"]["collector"]["endpoint"].startswith("127.0.0.1:"), meta["telemetry"]
    assert meta["telemetry"]["received"]["gpu_data_points"] > 0, meta["telemetry"]
    row = run.json("leaderboard_row.json")
    assert row["energy_j"] == pytest.approx(meta["gpu_metrics"]["summary"]["energy_joules"], abs=1e-3), row


def test_the_exporter_pushes_to_the_advertised_collector_name(topology: Topology) -> None:
    """compose binds the collector to 0.0.0.0:4317 and advertises runner:4317: the exporter must push
    to the advertised name, not to the bound address (here the last shard's runner does the same)."""
    run = topology.shards[-1]
    assert_completed(run)
    meta = run.json("metadata.json")
    assert meta["telemetry"]["collector"]["advertised"] == topology.advertised, meta["telemetry"]
    assert meta["telemetry"]["collector"]["endpoint"] != topology.advertised
    assert_gpu_run(run, None, gpus=1)


# -- kubernetes indexed Job + merge, as processes ---------------------------------------------
def test_indexed_job_shards_run_the_manifest_args_with_pod_identity(topology: Topology) -> None:
    for index, (shard, pod_name) in enumerate(zip(topology.shards, topology.shard_pods, strict=True)):
        assert_completed(shard)
        assert shard.output_dir == topology.results_root / topology.run_id / "shards" / str(index)
        meta = shard.json("metadata.json")
        assert meta["run_id"] == topology.run_id, meta["run_id"]
        assert meta["shard"]["index"] == index and meta["shard"]["count"] == SHARDS, meta["shard"]
        metrics = assert_gpu_run(shard, None, gpus=1)
        for rm in metrics["resourceMetrics"]:
            attributes = resource_attributes(rm)
            assert attributes["k8s.pod.name"] == pod_name, attributes
            assert attributes["k8s.namespace.name"] == "evals", attributes
            assert attributes["k8s.node.name"] == f"gpu-node-{index}", attributes
            assert attributes["k8s.job.name"] == "smoltrace-shards", attributes
            assert attributes["k8s.pod.uid"].endswith(str(index)), attributes
            assert attributes["smoltrace.shard"] == str(index), attributes


def merge_script(results_root: Path) -> str:
    job = load_yaml(K8S / "merge-job.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"], container["command"]
    (script,) = container["args"]
    return script.replace("/results", str(results_root))


def run_merge(results_root: Path, run_id: str, shard_count: int) -> subprocess.CompletedProcess[str]:
    # the Job's container runs `smoltrace-eval` from its PATH: the console script of this venv
    bin_dir = Path(sys.executable).parent
    env = runner_env(SMOLTRACE_RUN_ID=run_id, SHARD_COUNT=str(shard_count), PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        ["/bin/sh", "-c", merge_script(results_root)], capture_output=True, text=True, env=env, timeout=RUNNER_TIMEOUT_S, check=False
    )


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh for the merge Job's script")
def test_merge_job_script_merges_the_shards_and_refuses_a_partial_set(topology: Topology) -> None:
    for shard in topology.shards:
        assert_completed(shard)
    # a merge started too early (or after a failed shard) finds fewer runs than SHARD_COUNT: exit 2
    early = run_merge(topology.results_root, topology.run_id, SHARDS + 1)
    assert early.returncode == 2, early.stdout + early.stderr
    assert f"expected {SHARDS + 1} shard runs" in early.stderr
    assert not (topology.results_root / topology.run_id / "merged").exists()

    merged = run_merge(topology.results_root, topology.run_id, SHARDS)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    out = topology.results_root / topology.run_id / "merged"
    meta = read_json(out / "metadata.json")
    assert meta["run_id"] == topology.run_id
    shard_rows = [row for shard in topology.shards for row in shard.json("results.json")]
    rows = read_json(out / "results.json")
    assert sorted(r["test_case_uid"] for r in rows) == sorted(r["test_case_uid"] for r in shard_rows)
    assert len(rows) == 4, [r["test_case_uid"] for r in rows]  # 1 tool + 1 code + 1 both task = 4 executions
    energy = sum(shard.json("metadata.json")["gpu_metrics"]["summary"]["energy_joules"] for shard in topology.shards)
    assert meta["gpu_metrics"]["summary"]["energy_joules"] == pytest.approx(energy), meta["gpu_metrics"]


# -- the same compose scenario in containers (needs a Docker engine) --------------------------
def docker_engine_or_skip() -> Any:
    docker = pytest.importorskip("docker", reason="the docker SDK (requirements/dev.txt) is not installed")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        pytest.skip(f"no Docker engine answers ({type(err).__name__}: {err}); the same topology runs as local processes above")
    return client


FAKE_MODEL_SERVER = """
import sys, threading
sys.path.insert(0, "/opt/fake")
from http.server import ThreadingHTTPServer
from chat_servers import FakeOpenAIServer, Script, call, final
script = Script().add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
inner = FakeOpenAIServer(script)
httpd = ThreadingHTTPServer(("0.0.0.0", 8000), inner.handler)
httpd.daemon_threads = True
httpd.script = script
httpd.stop_event = threading.Event()
print("fake model server on :8000", flush=True)
httpd.serve_forever()
"""


def wait_for_log(container: Any, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in b"".join(container.get_logs()).decode(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} in the logs of {container.image}: {container.get_logs()}")


def wait_healthy(container: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        container.reload()
        state = container.attrs["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return
        if state["Status"] == "exited":
            break
        time.sleep(1)
    raise AssertionError(f"{container.name} not healthy: {container.attrs['State']}\n{container.logs().decode(errors='replace')}")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_compose_topology_in_containers(tmp_path: Path) -> None:
    """docker-compose.yml's pair from the two Dockerfiles: exporter (simulated GPUs) healthy by its
    image's gRPC healthcheck, runner reaching it as gpu-exporter:50051 and advertising its
    collector as runner:4317, both with read-only root filesystems, the model a fake OpenAI server
    in a third container. Building needs the network (base images, PyPI, PyTorch's CPU index);
    docker-py uses the classic builder, which also builds the unused cuda stage: minutes."""
    docker_engine_or_skip()
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.image import DockerImage
    from testcontainers.core.network import Network

    results = tmp_path / "results"
    results.mkdir()
    hardening = {"read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}
    with (
        DockerImage(
            path=ROOT, dockerfile_path="deploy/docker/gpu-exporter.Dockerfile", tag="smoltrace/gpu-exporter:test"
        ) as exporter_image,
        DockerImage(
            path=ROOT, dockerfile_path="deploy/docker/runner.Dockerfile", tag="smoltrace/runner:test-cpu", buildargs={"VARIANT": "cpu"}
        ) as runner_image,
        Network() as network,
    ):
        # the exporter image has no ML stack
        probe = DockerContainer(str(exporter_image)).with_kwargs(entrypoint=["python", "-c", "import torch"])
        probe.start()
        try:
            assert probe.wait() != 0, "torch is importable in the exporter image"
        finally:
            probe.stop()
        model = DockerContainer(str(runner_image)).with_network(network).with_network_aliases("model")
        model.with_kwargs(entrypoint=["python", "-c", FAKE_MODEL_SERVER])
        model.with_copy_into_container(ROOT / "tests" / "fakes" / "chat_servers.py", "/opt/fake/chat_servers.py")
        exporter = (
            DockerContainer(str(exporter_image), command="--backend simulated:2")
            .with_network(network)
            .with_network_aliases("gpu-exporter")
            .with_kwargs(**hardening)  # no tmpfs: the exporter writes nothing
        )
        with model, exporter:
            wait_for_log(model, "fake model server on :8000", 60)
            wait_healthy(exporter.get_wrapped_container(), 60)
            command = shlex.split(
                "--model openai/fake --provider litellm --api-base http://model:8000/v1 --agent-type tool --limit 1"
                " --output-format json --output-dir /results --enable-otel --enable-gpu-metrics --gpu-exporter gpu-exporter:50051"
                " --collector-address 0.0.0.0:4317 --collector-advertise runner:4317"
            )
            runner = (
                DockerContainer(str(runner_image), command=command)
                .with_network(network)
                .with_network_aliases("runner")
                .with_env("OPENAI_API_KEY", "sk-fake")
                .with_volume_mapping(results, "/results", "rw")
                .with_tmpfs_mount("/tmp")
                .with_tmpfs_mount("/cache")
                # as compose runs it (user SMOLTRACE_UID:SMOLTRACE_GID): the run folder is ours
                .with_kwargs(user=f"{os.getuid()}:{os.getgid()}", **hardening)
            )
            with runner:
                code = runner.wait()
                logs = b"\n".join(runner.get_logs()).decode(errors="replace")
            assert code == 0, logs
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["gpu_metrics"]["exporter"] == "gpu-exporter:50051" and meta["gpu_metrics"]["gpu_available"], meta["gpu_metrics"]
    assert meta["telemetry"]["collector"]["advertised"] == "runner:4317", meta["telemetry"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metric_names(metrics) >= GPU_METRICS, metrics
