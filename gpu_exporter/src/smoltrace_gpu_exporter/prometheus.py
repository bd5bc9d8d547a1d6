"""Prometheus exposition: `/metrics` renders the sampler's latest snapshot; it never calls NVML.

Names follow Prometheus conventions (base units, `_total` on counters, prefix `smoltrace_gpu_`);
per-GPU series carry the labels `gpu` (NVML index), `uuid` and `name`. The full table is in the
README ("Prometheus metrics"); a golden test freezes it.

MIG, as dcgm-exporter labels it: a MIG instance's series carry its parent's `gpu` and `uuid` plus
`gpu_instance_id` and `mig_uuid`, and are only the instance's own readings (memory used and total,
up, info). Utilisation, temperature, power, energy, CO2 and cost are the parent's alone: never
repeated per instance (dcgm-exporter repeats the parent's energy per instance, so a sum() over
instances counts the GPU several times). A whole GPU's memory includes its instances'; select
`{mig_uuid=""}` for whole GPUs only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from . import __version__
from .energy import co2_grams, power_cost_usd
from .otlp import OtlpPublisher
from .runs import RunDefaults, RunRegistry
from .sampler import Sampler

GPU_LABELS = ("gpu", "uuid", "name")
MIG_LABELS = ("gpu_instance_id", "mig_uuid")  # added on a MIG instance's series


def _add(family: Metric, labels: dict[str, str], value: float) -> None:
    """A gauge sample with its own label set (a MIG instance's series carry two more labels)."""
    family.samples.append(Sample(family.name, labels, value))


class ExporterCollector(Collector):
    def __init__(
        self, sampler: Sampler, registry: RunRegistry, publisher: OtlpPublisher, defaults: RunDefaults, scope: str = "node"
    ) -> None:
        """`scope`: "node" exports every GPU; "runs" only the GPUs this exporter's runs (live or
        retained) sample, so sidecars sharing a node never put one GPU on two targets."""
        self._sampler = sampler
        self._runs = registry
        self._publisher = publisher
        self._defaults = defaults
        self._scope = scope

    def _exported(self) -> set[str] | None:
        """UUIDs whose per-GPU series are exported (None: all)."""
        if self._scope != "runs":
            return None
        return {uuid for run in self._runs.all_runs() for uuid in run.accounts}

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: families depend on what the devices support

    def collect(self) -> Iterator[Metric]:
        sampler = self._sampler
        snapshot = sampler.latest
        health = sampler.health
        simulated = "true" if sampler.backend.simulated else "false"

        util = GaugeMetricFamily(
            "smoltrace_gpu_utilization_ratio",
            "Fraction of the last sample period a kernel ran (NVML utilization.gpu / 100).",
            labels=GPU_LABELS,
        )
        mem_used = GaugeMetricFamily("smoltrace_gpu_memory_used_bytes", "GPU memory in use.", labels=GPU_LABELS)
        mem_total = GaugeMetricFamily("smoltrace_gpu_memory_total_bytes", "GPU memory in total.", labels=GPU_LABELS)
        temp = GaugeMetricFamily("smoltrace_gpu_temperature_celsius", "GPU core temperature.", labels=GPU_LABELS)
        power = GaugeMetricFamily("smoltrace_gpu_power_watts", "GPU power draw.", labels=GPU_LABELS)
        energy = CounterMetricFamily(
            "smoltrace_gpu_energy_joules",
            "GPU energy since the exporter started (NVML energy counter deltas; integrated power where unsupported).",
            labels=GPU_LABELS,
        )
        co2 = CounterMetricFamily(
            "smoltrace_gpu_co2_emissions_grams",
            "CO2e for the GPU energy since the exporter started, at the exporter's default carbon intensity and PUE.",
            labels=GPU_LABELS,
        )
        cost = CounterMetricFamily(
            "smoltrace_gpu_power_cost_usd",
            "Electricity cost of the GPU energy since the exporter started, at the default price.",
            labels=GPU_LABELS,
        )
        up = GaugeMetricFamily(
            "smoltrace_gpu_up", "1 while the GPU answers NVML, 0 once it is marked failed (lost, needs reset).", labels=GPU_LABELS
        )
        info = GaugeMetricFamily("smoltrace_gpu_info", "GPU identity; always 1.", labels=(*GPU_LABELS, "driver_version", "simulated"))

        exported = self._exported()
        for reading in snapshot.devices:
            if exported is not None and reading.uuid not in exported:
                continue
            if reading.is_mig:
                state = sampler.device(reading.uuid)
                mig = {
                    "gpu": str(reading.index),
                    "uuid": reading.parent_uuid,
                    "name": reading.name,
                    "gpu_instance_id": str(state.info.gpu_instance_id if state else -1),
                    "mig_uuid": reading.uuid,
                }
                _add(info, {**mig, "driver_version": health.driver_version, "simulated": simulated}, 1)
                _add(up, mig, 0 if reading.failed else 1)
                _add(mem_total, mig, reading.memory_total_bytes)
                if not reading.failed and reading.memory_used_bytes is not None:
                    _add(mem_used, mig, reading.memory_used_bytes)
                continue
            labels = [str(reading.index), reading.uuid, reading.name]
            info.add_metric([*labels, health.driver_version, simulated], 1)
            up.add_metric(labels, 0 if reading.failed else 1)
            mem_total.add_metric(labels, reading.memory_total_bytes)
            if reading.failed:
                continue
            if reading.utilization_percent is not None:
                util.add_metric(labels, reading.utilization_percent / 100.0)
            if reading.memory_used_bytes is not None:
                mem_used.add_metric(labels, reading.memory_used_bytes)
            if reading.temperature_celsius is not None:
                temp.add_metric(labels, reading.temperature_celsius)
            if reading.power_watts is not None:
                power.add_metric(labels, reading.power_watts)
            state = sampler.device(reading.uuid)
            if state is not None and state.lifetime_energy.method != "none":
                joules = state.lifetime_energy.joules
                energy.add_metric(labels, joules)
                co2.add_metric(labels, co2_grams(joules, self._defaults.carbon_intensity_g_per_kwh, self._defaults.pue))
                cost.add_metric(labels, power_cost_usd(joules, self._defaults.power_cost_per_kwh))
        yield from (util, mem_used, mem_total, temp, power, energy, co2, cost, up, info)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("smoltrace_gpu_exporter_up", "1 while the exporter process is serving.", 1)
        yield gauge(
            "smoltrace_gpu_exporter_nvml_up",
            "1 when NVML is initialised and answering, 0 in soft mode (no library, no driver) or while re-initialising.",
            1 if health.nvml_up else 0,
        )
        yield gauge(
            "smoltrace_gpu_exporter_gpus",
            "GPUs visible to NVML (whole GPUs; MIG instances not counted).",
            sum(1 for d in snapshot.devices if not d.is_mig),
        )
        yield gauge(
            "smoltrace_gpu_exporter_last_collect_success_timestamp_seconds",
            "Unix time of the last sweep that read NVML successfully (0 = never).",
            health.last_success_unix,
        )
        yield gauge(
            "smoltrace_gpu_exporter_last_collect_duration_seconds", "How long the last sweep of all GPUs took.", health.last_sweep_seconds
        )
        yield gauge(
            "smoltrace_gpu_exporter_sampling_interval_seconds",
            "Current sampling interval (smallest of the active runs', else the idle interval).",
            sampler.current_interval_s(),
        )
        yield gauge("smoltrace_gpu_exporter_active_runs", "Runs being sampled now.", len(self._runs.active_runs()))
        errors = CounterMetricFamily(
            "smoltrace_gpu_exporter_collection_errors",
            "Collection errors by reason (init_failed, library, device_lost, transient, internal).",
            labels=("reason",),
        )
        for reason, count in sorted(health.errors.items()):
            errors.add_metric([reason], count)
        yield errors
        yield CounterMetricFamily("smoltrace_gpu_exporter_sweeps", "Sweeps of all GPUs taken.", value=health.sweeps)
        yield CounterMetricFamily("smoltrace_gpu_exporter_runs_started", "Runs started.", value=self._runs.runs_started)
        yield CounterMetricFamily(
            "smoltrace_gpu_exporter_runs_expired", "Runs stopped by the exporter because their lease lapsed.", value=self._runs.runs_expired
        )
        stats = self._publisher.stats
        yield CounterMetricFamily(
            "smoltrace_gpu_exporter_otlp_exported_samples", "Run samples delivered over OTLP.", value=stats.exported_samples
        )
        yield CounterMetricFamily(
            "smoltrace_gpu_exporter_otlp_dropped_samples",
            "Run samples dropped because the OTLP queue was full (collector unreachable).",
            value=stats.dropped_samples,
        )
        yield CounterMetricFamily(
            "smoltrace_gpu_exporter_otlp_export_failures", "Failed OTLP export attempts.", value=stats.export_failures
        )
        build = GaugeMetricFamily(
            "smoltrace_gpu_exporter_build_info", "Exporter version and backend; always 1.", labels=("version", "backend", "simulated")
        )
        build.add_metric([__version__, sampler.backend.name, simulated], 1)
        yield build


def make_registry(collector: Collector) -> CollectorRegistry:
    """A registry of our own (no process-global default registry, no process/platform series)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


_LANDING = b"""<!doctype html><html><head><title>smoltrace GPU exporter</title></head><body>
<h1>smoltrace GPU exporter</h1><p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a></p>
</body></html>"""


def make_app(registry: CollectorRegistry) -> Any:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html")])
            return [_LANDING]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """The HTTP server for `/metrics`, `/healthz` and a landing page, on its own thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._server = make_server(host, port, make_app(registry), _ThreadingServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="smoltrace-gpu-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
