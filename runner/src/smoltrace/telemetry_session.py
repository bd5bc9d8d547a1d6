"""A run's telemetry plumbing: the embedded collector, tracing, and what ended incomplete.

Started when the run traces (`--enable-otel`) or measures the GPU: the collector receives the
runner's spans and the exporter's GPU metrics; `finish()` flushes the spans and merges what the
collector holds for the run. Nothing here can fail the evaluation: a collector that cannot start
or an export that fails becomes a warning and a line in metadata.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from .collector import Collector, RunTelemetry
from .config import EvalConfig
from .costs import LOCAL_PROVIDERS
from .gpu import otel_console_line
from .notices import Notices
from .redact import Redactor

log = logging.getLogger(__name__)


class RunTelemetrySession:
    def __init__(
        self,
        config: EvalConfig,
        gpu_enabled: bool,
        redactor: Redactor,
        notices: Notices | None = None,
        gpu_sampling_id: str | None = None,
    ) -> None:
        """`gpu_sampling_id`: the run.id the GPU exporter labels this process's samples with (its
        segment of the run, smoltrace.gpu.sampling_run_id); accepted besides the run's own id."""
        self.gpu_sampling_id = gpu_sampling_id
        self.config = config
        self.notices = notices or Notices()
        self.gpu_enabled = gpu_enabled
        self.redactor = redactor
        self.collector: Collector | None = None
        self.tracing: Any = None
        self.advertised_endpoint: str | None = None
        self.token: str | None = None  # the collector's bearer token, when it is advertised
        self.report: dict[str, Any] = {"collector": None, "tracing": False, "warnings": []}

    def _warn(self, message: str) -> None:
        message = self.redactor.scrub(message)
        self.report["warnings"].append(message)
        self.notices.warn(message)

    def start(self) -> None:
        cfg = self.config
        if not (cfg.enable_otel or self.gpu_enabled):
            return
        # advertised to a sidecar (it listens beyond loopback): only the holders of this run's token
        # (the runner's tracing, the exporter told in StartSampling) may send; any run.id but this
        # run's is dropped and counted either way
        if cfg.collector_advertise:
            self.token = secrets.token_urlsafe(32)
        try:
            self.collector = Collector(
                cfg.collector_address,
                forward_url=cfg.otlp_forward,
                forward_protocol=cfg.otlp_forward_protocol,
                max_spill_bytes=cfg.max_spill_mb * 1024 * 1024,
                spill_dir=self._spill_dir(),
                token=self.token,
                accept_run_ids=(cfg.run_id, self.gpu_sampling_id) if self.gpu_sampling_id else (cfg.run_id,),
                forward_as={self.gpu_sampling_id: cfg.run_id} if self.gpu_sampling_id else None,
            ).start()
        except (OSError, RuntimeError, ValueError) as err:
            self._warn(f"the OTLP collector could not start on {cfg.collector_address} ({err}); no traces or GPU time series for this run")
            return
        self.advertised_endpoint = cfg.collector_advertise or self.collector.endpoint
        self.report["collector"] = {
            "endpoint": self.collector.endpoint,
            "advertised": self.advertised_endpoint,
            "forward": cfg.otlp_forward,
            "token": self.token is not None,
        }
        if cfg.enable_otel:
            self._start_tracing()

    def _spill_dir(self) -> Path | None:
        """The run's own folder under --collector-spill-dir (None: a temporary folder, removed at stop)."""
        cfg = self.config
        return Path(cfg.collector_spill_dir) / cfg.run_id.replace("/", "_") if cfg.collector_spill_dir else None

    @property
    def otlp_headers(self) -> dict[str, str] | None:
        """What the exporter must send with the run's GPU metrics (StartSampling.otlp_headers)."""
        return {"authorization": f"Bearer {self.token}"} if self.token else None

    def _start_tracing(self) -> None:
        from .models import ollama_base
        from .telemetry import RunTracing, install_router, instrument_libraries

        cfg = self.config
        assert self.collector is not None
        try:
            if not install_router():
                self._warn("another OpenTelemetry tracer provider was installed first: library spans may not reach this run")
            ollama_url = ollama_base(cfg.api_base) if cfg.provider == "ollama" else None
            instrumented = instrument_libraries(cfg.provider, self.collector.endpoint, ollama_url)
            self.tracing = RunTracing(
                cfg.run_id,
                self.collector.endpoint,
                {"smoltrace.model": cfg.model, "smoltrace.provider": cfg.provider, "smoltrace.agent_type": cfg.agent_type},
                redactor=self.redactor,
                headers=self.otlp_headers,
                price_model_spans=cfg.provider not in LOCAL_PROVIDERS,
            )
            self.tracing.activate({"smoltrace.model": cfg.model, "smoltrace.provider": cfg.provider, "run.id": cfg.run_id})
        except Exception as err:
            log.debug("tracing setup failed", exc_info=True)
            self._warn(f"tracing could not start ({type(err).__name__}: {err}); the run goes on without traces")
            self.tracing = None
            return
        self.report["tracing"] = True
        self.report["instrumented"] = instrumented
        print(otel_console_line(self.gpu_enabled), flush=True)

    def finish(self, flush_timeout_s: float = 5.0) -> RunTelemetry:
        cfg = self.config
        empty = RunTelemetry(run_id=cfg.run_id, metrics_json={"run_id": cfg.run_id, "resourceMetrics": []})
        if self.tracing is not None:
            try:
                flushed = self.tracing.close(flush_timeout_s)
            except Exception as err:
                flushed = False
                log.debug("tracing close failed", exc_info=True)
                self._warn(f"flushing spans failed: {err}")
            self.report["spans_flushed"] = flushed
            if not flushed:
                self._warn("not every span reached the collector within the flush timeout: traces may be incomplete")
        if self.collector is None:
            return empty
        try:
            collected = self.collector.run_telemetry(cfg.run_id, metrics_run_id=self.gpu_sampling_id)
            self.report["received"] = {"spans": collected.spans, "traces": len(collected.traces), "gpu_data_points": collected.data_points}
            forwarder = self.collector.forwarder
            if forwarder is not None:
                forwarder.flush(flush_timeout_s)
                self.report["forwarded"] = {
                    "sent": forwarder.stats.sent,
                    "failed": forwarder.stats.failed,
                    "dropped": forwarder.stats.dropped,
                }
            return collected
        except Exception as err:
            log.debug("merging telemetry failed", exc_info=True)
            self._warn(f"merging the run's telemetry failed ({type(err).__name__}: {err})")
            return empty
        finally:
            try:
                self.collector.stop(grace=0.5)
                spill = self._spill_dir()
                if spill is not None:  # a given --collector-spill-dir outlives the process: leave nothing there
                    self.collector.store.drop(cfg.run_id)
                    if spill.is_dir() and not any(spill.iterdir()):
                        spill.rmdir()
            except Exception:
                log.debug("collector stop failed", exc_info=True)
