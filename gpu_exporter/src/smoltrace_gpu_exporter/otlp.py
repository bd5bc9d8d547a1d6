"""OTLP push of each run's samples to the run's collector.

Every sweep a run records is queued (bounded) and exported as OTLP metrics with one data point per
GPU per sweep, timestamped when it was read: nothing is averaged away between pushes. A background
thread pushes every few seconds; StopSampling flushes what is left before it returns, unless the
collector was unreachable on the last try, in which case the background thread keeps retrying so
an unreachable collector never blocks sampling or the gRPC API. Samples that do not fit the queue
are dropped and counted.

Metric names and units are those of genai-otel-instrument: gen_ai.gpu.utilization (%),
gen_ai.gpu.memory.used / .total (MiB), gen_ai.gpu.temperature (Cel), gen_ai.gpu.power (W) as
gauges; gen_ai.gpu.energy (J), gen_ai.co2.emissions (gCO2e), gen_ai.power.cost (USD) as cumulative
sums from the run's start. Data-point attributes: gpu_id, gpu_name, gpu_uuid (a MIG instance:
its MIG UUID, its parent's index as gpu_id, and gpu_parent_uuid; its utilisation, temperature and
power are the parent's, its energy the run's memory share of the parent's).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from . import __version__
from .energy import co2_grams, power_cost_usd
from .runs import PendingSample, Run

log = logging.getLogger(__name__)

SCOPE = InstrumentationScope("smoltrace.gpu", __version__)
SERVICE_NAME = "smoltrace-gpu-exporter"
_MIB = 1024 * 1024
MAX_FLUSH_THREADS = 8  # final flush at shutdown: endpoints are flushed this many at a time


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    unit: str
    description: str
    cumulative: bool = False


UTILIZATION = MetricSpec("gen_ai.gpu.utilization", "%", "GPU utilisation (time a kernel was running)")
MEMORY_USED = MetricSpec("gen_ai.gpu.memory.used", "MiB", "GPU memory in use")
MEMORY_TOTAL = MetricSpec("gen_ai.gpu.memory.total", "MiB", "GPU memory in total")
TEMPERATURE = MetricSpec("gen_ai.gpu.temperature", "Cel", "GPU temperature")
POWER = MetricSpec("gen_ai.gpu.power", "W", "GPU power draw")
ENERGY = MetricSpec("gen_ai.gpu.energy", "J", "GPU energy used since the run started", cumulative=True)
CO2 = MetricSpec("gen_ai.co2.emissions", "gCO2e", "CO2 emitted for the GPU energy since the run started", cumulative=True)
COST = MetricSpec("gen_ai.power.cost", "USD", "Electricity cost of the GPU energy since the run started", cumulative=True)
ALL_METRICS = (UTILIZATION, MEMORY_USED, MEMORY_TOTAL, TEMPERATURE, POWER, ENERGY, CO2, COST)


def base_resource() -> Resource:
    """service.name and host.name over OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME. Resource.create
    runs the detectors on a thread pool of its own: once per publisher, never once per run."""
    return Resource.create({"service.name": SERVICE_NAME, "host.name": socket.gethostname()})


def run_resource(run: Run, simulated: bool, base: Resource | None = None) -> Resource:
    """The base resource, then the run's own attributes, run.id and gpu.simulated (ours win)."""
    attributes: dict[str, str | bool] = dict(run.params.resource_attributes)
    attributes["service.name"] = SERVICE_NAME
    attributes["run.id"] = run.run_id
    if simulated:
        attributes["gpu.simulated"] = True
    return (base or base_resource()).merge(Resource(attributes))


def build_metrics_data(run: Run, samples: Sequence[PendingSample], resource: Resource) -> MetricsData:
    """One OTLP ResourceMetrics for the run, one data point per device per sample."""
    points: dict[str, list[NumberDataPoint]] = {spec.name: [] for spec in ALL_METRICS}
    start_ns = run.start_unix_ns
    ci, pue, price = run.params.carbon_intensity_g_per_kwh, run.params.pue, run.params.power_cost_per_kwh
    for sample in samples:
        ts = sample.timestamp_ns
        for reading, energy in sample.readings:
            attrs = {"gpu_id": str(reading.index), "gpu_name": reading.name, "gpu_uuid": reading.uuid}
            if reading.is_mig:  # gpu_id is the parent's index; utilisation, temperature and power are the parent's
                attrs["gpu_parent_uuid"] = reading.parent_uuid
            memory_used = None if reading.memory_used_bytes is None else reading.memory_used_bytes / _MIB
            for spec, value in (
                (UTILIZATION, reading.utilization_percent),
                (MEMORY_USED, memory_used),
                (MEMORY_TOTAL, reading.memory_total_bytes / _MIB),
                (TEMPERATURE, reading.temperature_celsius),
                (POWER, reading.power_watts),
                (ENERGY, energy),
                (CO2, co2_grams(energy, ci, pue)),
                (COST, power_cost_usd(energy, price)),
            ):
                if value is not None:
                    points[spec.name].append(NumberDataPoint(attrs, start_ns, ts, value))
    metrics = []
    for spec in ALL_METRICS:
        data_points = points[spec.name]
        if not data_points:
            continue
        data = Sum(data_points, AggregationTemporality.CUMULATIVE, is_monotonic=True) if spec.cumulative else Gauge(data_points)
        metrics.append(Metric(spec.name, spec.description, spec.unit, data))
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(SCOPE, metrics, "")], "")])


