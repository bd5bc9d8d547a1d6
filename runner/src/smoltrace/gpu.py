"""GPU metrics for a run: the rule that turns them on, and the client of the GPU-exporter sidecar.

The rule (docs/DESIGN.md, exact):
    is_local_model = provider in ["transformers", "ollama"]
    --disable-gpu-metrics -> off  ([INFO] GPU metrics disabled by user (--disable-gpu-metrics flag))
    local provider        -> on
    API provider          -> off, unless --enable-gpu-metrics forces it on

When on, the runner asks the exporter at --gpu-exporter / $SMOLTRACE_GPU_EXPORTER to
StartSampling, heartbeats while the run lasts, and StopSampling at the end. With no address it
starts a local `smoltrace-gpu-exporter` on free loopback ports and stops it afterwards. Any
failure only costs the GPU metrics: a warning, and the reason goes into metadata.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

LOCAL_PROVIDERS = ("transformers", "ollama")
DISABLED_MESSAGE = "[INFO] GPU metrics disabled by user (--disable-gpu-metrics flag)"
ENV_EXPORTER = "SMOLTRACE_GPU_EXPORTER"


@dataclass(frozen=True, slots=True)
class GpuDecision:
    enabled: bool
    reason: str
    console: str | None = None  # a line to print, if the rule says so


def decide(provider: str, disable_flag: bool, enable_flag: bool = False) -> GpuDecision:
    is_local_model = provider in LOCAL_PROVIDERS
    if disable_flag:
        return GpuDecision(False, "disabled by --disable-gpu-metrics", DISABLED_MESSAGE)
    if is_local_model:
        return GpuDecision(True, f"local provider {provider}")
    if enable_flag:
        return GpuDecision(True, f"forced on by --enable-gpu-metrics for API provider {provider}")
    return GpuDecision(False, f"API provider {provider} does not use the local GPU")


def otel_console_line(enabled: bool) -> str:
    return f"[OK] genai_otel_instrument enabled (GPU metrics: {enabled})"


@dataclass(slots=True)
class GpuSessionReport:
    """What metadata records about GPU metrics for the run."""

    enabled: bool
    reason: str
    exporter: str | None = None  # address used
    embedded: bool = False  # started by the runner
    gpu_available: bool | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "reason": self.reason,
            "exporter": self.exporter,
            "embedded_exporter": self.embedded,
            "gpu_available": self.gpu_available,
            "devices": self.devices,
            "summary": self.summary,
            "warning": self.warning,
        }


_INT_FIELDS = {
    "index",
    "count",
    "sample_count",
    "start_unix_ms",
    "end_unix_ms",
    "memory_total_bytes",
    "otlp_dropped_samples",
    "otlp_exported_samples",
}


def _ints(value: Any) -> Any:
    """protobuf's JSON mapping writes 64-bit integers as strings; make them numbers again."""
    if isinstance(value, dict):
        return {k: int(v) if k in _INT_FIELDS and isinstance(v, str) and v.lstrip("-").isdigit() else _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def _summary_dict(summary: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return _ints(MessageToDict(summary, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


class LocalExporterProcess:
    """A `smoltrace-gpu-exporter` child on free loopback ports (the embedded default)."""

    def __init__(self, startup_timeout_s: float = 20.0, extra_args: tuple[str, ...] = ()) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smoltrace_gpu_exporter.cli",
                "--grpc-address",
                "127.0.0.1:0",
                "--metrics-address",
                "127.0.0.1:0",
                "--log-level",
                "WARNING",
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ready: dict[str, Any] = {}
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline() if self.process.stdout else ""), daemon=True)
        reader.start()
        reader.join(startup_timeout_s)
        line = result[0] if result else ""
        try:
            self.ready = json.loads(line) if line else {}
        except json.JSONDecodeError:
            self.ready = {}
        if self.ready.get("event") != "ready":
            self.stop()
            raise RuntimeError(f"the local GPU exporter did not start within {startup_timeout_s:.0f} s")

    @property
    def address(self) -> str:
        return str(self.ready["grpc"])

    def stop(self, timeout_s: float = 6.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(2)
        if self.process.stdout:
            self.process.stdout.close()


class GpuSession:
    """One run's conversation with the exporter: start, heartbeats, stop. Never raises."""

    def __init__(
        self,
        decision: GpuDecision,
        run_id: str,
        address: str | None = None,
        otlp_endpoint: str = "",
        resource_attributes: Mapping[str, str] | None = None,
        interval_ms: int = 1000,
        lease_seconds: int = 60,
        gpu_uuids: tuple[str, ...] = (),
        auth_token: str | None = None,
        rpc_timeout_s: float = 5.0,
    ) -> None:
        self.report = GpuSessionReport(decision.enabled, decision.reason)
        self.run_id = run_id
        self._address = address if address is not None else os.environ.get(ENV_EXPORTER) or None
        self._otlp = otlp_endpoint
        self._attributes = dict(resource_attributes or {})
        self._interval_ms = interval_ms
        self._lease = lease_seconds
        self._uuids = gpu_uuids
        self._metadata = (("authorization", f"Bearer {auth_token}"),) if auth_token else ()
        self._timeout = rpc_timeout_s
        self._local: LocalExporterProcess | None = None
        self._channel: Any = None
        self._stub: Any = None
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._started = False

    def _warn(self, message: str) -> None:
        self.report.warning = message
        log.warning("GPU metrics off for this run: %s", message)

    def start(self) -> None:
        if not self.report.enabled:
            return
        try:
            import grpc

            from smoltrace_gpu_exporter.api import pb, pb_grpc

            if self._address is None:
                self._local = LocalExporterProcess()
                self._address = self._local.address
                self.report.embedded = True
            self.report.exporter = self._address
            self._channel = grpc.insecure_channel(self._address)
            self._stub = pb_grpc.GpuExporterStub(self._channel)
            reply = self._stub.StartSampling(
                pb.StartSamplingRequest(
                    run_id=self.run_id,
                    interval_ms=self._interval_ms,
                    gpu_uuids=list(self._uuids),
                    otlp_endpoint=self._otlp,
                    resource_attributes=self._attributes,
                    lease_seconds=self._lease,
                ),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        except Exception as err:  # noqa: BLE001 - GPU metrics are never worth failing the run for
            self._warn(_describe(err, self._address))
            self._close()
            return
        self._started = True
        self.report.gpu_available = reply.gpu_available
        self.report.devices = [
            {"index": d.index, "uuid": d.uuid, "name": d.name, "memory_total_bytes": d.memory_total_bytes} for d in reply.devices
        ]
        if not reply.gpu_available:
            self.report.warning = reply.message or "no GPU available to the exporter"
        self._heartbeat = threading.Thread(target=self._beat, name="smoltrace-gpu-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        from smoltrace_gpu_exporter.api import pb

        period = max(1.0, self._lease / 3.0)
        while not self._stop_heartbeat.wait(period):
            try:
                self._stub.Heartbeat(pb.HeartbeatRequest(run_id=self.run_id), timeout=self._timeout, metadata=self._metadata)
            except Exception as err:  # noqa: BLE001 - keep trying; the stop will tell
                log.warning("GPU exporter heartbeat failed: %s", _describe(err, self._address))

    def stop(self) -> GpuSessionReport:
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=self._timeout)
        if self._started:
            try:
                from smoltrace_gpu_exporter.api import pb

                summary = self._stub.StopSampling(
                    pb.StopSamplingRequest(run_id=self.run_id), timeout=self._timeout + 5, metadata=self._metadata
                )
                self.report.summary = _summary_dict(summary)
            except Exception as err:  # noqa: BLE001
                self._warn(f"StopSampling failed, no GPU summary: {_describe(err, self._address)}")
        self._close()
        return self.report

    def _close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._local is not None:
            self._local.stop()
            self._local = None


def _describe(err: BaseException, address: str | None) -> str:
    code = getattr(err, "code", None)
    if callable(code):
        try:
            details = err.details()  # type: ignore[attr-defined]
            return f"exporter at {address} answered {code().name}: {details}"
        except Exception:  # noqa: BLE001
            pass
    return f"{type(err).__name__}: {err}"
