"""The exporter assembled: backend -> sampler -> run registry -> gRPC, /metrics and OTLP.

`ExporterApp` is the composition root used by the CLI and by in-process tests. It holds no
process-global state: two apps in one process do not see each other.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .config import ConfigError, ExporterConfig, split_address
from .nvml import NvmlBackend, PynvmlBackend
from .otlp import OtlpPublisher
from .prometheus import ExporterCollector, MetricsServer, make_registry
from .runs import RunDefaults, RunRegistry, RunSummary, StopReason
from .sampler import Sampler
from .service import GpuExporterService, build_server
from .simulated import SimulatedBackend

log = logging.getLogger(__name__)


def make_backend(config: ExporterConfig) -> NvmlBackend:
    spec = config.simulated_spec()
    return PynvmlBackend() if spec is None else SimulatedBackend(spec[0], mig=spec[1])


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    grpc: str
    metrics: str


class ExporterApp:
    def __init__(self, config: ExporterConfig, backend: NvmlBackend | None = None) -> None:
        self.config = config
        self.backend = backend or make_backend(config)
        self.defaults = RunDefaults(
            carbon_intensity_g_per_kwh=config.carbon_intensity,
            pue=config.pue,
            power_cost_per_kwh=config.power_cost_per_kwh,
            otlp_endpoint=config.otlp_endpoint,
            otlp_allow=config.allow_list(),
        )
        self.sampler = Sampler(self.backend, idle_interval_s=config.idle_interval_ms / 1000.0)
        self.registry = RunRegistry(self.sampler, self.defaults)
        self.publisher = OtlpPublisher(
            self.registry.active_runs,
            simulated=self.backend.simulated,
            interval_s=config.otlp_export_interval_ms / 1000.0,
            timeout_s=config.otlp_timeout_s,
        )
        self.registry.set_finalizer(self.publisher.finalize)
        self.service = GpuExporterService(self.registry)
        self._grpc = None
        self._health = None
        self._metrics: MetricsServer | None = None
        self.addresses: BoundAddresses | None = None

    def start(self) -> BoundAddresses:
        tls = self.config.read_tls()
        token = self.config.read_auth_token()
        self.service.set_auth_token(token)
        host, _ = split_address(self.config.grpc_address, "--grpc-address")
        m_host, m_port = split_address(self.config.metrics_address, "--metrics-address")
        try:
            server, grpc_port, health = build_server(
                self.service,
                self.config.grpc_address,
                auth_token=token,
                tls_cert=tls[0] if tls else None,
                tls_key=tls[1] if tls else None,
            )
        except (OSError, RuntimeError) as err:  # grpcio raises RuntimeError("Failed to bind ...")
            raise ConfigError(f"cannot listen on --grpc-address {self.config.grpc_address} (in use, or not a local address)") from err
        collector = ExporterCollector(self.sampler, self.registry, self.publisher, self.defaults, self.config.metrics_scope)
        try:
            self._metrics = MetricsServer(make_registry(collector), m_host, m_port)
        except OSError as err:
            server.stop(None)
            raise ConfigError(f"cannot listen on --metrics-address {self.config.metrics_address}: {err.strerror or err}") from err
        self.sampler.start()
        self.publisher.start()
        self._metrics.start()
        server.start()
        self._grpc, self._health = server, health
        self.addresses = BoundAddresses(
            grpc=_join(host, grpc_port),
            metrics=_join(m_host, self._metrics.port),
        )
        return self.addresses

    def stop(self, deadline_s: float = 4.0) -> list[RunSummary]:
        """Stop every live run (summaries kept), flush OTLP, close the servers; within deadline_s."""
        end = time.monotonic() + deadline_s
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        self.publisher.begin_shutdown()  # the runs stopped now are flushed together, within the deadline
        self.sampler.stop(timeout=1.0, shutdown_backend=False)  # no more periodic sweeps competing with the stop
        summaries = self.registry.stop_all(StopReason.SHUTDOWN)
        for summary in summaries:
            log.info("run %s stopped at shutdown: %.1f J", summary.run_id, summary.energy_joules)
        self.publisher.stop(deadline_s=max(0.1, end - time.monotonic() - 1.0))
        if self._grpc is not None:
            self._grpc.stop(grace=max(0.0, min(1.0, end - time.monotonic()))).wait(timeout=1.0)
        if self._metrics is not None:
            self._metrics.stop()
        self.sampler.stop(timeout=1.0)
        return summaries


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