Headers = tuple[tuple[str, str], ...]
ExporterFactory = Callable[[str, float, Headers], MetricExporter]


def default_exporter_factory(endpoint: str, timeout_s: float, headers: Headers = ()) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    secure = endpoint.startswith("https://")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return OTLPMetricExporter(endpoint=endpoint, insecure=not secure, timeout=timeout_s, headers=dict(headers) or None)


def _target(run: Run) -> tuple[str, Headers]:
    """One OTLP client per (endpoint, the run's headers): runs with the same collector token share it."""
    return run.params.otlp_endpoint, run.params.otlp_headers


@dataclass
class PublisherStats:
    exported_samples: int = 0
    dropped_samples: int = 0
    export_failures: int = 0


class OtlpPublisher:
    """Pushes every run's queued samples to its endpoint; one background thread for all runs."""

    def __init__(
        self,
        runs: Callable[[], list[Run]],
        simulated: bool,
        interval_s: float = 5.0,
        timeout_s: float = 2.0,
        exporter_factory: ExporterFactory = default_exporter_factory,
    ) -> None:
        self._runs = runs
        self._simulated = simulated
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._factory = exporter_factory
        self._exporters: dict[tuple[str, Headers], MetricExporter] = {}
        self._unhealthy: set[str] = set()
        self._resources: dict[str, Resource] = {}
        self._base_resource: Resource | None = None
        self._draining: list[Run] = []  # stopped runs with samples still to push
        self._dropped_seen: dict[str, int] = {}  # run id -> its drops already added to stats
        self._lock = threading.Lock()
        self._export_locks: dict[str, threading.Lock] = {}  # one export at a time per endpoint
        self._stop = threading.Event()
        self._shutting_down = False
        self._thread: threading.Thread | None = None
        self.stats = PublisherStats()

    def _exporter(self, target: tuple[str, Headers]) -> MetricExporter:
        with self._lock:
            exporter = self._exporters.get(target)
            if exporter is None:
                exporter = self._factory(target[0], self.timeout_s, target[1])
                self._exporters[target] = exporter
            return exporter

    @property
    def client_count(self) -> int:
        """OTLP clients held now (one per endpoint and header set of a live or draining run)."""
        with self._lock:
            return len(self._exporters)

    def _resource(self, run: Run) -> Resource:
        resource = self._resources.get(run.run_id)
        if resource is None:
            if self._base_resource is None:
                self._base_resource = base_resource()
            resource = run_resource(run, self._simulated, self._base_resource)
            self._resources[run.run_id] = resource
        return resource

    def _export_lock(self, endpoint: str) -> threading.Lock:
        with self._lock:
            return self._export_locks.setdefault(endpoint, threading.Lock())

    def push_run(self, run: Run, skip_unhealthy: bool = False) -> bool:
        """Export what the run has queued. Returns False when the export failed (samples kept).

        skip_unhealthy: give up without trying when the endpoint is (or, after waiting for a push
        in flight to it, turns out to be) unreachable, so a caller never waits twice."""
        endpoint = run.params.otlp_endpoint
        if not endpoint:  # nowhere to send: the samples only feed the summary and WatchRun
            run.take_pending()
            return True
        batch = run.take_pending()
        if not batch:
            self._count_drops(run)
            return True
        data = build_metrics_data(run, batch, self._resource(run))
        with self._export_lock(endpoint):  # the endpoint's health is settled before the next caller looks
            if skip_unhealthy and endpoint in self._unhealthy:
                run.return_pending(batch)
                self._count_drops(run)
                return False
            result = self._export(_target(run), data)
            was_healthy = endpoint not in self._unhealthy
            if result is MetricExportResult.SUCCESS:
                self._unhealthy.discard(endpoint)
            else:
                self._unhealthy.add(endpoint)
        if result is MetricExportResult.SUCCESS:
            run.otlp_exported += len(batch)
            self.stats.exported_samples += len(batch)
            self._count_drops(run)
            return True
        self.stats.export_failures += 1
        if was_healthy:
            log.warning("OTLP collector %s unreachable; keeping up to %d samples per run", endpoint, run.pending.maxlen)
        run.return_pending(batch)
        self._count_drops(run)
        return False

    def _export(self, target: tuple[str, Headers], data: MetricsData) -> MetricExportResult:
        try:
            return self._exporter(target).export(data, timeout_millis=self.timeout_s * 1000)
        except Exception as err:  # noqa: BLE001 - an exporter bug must not stop the loop
            log.warning("OTLP export to %s failed: %s", target[0], type(err).__name__)  # never the headers
            return MetricExportResult.FAILURE

    def _count_drops(self, run: Run) -> None:
        """Add the run's drops since we last looked to the exporter-wide count: those of a full queue
        (while sampling, between pushes) as well as those of a failed push that no longer fit."""
        with self._lock:
            seen = self._dropped_seen.get(run.run_id, 0)
            if run.otlp_dropped > seen:
                self.stats.dropped_samples += run.otlp_dropped - seen
                self._dropped_seen[run.run_id] = run.otlp_dropped

    def finalize(self, run: Run, synchronous: bool) -> None:
        """Called when a run stops: flush now (bounded) or leave it to the background thread
        (or, once shutdown began, to stop(), which flushes all endpoints at once)."""
        if self._shutting_down:
            synchronous = False
        if synchronous and run.params.otlp_endpoint not in self._unhealthy and self.push_run(run, skip_unhealthy=True):
            self._forget(run)
            return
        with self._lock:
            self._draining.append(run)

    def _forget(self, run: Run) -> None:
        """A run is done: drop its state, and its OTLP client when no other run uses it."""
        self._resources.pop(run.run_id, None)
        target = _target(run)
        in_use = {_target(r) for r in self._runs() if r is not run}
        with self._lock:
            self._dropped_seen.pop(run.run_id, None)
            in_use.update(_target(r) for r in self._draining if r is not run)
            exporter = self._exporters.pop(target, None) if target not in in_use else None
        if exporter is not None:
            try:
                exporter.shutdown(timeout_millis=200)
            except Exception:  # noqa: BLE001
                pass

    def publish_once(self, active: list[Run]) -> None:
        with self._lock:
            draining = list(self._draining)
        for run in active:
            if self._stop.is_set():
                return
            if not run.stopped:
                self.push_run(run)
        for run in draining:
            if self.push_run(run) or self._stop.is_set():
                with self._lock:
                    if run in self._draining:
                        self._draining.remove(run)
                self._forget(run)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish_once(self._runs())
            except Exception:
                log.exception("OTLP publish failed")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="smoltrace-gpu-otlp", daemon=True)
            self._thread.start()

    def begin_shutdown(self) -> None:
        """Stop the background pushes; runs stopped from now on are flushed by stop()."""
        self._shutting_down = True
        self._stop.set()

    def stop(self, deadline_s: float = 2.0) -> None:
        """Stop the thread, then one last push of everything still queued, within deadline_s.

        Each endpoint is flushed on its own thread, so unreachable collectors cost one OTLP timeout
        in all, not one each; what is not done by the deadline is abandoned."""
        self.begin_shutdown()
        end = time.monotonic() + deadline_s
        with self._lock:
            draining = list(self._draining)
        by_endpoint: dict[str, list[Run]] = {}
        for run in draining:
            endpoint = run.params.otlp_endpoint
            if endpoint and endpoint not in self._unhealthy:
                by_endpoint.setdefault(endpoint, []).append(run)

        work: queue.SimpleQueue[list[Run]] = queue.SimpleQueue()
        for runs in by_endpoint.values():
            work.put(runs)

        def flush() -> None:  # one endpoint at a time; a failing endpoint is given up at once
            while time.monotonic() < end:
                try:
                    runs = work.get_nowait()
                except queue.Empty:
                    return
                for run in runs:
                    if time.monotonic() >= end or not self.push_run(run, skip_unhealthy=True):
                        break

        # a few threads, not one per endpoint: starting threads while others encode is itself slow
        threads = [
            threading.Thread(target=flush, name="smoltrace-gpu-otlp-flush", daemon=True)
            for _ in range(min(MAX_FLUSH_THREADS, len(by_endpoint)))
        ]
        for thread in threads:
            thread.start()
        if self._thread is not None:
            threads.append(self._thread)
            self._thread = None
        for thread in threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))
        with self._lock:
            exporters = list(self._exporters.values())
            self._exporters.clear()

        def close_all() -> None:  # closing a channel that is still dialling blocks ~0.1 s: all at once, bounded
            for exporter in exporters:
                try:
                    exporter.shutdown(timeout_millis=200)
                except Exception:  # noqa: BLE001
                    pass

        closer = threading.Thread(target=close_all, name="smoltrace-gpu-otlp-close", daemon=True)
        closer.start()
        closer.join(timeout=max(0.1, end - time.monotonic()))
