"""Shared pieces of the `smoltrace-eval` (runner) tests: offline environment, fake servers, running
the CLI in-process or as a subprocess, reading a run folder, tiny task files.

Import the fixtures you use explicitly, e.g.
`from tests.fakes.runner_fixtures import runner_env_fixture  # noqa: F401` (each fixture is
registered under its name without the `_fixture` suffix, so test parameters do not shadow imports).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chat_servers import FakeOllamaServer, FakeOpenAIServer, Script, call, code, final

REPO_ROOT = Path(__file__).resolve().parents[2]

# Set at import, before litellm / OTel are first imported (harmless for every other test).
IMPORT_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
    "TOKENIZERS_PARALLELISM": "false",
}
# The whole offline environment of a runner test. HF_HUB_OFFLINE is set per test only (see
# runner_env): huggingface_hub reads it once at import, and other tests talk to a fake Hub.
OFFLINE_ENV = {**IMPORT_ENV, "HF_HUB_OFFLINE": "1"}


def apply_import_env() -> None:
    for key, value in IMPORT_ENV.items():
        os.environ[key] = value


apply_import_env()

# Variables that would change what the runner does if they leaked in from the developer's shell.
LEAKY_ENV = (
    "SMOLTRACE_GPU_EXPORTER",
    "SMOLTRACE_GPUS",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "OLLAMA_HOST",
    "HF_TOKEN",
    "OPENAI_API_BASE",
    "OPENAI_BASE_URL",
)
FAKE_OPENAI_KEY = "sk-fake"


def apply_runner_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline test environment, through `monkeypatch` (undone with it)."""
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    for key in LEAKY_ENV:
        monkeypatch.delenv(key, raising=False)
    for key in [k for k in os.environ if k.startswith("SMOLTRACE_GPU_EXPORTER_")]:
        monkeypatch.delenv(key, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(name="runner_env")
def runner_env_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline test environment for one runner test (restored afterwards)."""
    apply_runner_env(monkeypatch)


@pytest.fixture(scope="module", name="runner_env_module")
def runner_env_module_fixture() -> Iterator[pytest.MonkeyPatch]:
    """The same for module-scoped fixtures (a shared run)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        apply_runner_env(monkeypatch)
        yield monkeypatch


def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let huggingface_hub clients make HTTP calls again (to a fake on 127.0.0.1) in this test."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


# -- scripts and servers ----------------------------------------------------------------------
def standard_script(latency_s: float = 0.0) -> Script:
    """Correct answers for the first tool task and the first code task of the default set."""
    script = Script(latency_s=latency_s)
    script.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    script.add("234 multiplied", code('r = calculator(expression="234*67")\nprint(r)'), code("final_answer(15678)"))
    return script


@pytest.fixture(name="openai_server")
def openai_server_fixture() -> Iterator[Callable[[Script], FakeOpenAIServer]]:
    """Factory: openai_server(script) -> a started FakeOpenAIServer, stopped after the test."""
    servers: list[FakeOpenAIServer] = []

    def start(script: Script) -> FakeOpenAIServer:
        server = FakeOpenAIServer(script).start()
        servers.append(server)  # type: ignore[arg-type]
        return server  # type: ignore[return-value]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(name="ollama_server")
def ollama_server_fixture() -> Iterator[Callable[[Script], FakeOllamaServer]]:
    servers: list[FakeOllamaServer] = []

    def start(script: Script) -> FakeOllamaServer:
        server = FakeOllamaServer(script).start()
        servers.append(server)  # type: ignore[arg-type]
        return server  # type: ignore[return-value]

    yield start
    for server in servers:
        server.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ConnectionRecorder:
    """A TCP listener that records every connection made to it (and closes it): proves that
    nothing contacted an address."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


@pytest.fixture(name="connection_recorder")
def connection_recorder_fixture() -> Iterator[ConnectionRecorder]:
    recorder = ConnectionRecorder()
    yield recorder
    recorder.close()


# -- running the CLI --------------------------------------------------------------------------
@dataclass
class CliRun:
    rc: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.output_dir.iterdir() if p.is_dir()) if self.output_dir.is_dir() else []

    @property
    def run_dir(self) -> Path:
        dirs = self.run_dirs
        assert len(dirs) == 1, f"expected one run folder in {self.output_dir}, got {dirs}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        return dirs[0]

    @property
    def results(self) -> list[dict[str, Any]]:
        return read_json(self.run_dir / "results.json")

    @property
    def metadata(self) -> dict[str, Any]:
        return read_json(self.run_dir / "metadata.json")

    @property
    def leaderboard(self) -> dict[str, Any]:
        return read_json(self.run_dir / "leaderboard_row.json")

    def row(self, uid: str) -> dict[str, Any]:
        rows = [r for r in self.results if r["test_case_uid"] == uid]
        assert len(rows) == 1, f"{uid}: {rows}"
        return rows[0]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def run_main(args: list[str], output_dir: Path) -> CliRun:
    """`main([...])` in this process with `--output-dir output_dir` added; stdout and stderr are
    captured (and echoed, for pytest's report on failure)."""
    from smoltrace.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*args, "--output-dir", str(output_dir)])
    sys.stdout.write(out.getvalue())
    sys.stderr.write(err.getvalue())
    return CliRun(rc, out.getvalue(), err.getvalue(), output_dir)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV and not k.startswith("SMOLTRACE_GPU_EXPORTER_")}
    env.update(OFFLINE_ENV)
    env.update(OPENAI_API_KEY=FAKE_OPENAI_KEY, PYTHONUNBUFFERED="1", COLUMNS="120")
    env.update(extra)
    return env


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("smoltrace-eval")
    return [str(script)] if script.exists() else [sys.executable, "-m", "smoltrace.cli"]


def run_subprocess(
    args: list[str], timeout: float = 60.0, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else subprocess_env(),
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        check=False,
    )


# -- task files -------------------------------------------------------------------------------
def task(task_id: str, prompt: str, agent_type: str = "tool", difficulty: str = "easy", **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "prompt": prompt, "difficulty": difficulty, "agent_type": agent_type, **fields}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8")
    return path


def assert_no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, text
