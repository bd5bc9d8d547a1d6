"""GPU metrics for a run: the rule that turns them on, and the client of the GPU-exporter sidecar.

The rule (docs/DESIGN.md, exact):
    is_local_model = provider in ["transformers", "ollama"]
    --disable-gpu-metrics -> off  ([INFO] GPU metrics disabled by user (--disable-gpu-metrics flag))
    local provider        -> on
    API provider          -> off, unless --enable-gpu-metrics forces it on

When on, the runner resolves which GPUs the run owns (smoltrace.gpu_scope), asks the exporter at
--gpu-exporter / $SMOLTRACE_GPU_EXPORTER (bearer token from --gpu-exporter-token-file, TLS checked
against --gpu-exporter-tls-ca) to StartSampling those UUIDs, heartbeats while the run lasts, and
StopSampling on every exit path. With no address it starts a local `smoltrace-gpu-exporter` on free
loopback ports (its own session, dying with the runner, a token only the runner knows) and stops it
after the run's summary is in. GPUs the exporter does not see are an error before any task runs
(exit 2); any other failure only costs the GPU metrics: a warning, and the reason goes into metadata.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .gpu_scope import (
    SOURCE_REMOTE,
    ExporterDevice,
    GpuScope,
    GpuScopeError,
    ScopeInputs,
    model_device_uuids,
    resolve_scope,
    torch_visible_uuids,
)

log = logging.getLogger(__name__)

LOCAL_PROVIDERS = ("transformers", "ollama")
DISABLED_MESSAGE = "[INFO] GPU metrics disabled by user (--disable-gpu-metrics flag)"
ENV_EXPORTER = "SMOLTRACE_GPU_EXPORTER"
ENV_TOKEN_FILE = "SMOLTRACE_GPU_EXPORTER_TOKEN_FILE"
ENV_TLS_CA = "SMOLTRACE_GPU_EXPORTER_TLS_CA"


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
    scope: dict[str, Any] | None = None  # gpu_scope: {source, uuids, note, measured}
    sampling_run_id: str | None = None  # the exporter's id of this process's sampling (a segment)
    tls: bool = False
    notes: list[str] = field(default_factory=list)  # console lines for the runner to print

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "sampling_run_id": self.sampling_run_id,
            "tls": self.tls,
            "enabled": self.enabled,
            "reason": self.reason,
            "exporter": self.exporter,
            "embedded_exporter": self.embedded,
            "gpu_available": self.gpu_available,
            "devices": self.devices,
            "summary": self.summary,
            "warning": self.warning,
        }


def _summary_dict(summary: Any) -> dict[str, Any]:
    from smoltrace_proto.summary import run_summary_from_proto

    return run_summary_from_proto(summary).as_dict()


# Variables the embedded exporter reads about itself; everything else (API keys, HF_TOKEN, the
# runner's OTLP headers...) stays with the runner.
_CHILD_ENV_NAMES = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONNOUSERSITE",
    "PYTHONUNBUFFERED",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "SYSTEMROOT",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAME",
)
# SMOLTRACE_GPU_EXPORTER_* the child must not take from the runner's environment: server-side auth,
# TLS and listen addresses meant for a remote sidecar (they would lock the runner out of its own
# child, or move it off loopback), and the runner's own client settings.
_CHILD_ENV_DROPPED = {
    "SMOLTRACE_GPU_EXPORTER_AUTH_TOKEN_FILE",
    "SMOLTRACE_GPU_EXPORTER_TLS_CERT",
    "SMOLTRACE_GPU_EXPORTER_TLS_KEY",
    "SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS",
    "SMOLTRACE_GPU_EXPORTER_METRICS_ADDRESS",
    "SMOLTRACE_GPU_EXPORTER_TOKEN_FILE",
    "SMOLTRACE_GPU_EXPORTER_TLS_CA",
}


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The embedded exporter's environment: only what it uses (its documented settings included)."""
    out = {k: v for k, v in environ.items() if k in _CHILD_ENV_NAMES or k.startswith("LC_")}
    out.update({k: v for k, v in environ.items() if k.startswith(ENV_EXPORTER + "_") and k not in _CHILD_ENV_DROPPED})
    return out


