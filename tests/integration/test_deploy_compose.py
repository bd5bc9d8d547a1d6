"""docker-compose.yml: valid against the Compose Specification's JSON schema (the official
compose-spec.json, as vendored in the pinned check-jsonschema package), before and after
interpolation with .env.example and with no .env at all; and it wires what the README promises: the
exporter healthy before the runner, reached by service name, the collector advertised under the
runner's service name, GPU reservations, the ollama and monitoring profiles, settings from .env.
The runner's command is parsed by smoltrace-eval's own parser and the exporter's environment by the
exporter's own config loader, so a flag or variable that does not exist fails here."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
EXPORTER, RUNNER, OLLAMA, PROM = "gpu-exporter", "runner", "ollama", "prometheus"
GPU_RESERVATION = {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}


# -- the schema and compose's own file handling -----------------------------------------------
@cache
def compose_schema() -> dict[str, Any]:
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text("utf-8"))
    assert schema.get("title") == "Compose Specification", schema.get("title")
    return schema


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads a .env file (comments, blank lines, optional quotes)."""
    values: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"bad .env line {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate_text(text: str, env: dict[str, str]) -> str:
    """Compose interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, ${VAR:+a}, ${VAR+a}."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("plain"):
            return env.get(match.group("plain"), "")
        expr = match.group("braced")
        found = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expr, flags=re.S)
        assert found, f"unsupported interpolation ${{{expr}}}"
        name, op, arg = found.group(1), found.group(2), found.group(3) or ""
        value, is_set = env.get(name), name in env
        empty = not value
        if op is None:
            return value or ""
        if op in (":-", "-"):
            return arg if (empty if op == ":-" else not is_set) else str(value)
        if op in (":?", "?"):
            if empty if op == ":?" else not is_set:
                raise ValueError(f"required variable {name} is missing a value: {arg}")
            return str(value)
        return arg if not (empty if op == ":+" else not is_set) else ""

    return _VAR.sub(replace, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, str):
        return interpolate_text(node, env)
    return node


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text("utf-8"))


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The file as `docker compose` sees it with this environment (default: .env.example)."""
    return interpolate(raw_compose(), read_env_file(ENV_EXAMPLE) if env is None else env)


def referenced_variables() -> set[str]:
    found = set()
    for match in _VAR.finditer(COMPOSE.read_text("utf-8")):
        name = match.group("plain") or (match.group("braced") or "")
        name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", name)
        if name:
            found.add(name.group(0))
    return found


def env_list(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return {k: None if v is None else str(v) for k, v in environment.items()}
    return {item.split("=", 1)[0]: (item.split("=", 1)[1] if "=" in item else None) for item in environment}


def command_args(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# -- schema -----------------------------------------------------------------------------------
ENVIRONMENTS = {
    "raw file": None,
    ".env.example": "example",
    "no .env": "empty",
    "ollama .env": "ollama",
}


@pytest.mark.parametrize("case", ENVIRONMENTS)
def test_compose_file_is_valid_against_the_compose_spec_schema(case: str) -> None:
    kind = ENVIRONMENTS[case]
    if kind is None:
        document = raw_compose()
    elif kind == "example":
        document = compose()
    elif kind == "empty":
        document = compose({})
    else:
        document = compose({**read_env_file(ENV_EXAMPLE), "SMOLTRACE_PROVIDER": "ollama", "SMOLTRACE_MODEL": "qwen2.5-coder:3b"})
    assert schema_errors(document) == []


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["services"][RUNNER]["depends_on"][EXPORTER].update(condition="healthy"), "depends_on"),
        (lambda d: d["services"][EXPORTER].update(gpu=True), "gpu"),
        (lambda d: d["services"][EXPORTER]["healthcheck"].update(interval=5), "interval"),
        (lambda d: d["services"][EXPORTER]["deploy"]["resources"]["reservations"]["devices"][0].update(kind="gpu"), "kind"),
    ],
    ids=["bad condition", "unknown key", "duration as number", "unknown device key"],
)
def test_schema_validation_catches_mistakes(mutate: Any, where: str) -> None:
    document = copy.deepcopy(compose())
    mutate(document)
    errors = schema_errors(document)
    assert errors and any(where in e for e in errors), errors


