"""Shared pieces of the GPU-exporter integration tests: in-process apps, gRPC clients, the OTLP
receiver, /metrics scraping and the real CLI as a subprocess. Everything binds 127.0.0.1 port 0."""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_gpu_exporter.config import ExporterConfig
from smoltrace_proto import pb, pb_grpc
from tests.fakes.exporter_client import OwnerStub
from tests.fakes.otlp_receiver import OtlpReceiver

os.environ.setdefault("OTEL_EXPORTER_OTLP_TIMEOUT", "2")

RPC_TIMEOUT_S = 10.0


# -- in-process exporter ----------------------------------------------------------------------
def sim_config(**overrides: Any) -> ExporterConfig:
    """A simulated two-GPU exporter on free loopback ports."""
    base = ExporterConfig(
        grpc_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        backend="simulated:2",
        otlp_export_interval_ms=500,
        otlp_timeout_s=2.0,
        log_level="WARNING",
    )
    return replace(base, **overrides).validate()


@pytest.fixture
def make_app() -> Iterator[Callable[..., ExporterApp]]:
    """Factory: make_app(config=None, backend=None, **config_overrides) -> a started ExporterApp."""
    apps: list[ExporterApp] = []

    def factory(config: ExporterConfig | None = None, backend: Any = None, **overrides: Any) -> ExporterApp:
        app = ExporterApp(config or sim_config(**overrides), backend=backend)
        app.start()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.stop(deadline_s=2.0)


@dataclass
class Client:
    channel: grpc.Channel
    stub: pb_grpc.GpuExporterStub
    health: health_pb2_grpc.HealthStub

    def check(self, service: str = "") -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S).status

    def close(self) -> None:
        self.channel.close()


def connect(address: str, credentials: grpc.ChannelCredentials | None = None, options: list[tuple[str, Any]] | None = None) -> Client:
    channel = grpc.secure_channel(address, credentials, options=options) if credentials else grpc.insecure_channel(address, options=options)
    return Client(channel, OwnerStub(channel), health_pb2_grpc.HealthStub(channel))


@pytest.fixture
def client_factory() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def factory(address: str, credentials: grpc.ChannelCredentials | None = None, **kwargs: Any) -> Client:
        client = connect(address, credentials, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def start_request(run_id: str, **fields: Any) -> pb.StartSamplingRequest:
    fields.setdefault("interval_ms", 100)
    return pb.StartSamplingRequest(run_id=run_id, **fields)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
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


# -- /metrics ---------------------------------------------------------------------------------
def http_get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str]
    value: float


def scrape(metrics_address: str) -> list[Series]:
    status, _, body = http_get(f"http://{metrics_address}/metrics")
    assert status == 200, body
    return [Series(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(body) for s in family.samples]


def series(samples: list[Series], name: str, **labels: str) -> list[Series]:
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value_of(samples: list[Series], name: str, **labels: str) -> float:
    found = series(samples, name, **labels)
    assert len(found) == 1, f"expected one {name}{labels}, got {found}"
    return found[0].value


# -- the real CLI as a subprocess -------------------------------------------------------------
def exporter_command() -> list[str]:
    script = Path(sys.executable).with_name("smoltrace-gpu-exporter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "smoltrace_gpu_exporter.cli"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test environment without exporter/OTLP settings that would leak in, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SMOLTRACE_GPU_EXPORTER_") and k not in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    }
    env.update(OTEL_EXPORTER_OTLP_TIMEOUT="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class ExporterProcess:
    """`smoltrace-gpu-exporter` as a child process; reads its JSON ready line without hanging."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [*(command or exporter_command()), *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env if env is not None else subprocess_env(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no ready line within {timeout} s; stderr: {self.stderr_text()}") from None
        if line is None:
            self.proc.wait(timeout=5)
            raise AssertionError(f"exporter exited {self.proc.returncode} before ready; stderr: {self.stderr_text()}")
        ready = json.loads(line)
        assert ready.get("event") == "ready", ready
        return ready

    def terminate(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took). Kills it and fails if it overstays."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"exporter did not exit within {timeout} s of SIGTERM; stderr: {self.stderr_text()}") from None
        return code, time.monotonic() - started

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stdout_after_exit(self) -> list[str]:
        """Every line the process printed (call once it has exited)."""
        self._reader.join(timeout=2)
        return list(self.stdout_lines)

    def stderr_text(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._reader.join(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def spawn_exporter() -> Iterator[Callable[..., ExporterProcess]]:
    processes: list[ExporterProcess] = []

    def factory(args: list[str], **kwargs: Any) -> ExporterProcess:
        process = ExporterProcess(args, **kwargs)
        processes.append(process)
        return process

    yield factory
    for process in processes:
        process.close()


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (for arguments that make it exit)."""
    return subprocess.run(
        [*exporter_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else subprocess_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