class LocalExporterProcess:
    """A `smoltrace-gpu-exporter` child on free loopback ports (the embedded default).

    It runs in its own session (a terminal Ctrl-C reaches only the runner, which stops the run's
    sampling first and then this child), dies with the runner (parent-death signal on Linux, and
    end-of-file on a pipe it watches everywhere; see `smoltrace.gpu_child`), and requires a bearer
    token that only the runner holds (written to a private file the child reads at start)."""

    def __init__(self, startup_timeout_s: float = 20.0, extra_args: tuple[str, ...] = ()) -> None:
        self.token = secrets.token_urlsafe(32)
        self._token_dir = tempfile.mkdtemp(prefix="smoltrace-exporter-")
        token_file = os.path.join(self._token_dir, "token")
        descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self.token)
        self.ready: dict[str, Any] = {}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smoltrace.gpu_child",
                "--parent-pid",
                str(os.getpid()),
                "--grpc-address",
                "127.0.0.1:0",
                "--metrics-address",
                "127.0.0.1:0",
                "--log-level",
                "WARNING",
                "--auth-token-file",
                token_file,
                *extra_args,
            ],
            stdin=subprocess.PIPE,  # never written: the child watches it for end-of-file
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=child_environment(os.environ),
            start_new_session=True,
        )
        try:
            result: list[str] = []
            reader = threading.Thread(
                target=lambda: result.append(self.process.stdout.readline() if self.process.stdout else ""), daemon=True
            )
            reader.start()
            reader.join(startup_timeout_s)
            line = result[0] if result else ""
            try:
                self.ready = json.loads(line) if line else {}
            except json.JSONDecodeError:
                self.ready = {}
            if self.ready.get("event") != "ready":
                raise RuntimeError(f"the local GPU exporter did not start within {startup_timeout_s:.0f} s")
        except BaseException:  # Ctrl-C while it starts included: no child is left behind
            self.stop()
            raise
        finally:
            shutil.rmtree(self._token_dir, ignore_errors=True)  # read once, at the child's start

    @property
    def pid(self) -> int:
        return self.process.pid

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
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass


@dataclass(frozen=True, slots=True)
class ExporterAccess:
    """How the runner reaches a sidecar exporter: address, bearer token file, TLS CA."""

    address: str | None = None  # None: start one locally (the embedded default)
    token_file: str | None = None
    tls_ca: str | None = None

    @classmethod
    def from_env(cls, address: str | None, token_file: str | None, tls_ca: str | None) -> ExporterAccess:
        return cls(
            address if address is not None else os.environ.get(ENV_EXPORTER) or None,
            token_file if token_file is not None else os.environ.get(ENV_TOKEN_FILE) or None,
            tls_ca if tls_ca is not None else os.environ.get(ENV_TLS_CA) or None,
        )

    def read_token(self) -> str | None:
        if not self.token_file:
            return None
        try:
            token = Path(self.token_file).read_text("utf-8").strip()
        except OSError as err:
            raise GpuScopeError(f"--gpu-exporter-token-file {self.token_file}: {err.strerror}") from err
        if not token:
            raise GpuScopeError(f"--gpu-exporter-token-file {self.token_file} is empty")
        return token

    def read_ca(self) -> bytes | None:
        if not self.tls_ca:
            return None
        try:
            return Path(self.tls_ca).read_bytes()
        except OSError as err:
            raise GpuScopeError(f"--gpu-exporter-tls-ca {self.tls_ca}: {err.strerror}") from err


def sampling_run_id(run_id: str, shard: tuple[int, int] | None = None) -> str:
    """The exporter-side id of this process's sampling: the run id plus a segment tag, unique per
    process. A resumed run samples a new segment on a long-lived sidecar (a stopped id cannot be
    started again), and shards of one run on one node are separate runs to the exporter, so it
    splits their shared GPU between them instead of handing both the same summary."""
    tag = f"/seg-{f's{shard[0]}of{shard[1]}-' if shard else ''}{uuid.uuid4().hex[:8]}"
    return run_id[: 128 - len(tag)] + tag


def _with_secret(message_cls: Any, secret: str, **fields: Any) -> Any:
    """A request carrying the run's secret when the contract has one (StartSamplingResponse.run_secret)."""
    if secret and "run_secret" in message_cls.DESCRIPTOR.fields_by_name:
        fields["run_secret"] = secret
    return message_cls(**fields)


