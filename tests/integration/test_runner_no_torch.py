"""An API-model run never imports torch (issue 15): litellm, inference and ollama runs, each a
whole `smoltrace-eval` run in a fresh interpreter against a fake server, with non-text final
answers (the code agent answers an int, the path where smolagents would `import torch`). The
interpreter prints which torch/transformers modules it ended up with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.chat_servers import FakeOllamaServer, FakeOpenAIServer
from tests.fakes.runner_fixtures import read_json, standard_script, subprocess_env

LAUNCH = (
    "import json, sys\n"
    "from smoltrace.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
    "print('HEAVY_MODULES=' + json.dumps(heavy))\n"
    "sys.exit(rc)\n"
)


def run_and_list_modules(args: list[str], tmp_path: Path, **env: str) -> tuple[list[str], Path]:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, *args, "--limit", "1", "--output-format", "json", "--output-dir", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=180,
        env=subprocess_env(**env),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("HEAVY_MODULES="))
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return json.loads(line.split("=", 1)[1]), run_dir


def assert_ran_both_agents(run_dir: Path) -> None:
    rows = read_json(run_dir / "results.json")
    assert [r["test_case_uid"] for r in rows] == ["tool:tool_weather_single", "code:code_calculator_single"]
    assert all(r["success"] for r in rows), rows
    assert rows[1]["response"] == "15678"  # a non-text (int) final answer went through smolagents' output types


@pytest.mark.parametrize("otel", [False, True], ids=["plain", "otel"])
def test_litellm_run_never_imports_torch(otel: bool, tmp_path: Path) -> None:
    server = FakeOpenAIServer(standard_script()).start()
    try:
        args = ["--model", "openai/fake", "--provider", "litellm", "--api-base", server.api_base]
        modules, run_dir = run_and_list_modules([*args, *(["--enable-otel"] if otel else [])], tmp_path)
    finally:
        server.stop()
    assert_ran_both_agents(run_dir)
    assert not [m for m in modules if m.split(".")[0] == "torch"], modules


def test_inference_run_never_imports_torch(tmp_path: Path) -> None:
    server = FakeOpenAIServer(standard_script()).start()
    try:
        token = tmp_path / "token"
        token.write_text("hf_fake_inference_token", "utf-8")
        args = ["--model", "org/fake-model", "--provider", "inference", "--api-base", server.api_base, "--hf-token-file", str(token)]
        modules, run_dir = run_and_list_modules(args, tmp_path, HF_HUB_OFFLINE="0")
    finally:
        server.stop()
    assert_ran_both_agents(run_dir)
    assert not [m for m in modules if m.split(".")[0] == "torch"], modules


def test_ollama_run_never_imports_torch(tmp_path: Path) -> None:
    server = FakeOllamaServer(standard_script()).start()
    try:
        args = ["--model", "tiny", "--provider", "ollama", "--api-base", server.url, "--disable-gpu-metrics"]
        modules, run_dir = run_and_list_modules(args, tmp_path)
    finally:
        server.stop()
    assert_ran_both_agents(run_dir)
    assert not [m for m in modules if m.split(".")[0] == "torch"], modules