def test_every_variable_has_a_default_and_is_documented_in_env_example() -> None:
    # `docker compose up` works without a .env: nothing is required
    assert compose({})["services"][RUNNER]["image"].endswith("-cuda")
    documented = set(read_env_file(ENV_EXAMPLE)) | set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text("utf-8"), flags=re.M))
    used = referenced_variables()
    assert used - documented == set(), f"used in docker-compose.yml, missing from .env.example: {sorted(used - documented)}"
    passed_through = {k for k, v in env_list(raw_compose()["services"][RUNNER]).items() if v is None}
    assert documented - used - passed_through == set(), f"in .env.example but never used: {sorted(documented - used - passed_through)}"


def test_secrets_are_passed_through_only_when_set() -> None:
    example = read_env_file(ENV_EXAMPLE)
    assert "HF_TOKEN" not in example and "OPENAI_API_KEY" not in example, "secrets stay commented out in .env.example"
    runner_env = env_list(compose()["services"][RUNNER])
    for secret in ("HF_TOKEN", "OPENAI_API_KEY"):
        assert runner_env[secret] is None, f"{secret} must be a bare pass-through (unset when .env lacks it)"
    assert all(v is None for k, v in env_list(compose()["services"][EXPORTER]).items() if "TOKEN" in k or "KEY" in k)


# -- services ---------------------------------------------------------------------------------
def test_default_profile_runs_exactly_the_exporter_and_the_runner() -> None:
    services = compose()["services"]
    assert {name for name, s in services.items() if not s.get("profiles")} == {EXPORTER, RUNNER}
    assert services[OLLAMA]["profiles"] == ["ollama"]
    assert services[PROM]["profiles"] == ["monitoring"]


