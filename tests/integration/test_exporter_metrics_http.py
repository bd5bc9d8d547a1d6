"""Prometheus /metrics over HTTP: the per-GPU series of a simulated two-GPU exporter, the
exporter's self-health series, /healthz and 404s. Scrapes are parsed with prometheus_client."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_gpu_exporter.simulated import SimulatedBackend
from smoltrace_proto import pb
from tests.integration.conftest import RPC_TIMEOUT_S, Client, http_get, scrape, series, start_request, value_of, wait_until

SIM_UUIDS = ["GPU-5170a7ed-0000-4000-8000-000000000000", "GPU-5170a7ed-0000-4000-8000-000000000001"]
PER_GPU = [
    "smoltrace_gpu_utilization_ratio",
    "smoltrace_gpu_memory_used_bytes",
    "smoltrace_gpu_memory_total_bytes",
    "smoltrace_gpu_temperature_celsius",
    "smoltrace_gpu_power_watts",
    "smoltrace_gpu_energy_joules_total",
    "smoltrace_gpu_co2_emissions_grams_total",
    "smoltrace_gpu_power_cost_usd_total",
    "smoltrace_gpu_up",
]


class CountingBackend(SimulatedBackend):
    """The simulated backend, counting every per-device NVML read."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.calls = 0

    def utilization_percent(self, index: int) -> float:
        self.calls += 1
        return super().utilization_percent(index)

    def memory_used_bytes(self, index: int) -> int:
        self.calls += 1
        return super().memory_used_bytes(index)

    def temperature_celsius(self, index: int) -> float:
        self.calls += 1
        return super().temperature_celsius(index)

    def power_watts(self, index: int) -> float:
        self.calls += 1
        return super().power_watts(index)

    def total_energy_joules(self, index: int) -> float:
        self.calls += 1
        return super().total_energy_joules(index)


