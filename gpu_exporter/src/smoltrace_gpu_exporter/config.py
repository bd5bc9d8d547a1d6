"""Exporter configuration: command-line flags, each with an environment variable behind it."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .endpoints import AllowList, EndpointError
from .energy import DEFAULT_CARBON_INTENSITY_G_PER_KWH, DEFAULT_POWER_COST_USD_PER_KWH, DEFAULT_PUE

ENV_PREFIX = "SMOLTRACE_GPU_EXPORTER_"
METRICS_SCOPES = ("node", "runs")


class ConfigError(ValueError):
    """A bad flag or environment value; the CLI prints it and exits 2."""


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    grpc_address: str = "127.0.0.1:50051"
    metrics_address: str = "127.0.0.1:9402"
    backend: str = "nvml"  # "nvml" or "simulated[:N][,mig=I:K]..."
    idle_interval_ms: int = 15_000
    otlp_endpoint: str = ""
    otlp_allow: str = ""  # comma-separated hosts, host:port or CIDR networks runs may push OTLP to
    otlp_export_interval_ms: int = 5_000
    otlp_timeout_s: float = 2.0
    carbon_intensity: float = DEFAULT_CARBON_INTENSITY_G_PER_KWH
    pue: float = DEFAULT_PUE
    power_cost_per_kwh: float = DEFAULT_POWER_COST_USD_PER_KWH
    auth_token_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    log_level: str = "INFO"
    metrics_scope: str = "node"  # "node": every GPU on /metrics; "runs": only the GPUs of this exporter's runs (sidecar)

    def simulated_count(self) -> int | None:
        """N for `simulated[:N][,mig=I:K...]`, None for nvml."""
        spec = self.simulated_spec()
        return None if spec is None else spec[0]

    def simulated_spec(self) -> tuple[int, dict[int, int]] | None:
        """(N, {GPU index: MIG instances}) for `simulated[:N][,mig=I:K]...`, None for nvml."""
        if self.backend == "nvml":
            return None
        match = re.fullmatch(r"simulated(?::(\d+))?((?:,mig=\d+:\d+)*)", self.backend)
        if not match:
            raise ConfigError(
                f"--backend must be 'nvml' or 'simulated[:N]' (add ',mig=GPU:INSTANCES' to split a GPU into MIG instances), got {self.backend!r}"
            )
        count = int(match.group(1) or 1)
        if not 1 <= count <= 64:
            raise ConfigError(f"--backend simulated:N needs 1 <= N <= 64, got {count}")
        mig: dict[int, int] = {}
        for gpu_text, instances_text in re.findall(r",mig=(\d+):(\d+)", match.group(2)):
            gpu, instances = int(gpu_text), int(instances_text)
            if gpu >= count or gpu in mig:
                raise ConfigError(f"--backend {self.backend}: mig={gpu}:... names GPU {gpu} twice or beyond GPUs 0..{count - 1}")
            if not 1 <= instances <= 7:
                raise ConfigError(f"--backend {self.backend}: mig={gpu}:{instances} needs 1..7 MIG instances")
            mig[gpu] = instances
        return count, mig

    def allow_list(self) -> AllowList:
        return AllowList.parse(self.otlp_allow, self.otlp_endpoint)

    def read_auth_token(self) -> str | None:
        if not self.auth_token_file:
            return None
        try:
            token = Path(self.auth_token_file).read_text().strip()
        except OSError as err:
            raise ConfigError(f"cannot read --auth-token-file {self.auth_token_file}: {err.strerror}") from err
        if not token:
            raise ConfigError(f"--auth-token-file {self.auth_token_file} is empty")
        return token

    def read_tls(self) -> tuple[bytes, bytes] | None:
        if not self.tls_cert and not self.tls_key:
            return None
        if not (self.tls_cert and self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        try:
            return Path(self.tls_cert).read_bytes(), Path(self.tls_key).read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read TLS file {err.filename}: {err.strerror}") from err

    def validate(self) -> ExporterConfig:
        self.simulated_spec()
        split_address(self.grpc_address, "--grpc-address")
        split_address(self.metrics_address, "--metrics-address")
        if not 50 <= self.idle_interval_ms <= 3_600_000:
            raise ConfigError(f"--idle-interval-ms must be 50..3600000, got {self.idle_interval_ms}")
        if not 100 <= self.otlp_export_interval_ms <= 600_000:
            raise ConfigError(f"--otlp-export-interval-ms must be 100..600000, got {self.otlp_export_interval_ms}")
        if not 0 < self.otlp_timeout_s <= 60:
            raise ConfigError(f"--otlp-timeout must be in (0, 60] seconds, got {self.otlp_timeout_s}")
        if not 0 <= self.carbon_intensity <= 5000:
            raise ConfigError(f"--carbon-intensity must be 0..5000 gCO2e/kWh, got {self.carbon_intensity}")
        if not 1.0 <= self.pue <= 10:
            raise ConfigError(f"--pue must be 1.0..10, got {self.pue}")
        if not 0 <= self.power_cost_per_kwh <= 100:
            raise ConfigError(f"--power-cost-per-kwh must be 0..100 USD, got {self.power_cost_per_kwh}")
        try:
            self.allow_list()
        except EndpointError as err:
            raise ConfigError(str(err)) from err
        if self.metrics_scope not in METRICS_SCOPES:
            raise ConfigError(f"--metrics-scope must be {' or '.join(METRICS_SCOPES)}, got {self.metrics_scope!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level}")
        return self


def split_address(address: str, flag: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); port 0 = any free port."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s]+):(\d+)", address)
    if not match:
        raise ConfigError(f"{flag} must be HOST:PORT, got {address!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ConfigError(f"{flag}: port must be 0..65535, got {port}")
    return host, port


_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    # (flag, field, type, help)
    ("--grpc-address", "grpc_address", str, "gRPC control API HOST:PORT (default 127.0.0.1:50051; port 0 = any free port)"),
    ("--metrics-address", "metrics_address", str, "Prometheus /metrics HOST:PORT (default 127.0.0.1:9402)"),
    (
        "--backend",
        "backend",
        str,
        "nvml (default) or simulated[:N] for N simulated GPUs (demos, tests); ',mig=I:K' splits simulated GPU I into K MIG instances",
    ),
    ("--idle-interval-ms", "idle_interval_ms", int, "sampling interval when no run is active (default 15000)"),
    ("--otlp-endpoint", "otlp_endpoint", str, "default OTLP/gRPC endpoint for runs that name none (default: none)"),
    (
        "--otlp-allow",
        "otlp_allow",
        str,
        "hosts (host, host:port or CIDR, comma-separated) a run's otlp_endpoint may name, besides loopback and "
        "the --otlp-endpoint host (default: those only)",
    ),
    ("--otlp-export-interval-ms", "otlp_export_interval_ms", int, "how often queued run samples are pushed (default 5000)"),
    ("--otlp-timeout", "otlp_timeout_s", float, "seconds one OTLP export may take (default 2)"),
    ("--carbon-intensity", "carbon_intensity", float, "default grid carbon intensity, gCO2e/kWh (default 475)"),
    ("--pue", "pue", float, "default data-centre PUE (default 1.0)"),
    ("--power-cost-per-kwh", "power_cost_per_kwh", float, "default electricity price, USD/kWh (default 0.12)"),
    ("--auth-token-file", "auth_token_file", str, "require 'authorization: Bearer <token>' with the token in this file"),
    ("--tls-cert", "tls_cert", str, "PEM certificate for gRPC TLS (with --tls-key)"),
    ("--tls-key", "tls_key", str, "PEM private key for gRPC TLS"),
    ("--log-level", "log_level", str, "DEBUG, INFO (default), WARNING or ERROR"),
    (
        "--metrics-scope",
        "metrics_scope",
        str,
        "GPUs on /metrics: node (default; every GPU, for a node-wide exporter/DaemonSet) or runs (only the GPUs of this "
        "exporter's runs, for a sidecar: several sidecars on one node never export a GPU twice)",
    ),
)


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoltrace-gpu-exporter",
        description="GPU-exporter sidecar: samples NVML for each evaluation run it is asked to (gRPC), "
        "pushes the run's GPU/energy/CO2 metrics over OTLP and serves Prometheus /metrics.",
        epilog="Every flag can also be set through the environment variable "
        f"{ENV_PREFIX}<FLAG> (for example {env_name('grpc_address')}); flags win. "
        "OTEL_RESOURCE_ATTRIBUTES is added to every OTLP resource.",
    )
    for flag, field_name, kind, help_text in _FLAGS:
        parser.add_argument(flag, dest=field_name, type=kind, default=None, help=f"{help_text} [env {env_name(field_name)}]")
    parser.add_argument("--version", action="version", version=f"smoltrace-gpu-exporter {__version__}")
    return parser


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ExporterConfig:
    """Flags, else environment, else defaults. Raises ConfigError; argparse exits 2 on bad syntax."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}
    for _flag, field_name, kind, _ in _FLAGS:
        value = getattr(args, field_name)
        if value is None and env_name(field_name) in environ:
            raw = environ[env_name(field_name)]
            try:
                value = kind(raw)
            except ValueError as err:
                raise ConfigError(f"{env_name(field_name)}={raw!r} is not a valid {kind.__name__}") from err
        if value is not None:
            values[field_name] = value
    if "otlp_endpoint" not in values:  # the standard OpenTelemetry variables, metrics one first
        standard = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if standard:
            values["otlp_endpoint"] = standard
    return ExporterConfig(**values).validate()  # type: ignore[arg-type]