def test_exporter_service_has_the_gpus_its_ports_and_a_grpc_healthcheck() -> None:
    from smoltrace_gpu_exporter.config import load_config

    service = compose()["services"][EXPORTER]
    assert service["build"] == {"context": ".", "dockerfile": "deploy/docker/gpu-exporter.Dockerfile"}
    assert (ROOT / service["build"]["dockerfile"]).is_file()
    assert service["deploy"]["resources"]["reservations"]["devices"] == [GPU_RESERVATION]
    env = {k: v for k, v in env_list(service).items() if v is not None}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    # the exporter's own loader accepts the environment compose gives it
    config = load_config([], environ=env)
    assert host_port(config.grpc_address) == ("0.0.0.0", 50051)
    assert host_port(config.metrics_address) == ("0.0.0.0", 9402)
    assert config.backend == "nvml" and config.carbon_intensity == 475
    unknown = {k for k in env if k.startswith("SMOLTRACE_GPU_EXPORTER_")} - {
        f"SMOLTRACE_GPU_EXPORTER_{f.upper()}" for f in type(config).__dataclass_fields__
    }
    assert unknown == set(), f"not exporter settings: {unknown}"
    published = {p.rsplit(":", 1)[1]: p for p in service["ports"]}
    assert set(published) == {"50051", "9402"}
    assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "published on the host's loopback only"
    test = service["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "smoltrace_gpu_exporter.healthcheck"], test
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


def test_runner_waits_for_a_healthy_exporter_and_reaches_it_by_service_name() -> None:
    from smoltrace.config import build_parser, config_from_args
    from smoltrace_gpu_exporter.config import load_config

    services = compose()["services"]
    runner = services[RUNNER]
    assert runner["depends_on"][EXPORTER] == {"condition": "service_healthy"}
    assert runner["build"]["dockerfile"] == "deploy/docker/runner.Dockerfile" and (ROOT / runner["build"]["dockerfile"]).is_file()
    assert runner["build"]["args"]["VARIANT"] in ("cpu", "cuda")
    assert runner["deploy"]["resources"]["reservations"]["devices"] == [GPU_RESERVATION]
    config = config_from_args(build_parser().parse_args(command_args(runner)))
    exporter = load_config([], environ={k: v for k, v in env_list(services[EXPORTER]).items() if v is not None})
    # --gpu-exporter: the exporter's service name and its gRPC port
    assert host_port(config.gpu_exporter) == (EXPORTER, host_port(exporter.grpc_address)[1])
    # the collector listens on all of the container's interfaces and is advertised by service name
    assert host_port(config.collector_address) == ("0.0.0.0", 4317)
    assert host_port(config.collector_advertise) == (RUNNER, 4317)
    # the seed rule: GPU metrics are not forced on (an API model is not measured against the host's GPUs)
    assert not config.enable_gpu_metrics and not config.disable_gpu_metrics
    assert config.gpus == "all" and env_list(runner)["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert config.output_dir == "/results"
    assert config.model == "HuggingFaceTB/SmolLM2-1.7B-Instruct" and config.provider == "transformers"
    assert config.limit == 4 and config.model_args == {"max_new_tokens": 512}, "SMOLTRACE_EXTRA_ARGS reaches the command"
    assert config.output_format == "json"


def test_runner_settings_come_from_env() -> None:
    from smoltrace.config import build_parser, config_from_args

    env = {
        "SMOLTRACE_MODEL": "openai/gpt-4.1-nano",
        "SMOLTRACE_PROVIDER": "litellm",
        "SMOLTRACE_AGENT_TYPE": "tool",
        "SMOLTRACE_DATASET": "/tasks/tasks.jsonl",
        "SMOLTRACE_OUTPUT_FORMAT": "hub",
        "SMOLTRACE_EXTRA_ARGS": "--parallel-workers 4 --difficulty easy",
        "SMOLTRACE_RUNNER_VARIANT": "cpu",
        "SMOLTRACE_UID": "1000",
    }
    runner = compose(env)["services"][RUNNER]
    config = config_from_args(build_parser().parse_args(command_args(runner)))
    assert (config.model, config.provider, config.agent_type) == ("openai/gpt-4.1-nano", "litellm", "tool")
    assert (config.dataset_name, config.output_format, config.parallel_workers, config.difficulty) == (
        "/tasks/tasks.jsonl",
        "hub",
        4,
        "easy",
    )
    assert runner["build"]["args"]["VARIANT"] == "cpu" and runner["image"].endswith("-cpu")
    assert runner["user"] == "1000:10001"
    # SMOLTRACE_GPUS picks the runner container's GPUs and the ones its run is charged for
    picked = compose({**env, "SMOLTRACE_GPUS": "GPU-8d3f6c2a-1111,2"})["services"][RUNNER]
    assert env_list(picked)["NVIDIA_VISIBLE_DEVICES"] == "GPU-8d3f6c2a-1111,2"
    assert config_from_args(build_parser().parse_args(command_args(picked))).gpus == "GPU-8d3f6c2a-1111,2"
    assert not config.enable_gpu_metrics  # litellm: no GPU metrics under compose either
    # defaults without any .env
    default = config_from_args(build_parser().parse_args(command_args(compose({})["services"][RUNNER])))
    assert default.limit is None and default.output_format == "json"


def test_runner_volumes_results_on_the_host_tasks_read_only_and_writable_tmp() -> None:
    runner = compose()["services"][RUNNER]
    volumes = runner["volumes"]
    binds = {v["target"]: v for v in volumes if isinstance(v, dict)}
    assert binds["/results"]["type"] == "bind" and binds["/results"]["source"] == "./smoltrace_results"
    assert binds["/tasks"]["read_only"] is True and (ROOT / binds["/tasks"]["source"]).is_dir()
    assert any(v == "model-cache:/cache" for v in volumes if isinstance(v, str))
    assert "model-cache" in compose()["volumes"]
    assert runner["tmpfs"] == ["/tmp:exec"] and runner["read_only"] is True
    # the default results folder is git-ignored
    assert "/smoltrace_results/" in (ROOT / ".gitignore").read_text().splitlines()
    from smoltrace.tasks import load_tasks

    (task_file,) = (ROOT / binds["/tasks"]["source"]).glob("*.jsonl")
    assert len(load_tasks(str(task_file)).tasks) >= 1


def test_ollama_profile_serves_the_model_and_the_runner_waits_for_it() -> None:
    services = compose({**read_env_file(ENV_EXAMPLE), "SMOLTRACE_PROVIDER": "ollama", "SMOLTRACE_MODEL": "qwen2.5-coder:3b"})["services"]
    ollama, runner = services[OLLAMA], services[RUNNER]
    assert ollama["deploy"]["resources"]["reservations"]["devices"] == [GPU_RESERVATION]
    assert re.fullmatch(r"ollama/ollama:\d+\.\d+\.\d+", ollama["image"]), ollama["image"]
    assert ollama["environment"]["OLLAMA_PULL_MODEL"] == "qwen2.5-coder:3b"
    assert runner["depends_on"][OLLAMA] == {"condition": "service_healthy", "required": False}
    assert env_list(runner)["OLLAMA_HOST"] == "http://ollama:11434"
    from smoltrace.config import build_parser, config_from_args
    from smoltrace.models import ollama_base

    config = config_from_args(build_parser().parse_args(command_args(runner)))
    assert config.provider == "ollama" and config.model == "qwen2.5-coder:3b"
    assert ollama_base(config.api_base, {"OLLAMA_HOST": env_list(runner)["OLLAMA_HOST"]}).startswith("http://ollama:11434")


def fake_ollama(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in `ollama` CLI that logs its arguments: `serve` lasts a moment, `show` succeeds only
    for a pulled model."""
    bin_dir, log = tmp_path / "bin", tmp_path / "ollama.log"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "ollama"
    pulled = tmp_path / "pulled"
    show = f'grep -qx "$2" "{pulled}"'
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'case "$1" in\n'
        "  serve) sleep 0.3 ;;\n"
        "  list) exit 0 ;;\n"
        f'  pull) echo "$2" >> "{pulled}" ;;\n'
        f"  show) {show} ;;\n"
        "esac\n",
        "utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_ollama_start_command_pulls_the_model_and_the_healthcheck_sees_it(tmp_path: Path) -> None:
    ollama = compose({"SMOLTRACE_MODEL": "qwen2.5-coder:3b"})["services"][OLLAMA]
    assert ollama["entrypoint"] == ["/bin/sh", "-c"]
    (start,) = ollama["command"]
    kind, check = ollama["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    bin_dir, log = fake_ollama(tmp_path)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **ollama["environment"]}
    # before the pull the healthcheck fails, after it passes
    assert subprocess.run(["/bin/sh", "-c", check], env=env, timeout=10, check=False).returncode != 0
    done = subprocess.run(["/bin/sh", "-c", start], env=env, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    assert "serve" in calls and "pull qwen2.5-coder:3b" in calls, calls
    assert calls.index("list") < calls.index("pull qwen2.5-coder:3b"), "the pull waits for the server to answer"
    assert subprocess.run(["/bin/sh", "-c", check], env=env, timeout=10, check=False).returncode == 0


def test_monitoring_profile_scrapes_the_exporter_with_the_shipped_config() -> None:
    from smoltrace_gpu_exporter.config import load_config

    services = compose()["services"]
    prom = services[PROM]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert prom["depends_on"][EXPORTER] == {"condition": "service_healthy"}
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prom["image"]), prom["image"]
    config = yaml.safe_load(PROMETHEUS.read_text("utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "smoltrace-gpu-exporter"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    exporter = load_config([], environ={k: v for k, v in env_list(services[EXPORTER]).items() if v is not None})
    assert targets == [f"{EXPORTER}:{host_port(exporter.metrics_address)[1]}"], targets
    assert job.get("metrics_path", "/metrics") == "/metrics"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_prometheus_config_passes_promtool() -> None:
    result = subprocess.run(["promtool", "check", "config", "--syntax-only", str(PROMETHEUS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_host_path_exists_and_our_images_are_only_ever_built() -> None:
    document = compose()
    for name, service in document["services"].items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
            # built from this tree, never pulled under our image name from a registry someone else could fill
            assert service["pull_policy"] == "build", name
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source.startswith((".", "/")) and source != "./smoltrace_results":  # results: `mkdir -p` (README)
                assert (ROOT / source).exists(), f"{name}: {source}"
