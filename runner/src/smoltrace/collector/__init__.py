"""The collector: receives OTLP (spans from the runner, GPU metrics from the exporter), keeps
them per run, and merges them into the run's documents. Embedded in the runner by default;
`smoltrace-collector` runs it on its own."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .documents import (
    energy_series,
    gpu_resource_metrics,
    metric_rows,
    metrics_json,
    relabel_run,
    spans_from_requests,
    trace_documents,
)
from .forward import Forwarder
from .receiver import OtlpGrpcReceiver, OtlpIngest
from .store import DEFAULT_MAX_SPILL_BYTES, RunStore

__all__ = ["Collector", "Forwarder", "RunTelemetry"]


@dataclass(slots=True)
class RunTelemetry:
    run_id: str
    traces: list[dict[str, Any]] = field(default_factory=list)
    metrics_json: dict[str, Any] = field(default_factory=dict)
    metric_rows: list[dict[str, Any]] = field(default_factory=list)
    energy_series: list[tuple[int, float]] = field(default_factory=list)
    spans: int = 0
    data_points: int = 0


class Collector:
    def __init__(
        self,
        address: str = "127.0.0.1:0",
        *,
        forward_url: str | None = None,
        forward_protocol: str = "grpc",
        max_memory_bytes: int = 256 * 1024 * 1024,
        spill_dir: Path | None = None,
        max_spill_bytes: int = DEFAULT_MAX_SPILL_BYTES,
        token: str | None = None,
        accept_run_ids: Collection[str] | None = None,
        forward_as: Mapping[str, str] | None = None,
    ) -> None:
        """`token`: OTLP calls must carry `authorization: Bearer <token>`; `accept_run_ids`: data
        for any other run.id is dropped and counted (the embedded collector takes its own run only)."""
        self.token = token
        self.store = RunStore(max_memory_bytes, spill_dir, max_spill_bytes)
        self.forwarder = Forwarder(forward_url, forward_protocol) if forward_url else None
        self.ingest = OtlpIngest(self.store, self.forwarder, accept_run_ids, forward_as)
        self.receiver = OtlpGrpcReceiver(self.ingest, address, token=token)

    @property
    def endpoint(self) -> str:
        """host:port the SDK and the exporter send OTLP/gRPC to."""
        return self.receiver.endpoint

    def start(self) -> Collector:
        self.receiver.start()
        return self

    def run_telemetry(self, run_id: str, metrics_run_id: str | None = None) -> RunTelemetry:
        """Everything received for the run so far, merged. `metrics_run_id`: the run.id the GPU
        exporter labels this process's samples with (a segment of the run), when not the run's."""
        spans = spans_from_requests(self.store.iter_payloads(run_id, "traces"))  # streamed, never loaded whole
        metrics_id = metrics_run_id or run_id
        resource_metrics = gpu_resource_metrics(self.store.iter_payloads(metrics_id, "metrics"))
        if metrics_id != run_id:
            resource_metrics = relabel_run(resource_metrics, run_id, metrics_id)
        return RunTelemetry(
            run_id=run_id,
            traces=trace_documents(spans, run_id),
            metrics_json=metrics_json(resource_metrics, run_id),
            metric_rows=metric_rows(resource_metrics, run_id),
            energy_series=energy_series(resource_metrics),
            spans=len(spans),
            data_points=self.store.runs().get(metrics_id, {}).get("data_points", 0),
        )

    def stop(self, grace: float = 1.0) -> None:
        self.receiver.stop(grace)
        if self.forwarder is not None:
            self.forwarder.close()
        self.store.close()
