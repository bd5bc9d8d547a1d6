"""scripts/gpu_check.py (`make gpu-check`, run once on a lent GPU machine): its arguments, and the
orchestrator's promise that a part that fails, crashes or runs out of time is recorded in the
JSON and never stops the next one. On this GPU-less machine the real `scoped` part runs and must
record NVML's absence as its error."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_help_and_arguments() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "--model-dir" in done.stdout and "--out" in done.stdout
    gpu_check = load()
    args = gpu_check.parse_args(["--model-dir", "/m", "--out", "/o"])
    assert args.part_names == ["shared", "scoped", "energy", "seed"]
    assert sum(gpu_check.LIMITS[n] for n in args.part_names) < 360 - 20  # the whole script under 6 minutes
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--parts", "seed,nonsense"])


def test_a_failing_crashing_or_slow_part_never_stops_the_others(tmp_path: Path) -> None:
    gpu_check = load()
    ok_part = (
        f"import json,pathlib; pathlib.Path({str(tmp_path / 'part-good.json')!r}).write_text(json.dumps({{'ok': True, 'checks': []}}))"
    )
    parts = [
        gpu_check.Part("crash", [sys.executable, "-c", "raise SystemExit(3)"], 30),
        gpu_check.Part("slow", [sys.executable, "-c", "import time; time.sleep(60)"], 1.5),
        gpu_check.Part("good", [sys.executable, "-c", ok_part], 30),
    ]
    results = gpu_check.run_parts(parts, tmp_path)
    assert results["crash"]["ok"] is False and "exited 3" in results["crash"]["error"]
    assert results["slow"]["ok"] is False and "limit" in results["slow"]["error"]
    assert results["good"]["ok"] is True


def test_the_real_script_records_a_part_that_cannot_run_here(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--parts", "scoped", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads((tmp_path / "gpu_check.json").read_text("utf-8"))
    assert result["ok"] is False
    assert result["parts"]["scoped"]["ok"] is False and result["parts"]["scoped"]["error"]
