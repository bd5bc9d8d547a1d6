"""genai-otel-instrument wired right, in fresh processes (it instruments once per process):
only the instrumentors the provider needs, under genai's own keys; its Ollama server poller only
for the ollama provider; the user's OTEL_* variables untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.chat_servers import FakeOpenAIServer
from tests.fakes.runner_fixtures import REPO_ROOT, read_json, run_subprocess, standard_script, subprocess_env
from tests.fakes.tiny_model import tiny_model_dir_fixture  # noqa: F401 - fixture

OLLAMA_PORT = 11434


# Loaded into the child through PYTHONPATH: every TCP connect it attempts (whatever library makes
# it, whether or not anything listens) is written to $SOCKET_LOG before it happens.
SITECUSTOMIZE = """
import os, socket
_log = os.environ["SOCKET_LOG"]
def _record(address):
    if isinstance(address, tuple) and len(address) >= 2:
        with open(_log, "a") as f:
            f.write(f"{address[0]} {address[1]}\\n")
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
def connect(self, address):
    _record(address)
    return _connect(self, address)
def connect_ex(self, address):
    _record(address)
    return _connect_ex(self, address)
socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
"""


def watched_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], Path]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE, "utf-8")
    log = tmp_path / "connects.log"
    log.write_text("", "utf-8")
    env = subprocess_env(**extra)
    env.pop("OLLAMA_HOST", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH", "")) if p)
    env["SOCKET_LOG"] = str(log)
    return env, log


def test_an_api_model_traced_run_never_contacts_ollama(tmp_path: Path) -> None:
    env, log = watched_env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://user-collector.invalid:4318")
    with FakeOpenAIServer(standard_script()) as server:
        proc = run_subprocess(
            [
                "--model", "openai/fake", "--api-base", server.api_base, "--limit", "1", "--max-steps", "3",
                "--enable-otel", "--quiet", "--output-dir", str(tmp_path / "out"),
            ],
            env=env,
            timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    connects = [line.split() for line in log.read_text().splitlines()]
    model_port = server.api_base.split(":")[-1].split("/")[0]
    assert [c for c in connects if c[1] == model_port], "the watch saw the model calls"
    assert not [c for c in connects if c[1] == str(OLLAMA_PORT)], "the run contacted port 11434"
    (run_dir,) = (tmp_path / "out").iterdir()
    meta = read_json(run_dir / "metadata.json")
    assert meta["telemetry"]["instrumented"] == ["smolagents", "litellm"]
    spans = [s for doc in read_json(run_dir / "traces.json") for s in doc["spans"]]
    assert any(s["attributes"].get("openinference.span.kind") == "LLM" for s in spans)


def test_the_transformers_instrumentor_is_active_for_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = run_subprocess(
        [
            "--model", str(tiny_model_dir), "--provider", "transformers", "--limit", "1", "--agent-type", "tool",
            "--max-steps", "1", "--model-args", "max_new_tokens=4", "--disable-gpu-metrics", "--enable-otel", "--quiet",
            "--output-dir", str(tmp_path / "out"),
        ],
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "out").iterdir()
    meta = read_json(run_dir / "metadata.json")
    assert meta["telemetry"]["instrumented"] == ["smolagents", "transformers"]
    # genai's HuggingFace instrumentor wraps GenerationMixin.generate: its spans are in the trace
    spans = [s for doc in read_json(run_dir / "traces.json") for s in doc["spans"]]
    assert any(s["name"] == "huggingface.model.generate" for s in spans), sorted({s["name"] for s in spans})
    # ... but the row's tokens come from smolagents' full span above it: genai's gives no input and
    # the whole sequence as output (counted, the prompt read as 0 and everything as completion)
    (row,) = read_json(run_dir / "results.json")
    (doc,) = read_json(run_dir / "traces.json")
    assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= 4 * doc["model_calls"], row
    # the report of such a run (what `make demo` opens) shows the trace waterfall
    report = (run_dir / "report.html").read_text("utf-8")
    assert '<details class="trace"' in report and "Tracing was off" not in report


def test_make_demo_traces() -> None:
    """`make demo` runs the transformers evaluation with --enable-otel (its report has waterfalls)."""
    proc = subprocess.run(["make", "-n", "demo"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    (command,) = [line for line in proc.stdout.splitlines() if "smoltrace-eval" in line]
    assert "--provider transformers" in command and "--enable-otel" in command


PROBE = """
import json, os, sys, threading
from smoltrace.telemetry import install_router, instrument_libraries
install_router()
before = {k: v for k, v in os.environ.items() if k.startswith(("OTEL_", "GENAI_"))}
active = instrument_libraries(sys.argv[1], "127.0.0.1:9", sys.argv[2] or None)
after = {k: v for k, v in os.environ.items() if k.startswith(("OTEL_", "GENAI_"))}
pollers = [t.name for t in threading.enumerate() if "ollama" in repr(getattr(t, "_target", "")).lower()]
from genai_otel.instrumentors import ollama_server_metrics_poller as p
url = getattr(p._global_poller, "base_url", None)
print(json.dumps({"active": active, "before": before, "after": after, "pollers": pollers, "poller_url": url}))
"""


def probe(provider: str, ollama_url: str = "", **env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, provider, ollama_url],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(**env),
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_users_otel_variables_are_left_as_they_were() -> None:
    user = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://mine:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    seen = probe("litellm", **user)
    assert seen["active"] == ["smolagents", "litellm"]
    assert seen["after"] == seen["before"]
    assert seen["after"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://mine:4318"
    assert seen["pollers"] == [] and seen["poller_url"] is None


def test_the_ollama_poller_runs_for_ollama_and_polls_its_server() -> None:
    seen = probe("ollama", "http://127.0.0.1:9")
    assert seen["active"] == ["smolagents", "litellm", "ollama"]
    assert seen["pollers"] and seen["poller_url"] == "http://127.0.0.1:9"
    assert seen["after"] == seen["before"]  # OLLAMA_BASE_URL and GENAI_* set only while instrumenting
