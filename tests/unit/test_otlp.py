"""otlp.py: the OTLP metrics built for a run (names, units, types, points, resource) and the publisher."""

from __future__ import annotations

import socket

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)

from smoltrace_gpu_exporter.energy import co2_grams, power_cost_usd
from smoltrace_gpu_exporter.nvml import Field
from smoltrace_gpu_exporter.otlp import SERVICE_NAME, OtlpPublisher, build_metrics_data, run_resource
from smoltrace_gpu_exporter.runs import Run, RunParams, RunRegistry
from smoltrace_gpu_exporter.sampler import Sampler
from smoltrace_gpu_exporter.simulated import SimulatedBackend
from tests.fakes.fake_nvml import FakeClock, FakeNvml

EXPECTED = [
    ("gen_ai.gpu.utilization", "%", Gauge),
    ("gen_ai.gpu.memory.used", "MiB", Gauge),
    ("gen_ai.gpu.memory.total", "MiB", Gauge),
    ("gen_ai.gpu.temperature", "Cel", Gauge),
    ("gen_ai.gpu.power", "W", Gauge),
    ("gen_ai.gpu.energy", "J", Sum),
    ("gen_ai.co2.emissions", "gCO2e", Sum),
    ("gen_ai.power.cost", "USD", Sum),
]


def run_with_samples(nvml: FakeNvml, clock: FakeClock, sweeps: int = 2, **params) -> tuple[Run, list]:
    sampler = Sampler(nvml, clock=clock)
    registry = RunRegistry(sampler, clock=clock)
    params.setdefault("otlp_endpoint", "127.0.0.1:4317")  # samples are queued only for a run that has a collector
    run, _ = registry.start(RunParams.create("otlp-run", **params))
    for i in range(sweeps):
        clock.advance(1.0)
        for gpu in nvml.gpus:
            gpu.advance_energy(100.0 * (i + 1) * (gpu.index + 1))
        sampler.sweep()
    return run, run.take_pending()


def metrics_by_name(data: MetricsData) -> dict:
    (resource_metrics,) = data.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    assert scope_metrics.scope.name == "smoltrace.gpu"
    return {m.name: m for m in scope_metrics.metrics}


def test_names_units_types_and_points(clock: FakeClock) -> None:
    nvml = FakeNvml(2, clock=clock)
    run, samples = run_with_samples(nvml, clock, carbon_intensity_g_per_kwh=300.0, pue=1.2, power_cost_per_kwh=0.25)
    assert len(samples) == 3  # the start boundary read and two sweeps
    data = build_metrics_data(run, samples, run_resource(run, simulated=False))
    metrics = metrics_by_name(data)
    assert [(m.name, m.unit, type(m.data)) for m in metrics.values()] == EXPECTED
    for name, _, kind in EXPECTED:
        points = metrics[name].data.data_points
        assert len(points) == 2 * 3  # one per device per sample
        if kind is Sum:
            assert metrics[name].data.aggregation_temporality is AggregationTemporality.CUMULATIVE
            assert metrics[name].data.is_monotonic is True
        for point in points:
            assert point.start_time_unix_nano == run.start_unix_ns
            assert point.time_unix_nano in {s.timestamp_ns for s in samples}

    def series(name: str, gpu: int) -> list[float]:
        return [p.value for p in metrics[name].data.data_points if p.attributes["gpu_id"] == str(gpu)]

    g0, g1 = nvml.gpu(0), nvml.gpu(1)
    first = metrics["gen_ai.gpu.utilization"].data.data_points[0]
    assert dict(first.attributes) == {"gpu_id": "0", "gpu_name": g0.name, "gpu_uuid": g0.uuid}
    assert {p.attributes["gpu_uuid"] for p in metrics["gen_ai.gpu.power"].data.data_points} == {g0.uuid, g1.uuid}
    assert series("gen_ai.gpu.utilization", 0) == [40.0] * 3  # percent, as NVML gives it
    assert series("gen_ai.gpu.memory.used", 1) == [11 * 1024.0] * 3  # MiB
    assert series("gen_ai.gpu.memory.total", 0) == [80 * 1024.0] * 3
    assert series("gen_ai.gpu.temperature", 1) == [51.0] * 3
    assert series("gen_ai.gpu.power", 1) == [250.0] * 3
    # cumulative since the run started: GPU 0 +100 then +200 J, GPU 1 +200 then +400 J
    assert series("gen_ai.gpu.energy", 0) == [0.0, 100.0, 300.0]
    assert series("gen_ai.gpu.energy", 1) == [0.0, 200.0, 600.0]
    assert series("gen_ai.co2.emissions", 1) == pytest.approx([co2_grams(e, 300.0, 1.2) for e in (0.0, 200.0, 600.0)])
    assert series("gen_ai.power.cost", 0) == pytest.approx([power_cost_usd(e, 0.25) for e in (0.0, 100.0, 300.0)])