class GpuSession:
    """One run's conversation with the exporter: which GPUs (open), start, heartbeats, stop.

    `open()` resolves the run's GPUs before any task runs and raises GpuScopeError (exit 2) when
    they name devices the exporter does not see; every other failure only costs the GPU metrics."""

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
        *,
        access: ExporterAccess | None = None,
        scope_inputs: ScopeInputs | None = None,
        sampling_id: str | None = None,
    ) -> None:
        self.report = GpuSessionReport(decision.enabled, decision.reason)
        self.run_id = run_id
        self.sampling_id = sampling_id or run_id  # the exporter's run id for this process's segment
        self.report.sampling_run_id = self.sampling_id
        self._access = access or ExporterAccess.from_env(address, None, None)
        self._address = self._access.address
        self._otlp = otlp_endpoint
        self._attributes = dict(resource_attributes or {})
        self._interval_ms = interval_ms
        self._lease = lease_seconds
        self._uuids = gpu_uuids
        self._token = auth_token
        self._scope_inputs = scope_inputs
        self._timeout = rpc_timeout_s
        self._local: LocalExporterProcess | None = None
        self._channel: Any = None
        self._stub: Any = None
        self._secret = ""
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._started = False
        self._opened = False
        self._stopped = False
        self._skip = False  # the scope says: measure nothing

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token}"),) if self._token else ()

    @property
    def local_pid(self) -> int | None:
        return self._local.pid if self._local is not None else None
        self._carbon_g_per_kwh: float = 0.0
        self._pue: float = 1.0

    def _warn(self, message: str) -> None:
        self.report.warning = message
        log.warning("GPU metrics off for this run: %s", message)

    def _note(self, message: str) -> None:
        self.report.notes.append(message)

    # -- which GPUs ---------------------------------------------------------------------------
    def open(self, model: Any = None, remote_server: str | None = None) -> None:
        """Connect (or start the local exporter) and resolve the run's GPUs. Raises GpuScopeError."""
        if self._opened or not self.report.enabled:
            self._opened = True
            return
        self._opened = True
        inputs = self._scope_inputs
        if inputs is not None:
            no_gpu = inputs.says_no_gpu()
            if no_gpu is not None:
                self._set_scope(no_gpu)
                return
        if remote_server and self._address is None:
            self._set_scope(
                GpuScope(
                    SOURCE_REMOTE,
                    (),
                    f"the model server runs on {remote_server}: a local exporter would measure this machine's GPUs, "
                    "not that server's; pass --gpu-exporter HOST:PORT of an exporter beside it",
                    measure=False,
                )
            )
            self.report.warning = self.report.scope["note"] if self.report.scope else None
            return
        if not self._connect():
            return
        if inputs is None:
            return
        try:
            devices, available = self._exporter_devices()
        except Exception as err:  # noqa: BLE001
            self._warn(_describe(err, self._address))
            self._close()
            return
        if not available:
            return  # StartSampling says why (soft mode)
        try:
            scope = resolve_scope(
                inputs,
                devices,
                embedded=self.report.embedded,
                torch_uuids=torch_visible_uuids,
                model_uuids=model_device_uuids(model) if model is not None else (),
            )
        except GpuScopeError:
            self._close()
            raise
        self._set_scope(scope)
        for warning in scope.warnings:
            self._note(f"[WARN] GPU metrics: {warning}")

    def _set_scope(self, scope: GpuScope) -> None:
        self.report.scope = scope.as_dict()
        self._uuids = scope.uuids
        self._skip = not scope.measure
        if self._skip:
            self.report.gpu_available = False

    def _connect(self) -> bool:
        token = self._access.read_token() if self._address is not None else None  # GpuScopeError: exit 2
        ca = self._access.read_ca() if self._address is not None else None
        try:
            import grpc

            from smoltrace_proto import pb_grpc

            if self._address is None:
                self._local = LocalExporterProcess()
                self._address = self._local.address
                self._token = self._local.token
                self.report.embedded = True
            elif token:
                self._token = token
            self.report.exporter = self._address
            if ca is not None:
                self._channel = grpc.secure_channel(self._address, grpc.ssl_channel_credentials(root_certificates=ca))
                self.report.tls = True
            else:
                self._channel = grpc.insecure_channel(self._address)
            self._stub = pb_grpc.GpuExporterStub(self._channel)
        except Exception as err:  # noqa: BLE001 - GPU metrics are never worth failing the run for
            self._warn(_describe(err, self._address))
            self._close()
            return False
        return True

    def _exporter_devices(self) -> tuple[list[ExporterDevice], bool]:
        """The devices the exporter sees: a sampling run of no length (the contract has no device list)."""
        from smoltrace_proto import pb

        probe_id = f"smoltrace-scope-probe-{uuid.uuid4().hex}"
        reply = self._stub.StartSampling(
            pb.StartSamplingRequest(run_id=probe_id, interval_ms=60_000, lease_seconds=5),
            timeout=self._timeout,
            metadata=self._metadata,
        )
        try:
            self._stub.StopSampling(
                _with_secret(pb.StopSamplingRequest, getattr(reply, "run_secret", ""), run_id=probe_id),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        except Exception as err:  # noqa: BLE001 - its lease ends it anyway
            log.debug("stopping the scope probe failed: %s", err)
        devices = [
            ExporterDevice(
                d.index,
                d.uuid,
                d.name,
                d.memory_total_bytes,
                is_mig=d.is_mig,
                parent_uuid=d.parent_uuid,
                mig_index=d.mig_index if d.HasField("mig_index") else -1,
            )
            for d in reply.devices
        ]
        return devices, bool(reply.gpu_available)

    # -- sampling -----------------------------------------------------------------------------
    def start(self, otlp_endpoint: str | None = None, otlp_headers: Mapping[str, str] | None = None) -> None:
        """`otlp_headers`: what the exporter sends with the run's OTLP pushes (the collector's bearer token)."""
        if not self.report.enabled:
            return
        if otlp_endpoint is not None:
            self._otlp = otlp_endpoint
        extra: dict[str, Any] = {"otlp_headers": dict(otlp_headers)} if otlp_headers else {}
        if not self._opened:
            try:
                self.open()
            except GpuScopeError as err:
                self._warn(str(err))
                return
        if self._skip or self._stub is None:
            return
        try:
            from smoltrace_proto import pb

            reply = self._stub.StartSampling(
                pb.StartSamplingRequest(
                    run_id=self.sampling_id,
                    interval_ms=self._interval_ms,
                    gpu_uuids=list(self._uuids),
                    otlp_endpoint=self._otlp,
                    resource_attributes=self._attributes,
                    lease_seconds=self._lease,
                    **extra,
                ),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        except Exception as err:  # noqa: BLE001 - GPU metrics are never worth failing the run for
            self._warn(_describe(err, self._address))
            self._close()
            return
        self._started = True
        self._secret = getattr(reply, "run_secret", "") or ""
        self._carbon_g_per_kwh = reply.carbon_intensity_g_per_kwh
        self._pue = reply.pue or 1.0
        self.report.gpu_available = reply.gpu_available
        self.report.devices = [_device_dict(d) for d in reply.devices]
        if not reply.gpu_available:
            self.report.warning = reply.message or "no GPU available to the exporter"
        self._heartbeat = threading.Thread(target=self._beat, name="smoltrace-gpu-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        from smoltrace_proto import pb

        period = max(1.0, self._lease / 3.0)
        while not self._stop_heartbeat.wait(period):
            try:
                self._stub.Heartbeat(
                    _with_secret(pb.HeartbeatRequest, self._secret, run_id=self.sampling_id), timeout=self._timeout, metadata=self._metadata
                )
            except Exception as err:  # noqa: BLE001 - keep trying; the stop will tell
                log.warning("GPU exporter heartbeat failed: %s", _describe(err, self._address))

    def live(self) -> tuple[float, float] | None:
        """(energy J, CO2 g) of this run so far, from the exporter's live state (GetRun); None
        when sampling is not on or the exporter does not answer."""
        if not self._started or not self.report.gpu_available:
            return None
        try:
            from smoltrace_proto import pb

            state = self._stub.GetRun(
                _with_secret(pb.GetRunRequest, self._secret, run_id=self.sampling_id), timeout=self._timeout, metadata=self._metadata
            )
        except Exception as err:  # noqa: BLE001 - a budget check never fails the run
            log.warning("GPU exporter GetRun failed: %s", _describe(err, self._address))
            return None
        energy = float(state.energy_joules)
        return energy, energy / 3.6e6 * self._carbon_g_per_kwh * self._pue

    def stop(self) -> GpuSessionReport:
        """Stop sampling (keeping the summary), then the local exporter. Idempotent; every exit path
        of a run calls it (`finally`)."""
        if self._stopped:
            return self.report
        self._stopped = True
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=self._timeout)
        if self._started:
            try:
                from smoltrace_proto import pb

                summary = self._stub.StopSampling(
                    _with_secret(pb.StopSamplingRequest, self._secret, run_id=self.sampling_id),
                    timeout=self._timeout + 5,
                    metadata=self._metadata,
                )
                # the run's summary: under the run's id (the segment's id is sampling_run_id)
                self.report.summary = {**_summary_dict(summary), "run_id": self.run_id}
            except Exception as err:  # noqa: BLE001
                self._warn(f"StopSampling failed, no GPU summary: {_describe(err, self._address)}")
        self._close()
        return self.report

    def _close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._stub = None
        if self._local is not None:
            self._local.stop()
            self._local = None


def _device_dict(device: Any) -> dict[str, Any]:
    """A device of the run for metadata; a MIG instance also says so, with its parent and slot."""
    out: dict[str, Any] = {"index": device.index, "uuid": device.uuid, "name": device.name, "memory_total_bytes": device.memory_total_bytes}
    if device.is_mig:
        out.update(is_mig=True, parent_uuid=device.parent_uuid, mig_index=device.mig_index)
    return out


def _describe(err: BaseException, address: str | None) -> str:
    code = getattr(err, "code", None)
    if callable(code):
        try:
            details = err.details()  # type: ignore[attr-defined]
            return f"exporter at {address} answered {code().name}: {details}"
        except Exception:  # noqa: BLE001
            pass
    return f"{type(err).__name__}: {err}"
