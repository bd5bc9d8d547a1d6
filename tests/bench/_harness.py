"""Shared pieces of the benchmarks: the exporter as a subprocess, gRPC/HTTP helpers, results.

Every exporter is started from its CLI (`smoltrace-gpu-exporter`) on 127.0.0.1 with port 0 and
the simulated backend, and is stopped in a `finally` (SIGTERM, then SIGKILL). On Linux the child
also gets PR_SET_PDEATHSIG, so it dies with the benchmark process even if that one is killed.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

from smoltrace_proto import pb, pb_grpc
from tests.fakes.exporter_client import OwnerStub

GPUS = 8
READY_TIMEOUT_S = 30.0
RPC_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 5.0


# -- results ----------------------------------------------------------------------------------
@dataclass(slots=True)
class Metric:
    label: str
    value: float
    unit: str
    target: str = ""  # human-readable, e.g. "< 2 %"; empty = informational
    passed: bool | None = None  # None = informational


@dataclass(slots=True)
class Result:
    name: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    def add(self, label: str, value: float, unit: str, *, below: float | None = None) -> Metric:
        """Record a number; with `below`, it is a target the value must stay under."""
        if below is None:
            metric = Metric(label, value, unit)
        else:
            metric = Metric(label, value, unit, target=f"< {_fmt(below)} {unit}".rstrip(), passed=value < below)
        self.metrics.append(metric)
        return metric

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float) -> str:
    return f"{value:g}"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank-with-interpolation percentile (same as numpy's default 'linear')."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(samples_s: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": sum(ms) / len(ms),
    }


# -- the exporter subprocess ------------------------------------------------------------------
def exporter_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m ...cli`."""
    script = Path(sys.executable).with_name("smoltrace-gpu-exporter")
    if script.exists():
        return [str(script)]
    found = shutil.which("smoltrace-gpu-exporter")
    if found:
        return [found]
    return [sys.executable, "-m", "smoltrace_gpu_exporter.cli"]


def _child_env() -> dict[str, str]:
    """The caller's environment without anything that would point the exporter elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SMOLTRACE_GPU_EXPORTER_") and k not in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; the finally blocks still clean up
        pass


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    grpc_address: str
    metrics_address: str
    ready: dict[str, Any]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        host, port = self.metrics_address.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        times = self.ps().cpu_times()
        return times.user + times.system

    def thread_cpu_seconds(self) -> dict[str, float] | None:
        """On-CPU time per thread ("tid name" -> s) from /proc/<pid>/task/*/sched, ns resolution.

        `cpu_seconds` counts in clock ticks (10 ms); at well under 1 % of a core that is coarse.
        None where the kernel does not expose it. Threads that exited are not counted.
        """
        out: dict[str, float] = {}
        try:
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                try:
                    sched = (task / "sched").read_text()
                    comm = (task / "comm").read_text().strip()
                except OSError:
                    continue  # the thread ended
                for line in sched.splitlines():
                    if line.startswith("se.sum_exec_runtime"):
                        out[f"{task.name} {comm}"] = float(line.split(":", 1)[1]) / 1000.0
                        break
        except OSError:
            return None
        return out or None

    def rss_bytes(self) -> int:
        return int(self.ps().memory_info().rss)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def exporter(*extra_args: str, gpus: int = GPUS) -> Iterator[Exporter]:
    """Start `smoltrace-gpu-exporter --backend simulated:N` on loopback port 0; always stop it."""
    args = [
        *exporter_command(),
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-address",
        "127.0.0.1:0",
        "--backend",
        f"simulated:{gpus}",
        *extra_args,
    ]
    log_file = tempfile.NamedTemporaryFile(prefix="smoltrace-bench-exporter-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log_file.name)
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log_file,
        env=_child_env(),
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    log_file.close()
    try:
        ready = _read_ready(proc, log_path)
        yield Exporter(proc, ready["grpc"], ready["metrics"], ready, log_path)
    finally:
        _terminate(proc)
        try:
            log_path.unlink()
        except OSError:
            pass


def _read_ready(proc: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    lines: queue.Queue[bytes] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:  # keeps draining stdout so the child can never block on it
        for line in iter(stdout.readline, b""):
            lines.put(line)

    threading.Thread(target=pump, name="bench-exporter-stdout", daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("event") == "ready":
            return message
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RuntimeError(f"exporter not ready within {READY_TIMEOUT_S:.0f} s (exit code {proc.poll()}); stderr tail:\n{tail}")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=6.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)
    if proc.stdout is not None:
        proc.stdout.close()


# -- clients ----------------------------------------------------------------------------------
@contextmanager
def grpc_stub(address: str) -> Iterator[pb_grpc.GpuExporterStub]:
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)
        yield OwnerStub(channel)
    finally:
        channel.close()


def start_run(stub: pb_grpc.GpuExporterStub, run_id: str, interval_ms: int, lease_seconds: int = 0) -> pb.StartSamplingResponse:
    response = stub.StartSampling(
        pb.StartSamplingRequest(run_id=run_id, interval_ms=interval_ms, lease_seconds=lease_seconds),
        timeout=RPC_TIMEOUT_S,
    )
    if len(response.devices) != GPUS or not response.gpu_available:
        raise RuntimeError(f"run {run_id}: expected {GPUS} GPUs, got {len(response.devices)} (gpu_available={response.gpu_available})")
    return response


def stop_run(stub: pb_grpc.GpuExporterStub, run_id: str) -> pb.RunSummary:
    return stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)


def scrape(host: str, port: int, path: str = "/metrics") -> bytes:
    """One GET on a fresh connection (no keep-alive): connect, request, read, close."""
    conn = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
        return body
    finally:
        conn.close()


def metric_value(body: bytes, name: str) -> float | None:
    """The value of an unlabelled series in a Prometheus text exposition."""
    prefix = name.encode() + b" "
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def settle(seconds: float) -> None:
    time.sleep(max(0.0, seconds))
