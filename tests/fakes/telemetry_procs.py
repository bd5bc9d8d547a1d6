"""Processes and hooks for the telemetry tests: a simulated GPU exporter, the standalone
`smoltrace-collector`, the `rotel` OpenTelemetry collector, a Script that runs a callback when a
task's conversation starts, and a way to get at the runner's embedded collector.

Every process binds 127.0.0.1; `close()` always kills what is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.chat_servers import Script, Turn, _text

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class ReadyLineProcess:
    """A child that prints one JSON ready line on stdout; stderr goes to a temporary file."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None, startup_timeout_s: float = 20.0) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, text=True, env=env or child_env()
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            line = self._lines.get(timeout=startup_timeout_s)
        except queue.Empty:
            line = None
        try:
            self.ready: dict[str, Any] = json.loads(line) if line else {}
        except json.JSONDecodeError:
            self.ready = {}
        if not isinstance(self.ready, dict) or self.ready.get("event") != "ready":
            self.close()
            raise AssertionError(f"{command[0]} did not start: {line!r}; stderr: {self.stderr_text()}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr_text(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._reader.join(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SMOLTRACE_GPU_EXPORTER", "SMOLTRACE_COLLECTOR_", "OTEL_EXPORTER_OTLP_ENDPOINT", "ROTEL_"))
    }
    env.update(OTEL_EXPORTER_OTLP_TIMEOUT="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class SimulatedExporter(ReadyLineProcess):
    """`smoltrace-gpu-exporter --backend simulated:N` on free loopback ports."""

    def __init__(self, gpus: int = 2, export_interval_ms: int = 5000, extra: tuple[str, ...] = ()) -> None:
        super().__init__(
            [
                sys.executable,
                "-m",
                "smoltrace_gpu_exporter.cli",
                "--grpc-address",
                "127.0.0.1:0",
                "--metrics-address",
                "127.0.0.1:0",
                "--backend",
                f"simulated:{gpus}",
                "--otlp-export-interval-ms",
                str(export_interval_ms),
                "--log-level",
                "WARNING",
                *extra,
            ]
        )
        self.address = str(self.ready["grpc"])


def collector_command() -> list[str]:
    script = VENV_BIN / "smoltrace-collector"
    return [str(script)] if script.exists() else [sys.executable, "-m", "smoltrace.collector.cli"]


class CollectorProcess(ReadyLineProcess):
    """The standalone `smoltrace-collector` (gRPC OTLP receiver + JSON HTTP API)."""

    def __init__(self, grpc_port: int = 0, http_port: int = 0, extra: tuple[str, ...] = ()) -> None:
        super().__init__(
            [*collector_command(), "--grpc-address", f"127.0.0.1:{grpc_port}", "--http-address", f"127.0.0.1:{http_port}", *extra]
        )
        self.grpc = str(self.ready["grpc"])
        self.http = str(self.ready["http"])
        self.grpc_port = int(self.grpc.rsplit(":", 1)[1])
        token_file = self.ready.get("token_file")
        self.token = Path(token_file).read_text("utf-8").strip() if token_file else None

    def request(self, path: str, method: str = "GET", token: bool = True) -> tuple[int, Any]:
        """A JSON API call, with the collector's bearer token unless `token=False`."""
        headers = {"Authorization": f"Bearer {self.token}"} if token and self.token else {}
        req = urllib.request.Request(f"http://{self.http}{path}", method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def get(self, path: str) -> Any:
        status, body = self.request(path)
        assert status == 200, (path, status, body)
        return body


def rotel_binary() -> Path:
    import rotel

    return Path(rotel.__file__).with_name("rotel-agent")


class RotelProcess:
    """`rotel-agent start`: OTLP/gRPC + HTTP receivers, OTLP/gRPC exporter to `sink` (host:port)."""

    def __init__(self, sink: str, workdir: Path) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self._log = open(workdir / "rotel.out", "w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                str(rotel_binary()),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{self.http_port}",
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                f"http://{sink}",
                "--batch-timeout",
                "200ms",
                "--pid-file",
                str(workdir / "rotel.pid"),
                "--log-file",
                str(workdir / "rotel.log"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(),
        )
        try:
            wait_until(lambda: self.proc.poll() is not None or port_open("127.0.0.1", self.grpc_port), 15, what="rotel's gRPC receiver")
        except AssertionError:
            self.close()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"rotel exited {self.proc.returncode}: {self.output()}")

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._log.close()


class HookScript(Script):
    """A Script that calls `on_start[match]()` (once) when the conversation of the task whose
    first user message contains `match` makes its first request, before replying; the task waits
    for it. Lets a test act between two tasks of a run (kill a process, stop a receiver)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_start: dict[str, Callable[[], None]] = {}
        self.hook_errors: list[BaseException] = []
        self._fired: set[str] = set()
        self._hook_lock = threading.Lock()

    def next_turn(self, messages: list[dict[str, Any]]) -> Turn:
        first_user = next((_text(m.get("content")) for m in messages if m.get("role") == "user"), "")
        if not any(m.get("role") == "assistant" for m in messages):
            for match, hook in self.on_start.items():
                with self._hook_lock:
                    if match not in first_user or match in self._fired:
                        continue
                    self._fired.add(match)
                try:
                    hook()
                except BaseException as err:  # noqa: BLE001 - reported by the test
                    self.hook_errors.append(err)
        return super().next_turn(messages)


class CollectorSpy:
    """Records every Collector the runner's telemetry session makes (patch it in with
    `monkeypatch.setattr(smoltrace.telemetry_session, "Collector", spy.cls)`)."""

    def __init__(self) -> None:
        from smoltrace.collector import Collector

        self.instances: list[Collector] = []
        spy = self

        class Recording(Collector):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                spy.instances.append(self)

        self.cls = Recording

    @property
    def only(self) -> Any:
        assert len(self.instances) == 1, self.instances
        return self.instances[0]

    def raw_payloads(self) -> list[bytes]:
        """Everything every recorded collector stored, all runs, both kinds."""
        out = []
        for collector in self.instances:
            for run_id in collector.store.runs():
                for kind in ("traces", "metrics"):
                    out.extend(collector.store.payloads(run_id, kind))
        return out