def test_metrics_series_for_two_simulated_gpus(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app()
    wait_until(lambda: app.sampler.health.sweeps >= 1, timeout=3.0, what="the first sweep")
    status, content_type, body = http_get(f"http://{app.addresses.metrics}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    types = {family.name: family.type for family in text_string_to_metric_families(body)}
    assert types["smoltrace_gpu_power_watts"] == "gauge" and types["smoltrace_gpu_energy_joules"] == "counter"
    assert types["smoltrace_gpu_exporter_otlp_dropped_samples"] == "counter"
    metrics = scrape(app.addresses.metrics)

    for name in PER_GPU:
        found = series(metrics, name)
        assert sorted((s.labels["gpu"], s.labels["uuid"]) for s in found) == [("0", SIM_UUIDS[0]), ("1", SIM_UUIDS[1])], name
        assert {s.labels["name"] for s in found} == {"Simulated GPU 80GB"}, name
    for gpu in ("0", "1"):
        assert 0.0 <= value_of(metrics, "smoltrace_gpu_utilization_ratio", gpu=gpu) <= 1.0
        assert value_of(metrics, "smoltrace_gpu_memory_total_bytes", gpu=gpu) == 81_559 * 1024 * 1024
        assert (
            0
            < value_of(metrics, "smoltrace_gpu_memory_used_bytes", gpu=gpu)
            < value_of(metrics, "smoltrace_gpu_memory_total_bytes", gpu=gpu)
        )
        assert 35.0 <= value_of(metrics, "smoltrace_gpu_temperature_celsius", gpu=gpu) <= 75.0
        assert 100.0 <= value_of(metrics, "smoltrace_gpu_power_watts", gpu=gpu) <= 600.0
        assert value_of(metrics, "smoltrace_gpu_up", gpu=gpu) == 1
        joules = value_of(metrics, "smoltrace_gpu_energy_joules_total", gpu=gpu)
        assert joules >= 0
        assert value_of(metrics, "smoltrace_gpu_co2_emissions_grams_total", gpu=gpu) == pytest.approx(joules / 3.6e6 * 475.0)
        assert value_of(metrics, "smoltrace_gpu_power_cost_usd_total", gpu=gpu) == pytest.approx(joules / 3.6e6 * 0.12)
        assert value_of(metrics, "smoltrace_gpu_info", gpu=gpu, driver_version="simulated", simulated="true") == 1

    assert value_of(metrics, "smoltrace_gpu_exporter_up") == 1
    assert value_of(metrics, "smoltrace_gpu_exporter_nvml_up") == 1
    assert value_of(metrics, "smoltrace_gpu_exporter_gpus") == 2
    assert time.time() - 60 < value_of(metrics, "smoltrace_gpu_exporter_last_collect_success_timestamp_seconds") <= time.time()
    assert 0 <= value_of(metrics, "smoltrace_gpu_exporter_last_collect_duration_seconds") < 1
    assert value_of(metrics, "smoltrace_gpu_exporter_sampling_interval_seconds") == 15.0  # idle
    assert value_of(metrics, "smoltrace_gpu_exporter_active_runs") == 0
    assert value_of(metrics, "smoltrace_gpu_exporter_sweeps_total") >= 1
    assert value_of(metrics, "smoltrace_gpu_exporter_runs_started_total") == 0
    assert value_of(metrics, "smoltrace_gpu_exporter_runs_expired_total") == 0
    for name in ("otlp_exported_samples", "otlp_dropped_samples", "otlp_export_failures"):
        assert value_of(metrics, f"smoltrace_gpu_exporter_{name}_total") == 0
    build = series(metrics, "smoltrace_gpu_exporter_build_info")
    assert len(build) == 1 and build[0].labels["backend"] == "simulated" and build[0].labels["simulated"] == "true"
    assert build[0].labels["version"]
    # no process-global registry leaking in (python_gc_*, process_* ...)
    assert not [s for s in metrics if not s.name.startswith("smoltrace_gpu_")]

    # a live run shows up, and speeds up the sampling
    client = client_factory(app.addresses.grpc)
    client.stub.StartSampling(start_request("metrics-run", interval_ms=100), timeout=RPC_TIMEOUT_S)
    time.sleep(0.35)
    live = scrape(app.addresses.metrics)
    assert value_of(live, "smoltrace_gpu_exporter_active_runs") == 1
    assert value_of(live, "smoltrace_gpu_exporter_runs_started_total") == 1
    assert value_of(live, "smoltrace_gpu_exporter_sampling_interval_seconds") == pytest.approx(0.1)
    assert value_of(live, "smoltrace_gpu_exporter_sweeps_total") >= value_of(metrics, "smoltrace_gpu_exporter_sweeps_total") + 3
    for gpu in ("0", "1"):  # the lifetime energy counters only grow
        assert value_of(live, "smoltrace_gpu_energy_joules_total", gpu=gpu) > value_of(
            metrics, "smoltrace_gpu_energy_joules_total", gpu=gpu
        )
    client.stub.StopSampling(pb.StopSamplingRequest(run_id="metrics-run"), timeout=RPC_TIMEOUT_S)
    assert value_of(scrape(app.addresses.metrics), "smoltrace_gpu_exporter_active_runs") == 0


def test_scrapes_never_call_nvml(make_app: Callable[..., ExporterApp]) -> None:
    backend = CountingBackend(2)
    app = make_app(backend=backend, idle_interval_ms=60_000)
    wait_until(lambda: app.sampler.health.sweeps >= 1, timeout=3.0, what="the first sweep")
    time.sleep(0.1)
    calls = backend.calls
    assert calls > 0
    for _ in range(5):
        scrape(app.addresses.metrics)
    assert backend.calls == calls, "a /metrics scrape read NVML"


def test_healthz_landing_page_and_unknown_paths(make_app: Callable[..., ExporterApp]) -> None:
    app = make_app()
    base = f"http://{app.addresses.metrics}"
    assert http_get(f"{base}/healthz")[0::2] == (200, "ok\n")
    status, content_type, body = http_get(f"{base}/")
    assert status == 200 and content_type.startswith("text/html") and "/metrics" in body
    for path in ("/nope", "/metrics/extra", "/healthz/x"):
        assert http_get(base + path)[0] == 404, path