def test_unsupported_and_failed_devices_have_no_points(clock: FakeClock) -> None:
    nvml = FakeNvml(3, clock=clock)
    for gpu in nvml.gpus:
        gpu.unsupported(Field.TEMPERATURE)
    nvml.gpu(0).unsupported(Field.POWER)
    sampler = Sampler(nvml, clock=clock)
    registry = RunRegistry(sampler, clock=clock)
    run, _ = registry.start(RunParams.create("partial", otlp_endpoint="127.0.0.1:4317"))
    nvml.gpu(1).lose_now()
    clock.advance(1.0)
    sampler.sweep()
    samples = run.take_pending()
    metrics = metrics_by_name(build_metrics_data(run, samples, run_resource(run, simulated=False)))
    assert "gen_ai.gpu.temperature" not in metrics  # no device reports it: the metric is left out
    power = metrics["gen_ai.gpu.power"].data.data_points
    assert [p.attributes["gpu_id"] for p in power] == ["1", "2", "2"]  # GPU 0 never; GPU 1 until it was lost
    utilization = metrics["gen_ai.gpu.utilization"].data.data_points
    assert [p.attributes["gpu_id"] for p in utilization] == ["0", "1", "2", "0", "2"]


def test_resource_attributes(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=ml,run.id=from-env")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "someone-else")
    run, samples = run_with_samples(FakeNvml(1, clock=clock), clock, resource_attributes={"team": "eval", "run.id": "spoofed"})
    attributes = dict(run_resource(run, simulated=False).attributes)
    assert attributes["service.name"] == SERVICE_NAME == "smoltrace-gpu-exporter"
    assert attributes["run.id"] == "otlp-run"  # neither the environment nor the client overrides it
    assert attributes["host.name"] == socket.gethostname()
    assert attributes["deployment.environment"] == "ci"  # OTEL_RESOURCE_ATTRIBUTES merged in
    assert attributes["team"] == "eval"  # the run's own attributes win over the environment's
    assert "gpu.simulated" not in attributes
    simulated = dict(run_resource(run, simulated=True).attributes)
    assert simulated["gpu.simulated"] is True
    data = build_metrics_data(run, samples, run_resource(run, simulated=False))
    assert dict(data.resource_metrics[0].resource.attributes)["run.id"] == "otlp-run"


def test_the_data_encodes_as_otlp_protobuf(clock: FakeClock) -> None:
    run, samples = run_with_samples(FakeNvml(2, clock=clock), clock)
    request = encode_metrics(build_metrics_data(run, samples, run_resource(run, simulated=True)))
    (rm,) = request.resource_metrics
    resource = {kv.key: kv.value for kv in rm.resource.attributes}
    assert resource["gpu.simulated"].bool_value is True
    assert resource["run.id"].string_value == "otlp-run"
    (sm,) = rm.scope_metrics
    by_name = {m.name: m for m in sm.metrics}
    assert [(m.name, m.unit) for m in sm.metrics] == [(name, unit) for name, unit, _ in EXPECTED]
    assert len(by_name["gen_ai.gpu.power"].gauge.data_points) == 6
    energy = by_name["gen_ai.gpu.energy"].sum
    assert energy.is_monotonic is True
    assert energy.aggregation_temporality == 2  # AGGREGATION_TEMPORALITY_CUMULATIVE


class MemoryExporter(MetricExporter):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        if self.fail:
            return MetricExportResult.FAILURE
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def test_publisher_marks_simulated_backend_output(clock: FakeClock) -> None:
    sampler = Sampler(SimulatedBackend(2, clock=clock), clock=clock)
    registry = RunRegistry(sampler, clock=clock)
    exporter = MemoryExporter()
    publisher = OtlpPublisher(registry.active_runs, simulated=True, exporter_factory=lambda endpoint, timeout, headers: exporter)
    run, _ = registry.start(RunParams.create("sim-run", otlp_endpoint="127.0.0.1:4317"))
    clock.advance(1.0)
    sampler.sweep()
    assert publisher.push_run(run) is True
    (batch,) = exporter.batches
    attributes = dict(batch.resource_metrics[0].resource.attributes)
    assert attributes["gpu.simulated"] is True and attributes["run.id"] == "sim-run"
    energy = metrics_by_name(batch)["gen_ai.gpu.energy"].data.data_points
    assert len(energy) == 2 * 2
    assert all(p.value > 0 for p in energy if p.time_unix_nano != run.start_unix_ns)
    assert publisher.stats.exported_samples == run.otlp_exported == 2


def test_publisher_keeps_samples_when_the_collector_is_down(clock: FakeClock) -> None:
    sampler = Sampler(FakeNvml(1, clock=clock), clock=clock)
    registry = RunRegistry(sampler, clock=clock)
    exporter = MemoryExporter(fail=True)
    publisher = OtlpPublisher(registry.active_runs, simulated=False, exporter_factory=lambda endpoint, timeout, headers: exporter)
    run, _ = registry.start(RunParams.create("down", otlp_endpoint="127.0.0.1:4317"))
    sampler.sweep()
    assert publisher.push_run(run) is False
    assert len(run.pending) == 2  # put back for the next try
    assert publisher.stats.export_failures == 1
    exporter.fail = False
    assert publisher.push_run(run) is True
    assert publisher.stats.exported_samples == 2
    assert len(exporter.batches) == 1
