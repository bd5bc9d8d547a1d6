"""prometheus.py: the /metrics exposition, frozen by a golden file, and its values; scrapes never call NVML.

Regenerate the golden file after a deliberate change of the metric set with
`SMOLTRACE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_prometheus.py`, and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pynvml
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smoltrace_gpu_exporter import __version__
from smoltrace_gpu_exporter.energy import co2_grams, power_cost_usd
from smoltrace_gpu_exporter.nvml import Field
from smoltrace_gpu_exporter.otlp import OtlpPublisher
from smoltrace_gpu_exporter.prometheus import ExporterCollector, make_app, make_registry
from smoltrace_gpu_exporter.runs import RunDefaults, RunParams, RunRegistry
from smoltrace_gpu_exporter.sampler import Sampler
from tests.fakes.fake_nvml import GIB, FakeClock, FakeNvml

GOLDEN = Path(__file__).parent / "golden" / "metrics_names.txt"
WALL_NS = 1_700_000_000_000_000_000
GPU_LABEL_NAMES = ("gpu", "name", "uuid")


class Exporter:
    """Sampler + registry + collector over a FakeNvml, as app.py wires them (no threads, no servers)."""

    def __init__(self, nvml: FakeNvml, clock: FakeClock, defaults: RunDefaults = RunDefaults()) -> None:
        self.nvml = nvml
        self.sampler = Sampler(nvml, clock=clock, wall_clock_ns=lambda: WALL_NS)
        self.registry = RunRegistry(self.sampler, defaults, clock=clock)
        self.publisher = OtlpPublisher(self.registry.active_runs, simulated=nvml.simulated)
        self.collector = ExporterCollector(self.sampler, self.registry, self.publisher, defaults)
        self.prom_registry = make_registry(self.collector)

    def render(self) -> str:
        return generate_latest(self.prom_registry).decode()

    def families(self) -> dict[str, object]:
        return {f.name: f for f in text_string_to_metric_families(self.render())}

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for family in text_string_to_metric_families(self.render()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def gpu_labels(nvml: FakeNvml, index: int) -> tuple[tuple[str, str], ...]:
    g = nvml.gpu(index)
    return tuple(sorted({"gpu": str(index), "uuid": g.uuid, "name": g.name}.items()))


@pytest.fixture
def exporter(clock: FakeClock) -> Exporter:
    """2 GPUs, deterministic readings, one transient error, one live run, energy moving."""
    nvml = FakeNvml(2, clock=clock)
    nvml.gpu(1).fail(Field.TEMPERATURE, pynvml.NVML_ERROR_TIMEOUT, times=1)
    exp = Exporter(nvml, clock)
    exp.sampler.sweep()
    exp.registry.start(RunParams.create("golden", interval_ms=500))
    clock.advance(1.0)
    nvml.gpu(0).advance_energy(3600.0)
    nvml.gpu(1).advance_energy(7200.0)
    exp.sampler.sweep()
    return exp


def exposition_shape(text: str) -> list[str]:
    lines = set()
    for family in text_string_to_metric_families(text):
        labels = sorted({name for s in family.samples for name in s.labels})
        lines.add(f"{family.name} {family.type} {','.join(labels) or '-'}")
    return sorted(lines)


def test_golden_metric_names_types_and_labels(exporter: Exporter) -> None:
    shape = exposition_shape(exporter.render())
    if os.environ.get("SMOLTRACE_UPDATE_GOLDEN"):
        GOLDEN.write_text("\n".join(shape) + "\n")
    assert shape == GOLDEN.read_text().splitlines()


def test_counters_end_in_total_and_all_names_are_prefixed(exporter: Exporter) -> None:
    for family in text_string_to_metric_families(exporter.render()):
        assert family.name.startswith("smoltrace_gpu_")
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name == family.name + "_total"
            else:
                assert sample.name == family.name


def test_values(exporter: Exporter) -> None:
    nvml = exporter.nvml
    v = exporter.samples()
    l0, l1 = gpu_labels(nvml, 0), gpu_labels(nvml, 1)
    assert v[("smoltrace_gpu_utilization_ratio", l0)] == 0.4  # a 0..1 ratio, not percent
    assert v[("smoltrace_gpu_utilization_ratio", l1)] == 0.5
    assert v[("smoltrace_gpu_memory_used_bytes", l0)] == 10 * GIB
    assert v[("smoltrace_gpu_memory_used_bytes", l1)] == 11 * GIB
    assert v[("smoltrace_gpu_memory_total_bytes", l0)] == 80 * GIB
    assert v[("smoltrace_gpu_temperature_celsius", l0)] == 50.0
    assert v[("smoltrace_gpu_temperature_celsius", l1)] == 51.0
    assert v[("smoltrace_gpu_power_watts", l0)] == 200.0
    assert v[("smoltrace_gpu_power_watts", l1)] == 250.0
    assert v[("smoltrace_gpu_energy_joules_total", l0)] == 3600.0
    assert v[("smoltrace_gpu_energy_joules_total", l1)] == 7200.0
    assert v[("smoltrace_gpu_co2_emissions_grams_total", l1)] == pytest.approx(co2_grams(7200.0, 475.0, 1.0))
    assert v[("smoltrace_gpu_power_cost_usd_total", l1)] == pytest.approx(power_cost_usd(7200.0, 0.12))
    assert v[("smoltrace_gpu_up", l0)] == 1 and v[("smoltrace_gpu_up", l1)] == 1
    info = tuple(sorted({**dict(l0), "driver_version": "550.54.15", "simulated": "false"}.items()))
    assert v[("smoltrace_gpu_info", info)] == 1
    assert v[("smoltrace_gpu_exporter_up", ())] == 1
    assert v[("smoltrace_gpu_exporter_nvml_up", ())] == 1
    assert v[("smoltrace_gpu_exporter_gpus", ())] == 2
    assert v[("smoltrace_gpu_exporter_active_runs", ())] == 1
    assert v[("smoltrace_gpu_exporter_sampling_interval_seconds", ())] == 0.5  # the live run's interval
    assert v[("smoltrace_gpu_exporter_last_collect_success_timestamp_seconds", ())] == WALL_NS / 1e9
    assert v[("smoltrace_gpu_exporter_sweeps_total", ())] == 3
    assert v[("smoltrace_gpu_exporter_runs_started_total", ())] == 1
    assert v[("smoltrace_gpu_exporter_runs_expired_total", ())] == 0
    assert v[("smoltrace_gpu_exporter_collection_errors_total", (("reason", "transient"),))] == 1
    assert v[("smoltrace_gpu_exporter_otlp_dropped_samples_total", ())] == 0
    build = (("backend", "fake"), ("simulated", "false"), ("version", __version__))
    assert v[("smoltrace_gpu_exporter_build_info", build)] == 1


def test_co2_uses_the_exporter_defaults(clock: FakeClock) -> None:
    nvml = FakeNvml(1, clock=clock)
    exp = Exporter(nvml, clock, RunDefaults(carbon_intensity_g_per_kwh=100.0, pue=1.5, power_cost_per_kwh=0.5))
    exp.sampler.sweep()
    nvml.gpu(0).advance_energy(3_600_000.0)  # 1 kWh
    exp.sampler.sweep()
    v = exp.samples()
    assert v[("smoltrace_gpu_co2_emissions_grams_total", gpu_labels(nvml, 0))] == pytest.approx(150.0)
    assert v[("smoltrace_gpu_power_cost_usd_total", gpu_labels(nvml, 0))] == pytest.approx(0.5)


def test_unsupported_fields_are_absent_and_failed_gpu_is_down(clock: FakeClock) -> None:
    nvml = FakeNvml(3, clock=clock)
    nvml.gpu(0).unsupported(Field.POWER, Field.ENERGY)
    exp = Exporter(nvml, clock)
    exp.sampler.sweep()
    nvml.gpu(2).lose_now()
    clock.advance(1.0)
    exp.sampler.sweep()
    v = exp.samples()
    l0, l1, l2 = (gpu_labels(nvml, i) for i in range(3))
    names_for = {lab: {name for name, labels in v if labels == lab} for lab in (l0, l1, l2)}
    readings = {
        "smoltrace_gpu_utilization_ratio",
        "smoltrace_gpu_memory_used_bytes",
        "smoltrace_gpu_temperature_celsius",
        "smoltrace_gpu_power_watts",
        "smoltrace_gpu_energy_joules_total",
        "smoltrace_gpu_co2_emissions_grams_total",
        "smoltrace_gpu_power_cost_usd_total",
    }
    # GPU 0: no power, no energy at all (neither counter nor power to integrate), the rest present
    assert names_for[l0] & readings == readings - {
        "smoltrace_gpu_power_watts",
        "smoltrace_gpu_energy_joules_total",
        "smoltrace_gpu_co2_emissions_grams_total",
        "smoltrace_gpu_power_cost_usd_total",
    }
    assert names_for[l1] & readings == readings
    # GPU 2: lost: up 0, identity and total memory only, no reading series
    assert v[("smoltrace_gpu_up", l2)] == 0
    assert v[("smoltrace_gpu_up", l0)] == 1
    assert names_for[l2] & readings == set()
    assert v[("smoltrace_gpu_memory_total_bytes", l2)] == 80 * GIB
    assert v[("smoltrace_gpu_exporter_collection_errors_total", (("reason", "device_lost"),))] == 1
    assert v[("smoltrace_gpu_exporter_gpus", ())] == 3
    assert v[("smoltrace_gpu_exporter_nvml_up", ())] == 1


def test_soft_mode_exposition(clock: FakeClock) -> None:
    exp = Exporter(FakeNvml(2, clock=clock).missing_library(), clock)
    exp.sampler.sweep()
    v = exp.samples()
    assert v[("smoltrace_gpu_exporter_up", ())] == 1
    assert v[("smoltrace_gpu_exporter_nvml_up", ())] == 0
    assert v[("smoltrace_gpu_exporter_gpus", ())] == 0
    assert v[("smoltrace_gpu_exporter_last_collect_success_timestamp_seconds", ())] == 0
    assert v[("smoltrace_gpu_exporter_collection_errors_total", (("reason", "init_failed"),))] == 1
    assert not [key for key in v if any(name == "gpu" for name, _ in key[1])]  # no per-GPU series


def test_scrapes_never_call_nvml(exporter: Exporter) -> None:
    before = exporter.nvml.total_calls
    first = exporter.render()
    for _ in range(3):
        assert exporter.render() == first  # the same snapshot, so the same text
    assert exporter.nvml.total_calls == before
    exporter.nvml.break_library(after_calls=0)  # even a broken library does not disturb a scrape
    assert exporter.render() == first
    assert exporter.nvml.total_calls == before


def call_app(app, path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    captured: dict = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None) -> None:
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def test_wsgi_routes(exporter: Exporter) -> None:
    app = make_app(exporter.prom_registry)
    status, headers, body = call_app(app, "/metrics")
    assert status.startswith("200")
    assert headers["Content-Type"].startswith("text/plain")
    assert b"smoltrace_gpu_utilization_ratio{" in body
    status, _, body = call_app(app, "/healthz")
    assert (status, body) == ("200 OK", b"ok\n")
    status, _, body = call_app(app, "/")
    assert status == "200 OK" and b'href="/metrics"' in body
    assert call_app(app, "/nope")[0] == "404 Not Found"


def test_sidecar_scope_exports_only_the_gpus_of_its_own_runs(clock: FakeClock) -> None:
    """Two sidecars on one 2-GPU node, each with a run on its own GPU: with `--metrics-scope runs`
    each exports only its run's GPU, so sum() over the node counts each GPU once; the node scope
    (DaemonSet) exports both."""
    nvml = FakeNvml(2, clock=clock)
    scraped: dict[str, set[str]] = {}
    for scope, index in (("runs", 0), ("runs", 1), ("node", 0)):
        exp = Exporter(nvml, clock)
        exp.collector = ExporterCollector(exp.sampler, exp.registry, exp.publisher, RunDefaults(), scope)
        exp.prom_registry = make_registry(exp.collector)
        exp.sampler.sweep()
        before = {name for name, _ in exp.samples()}
        assert ("smoltrace_gpu_power_watts" in before) == (scope == "node"), "a sidecar with no run exports no GPU"
        exp.registry.start(RunParams.create(f"run-{scope}-{index}", interval_ms=500, gpu_uuids=[nvml.gpu(index).uuid]))
        clock.advance(1.0)
        nvml.gpu(index).advance_energy(100.0)
        exp.sampler.sweep()
        uuids = {dict(labels)["uuid"] for name, labels in exp.samples() if name == "smoltrace_gpu_power_watts"}
        scraped[f"{scope}-{index}"] = uuids
        assert exp.samples()[("smoltrace_gpu_exporter_gpus", ())] == 2  # what NVML sees is still said
    assert scraped["runs-0"] == {nvml.gpu(0).uuid}
    assert scraped["runs-1"] == {nvml.gpu(1).uuid}
    assert scraped["node-0"] == {nvml.gpu(0).uuid, nvml.gpu(1).uuid}


def test_metrics_scope_is_validated() -> None:
    from smoltrace_gpu_exporter.config import ConfigError, ExporterConfig

    with pytest.raises(ConfigError, match="--metrics-scope"):
        ExporterConfig(metrics_scope="pod").validate()


def test_mig_instances_are_labelled_like_dcgm_exporter_and_never_repeat_the_parents_energy(clock: FakeClock) -> None:
    """GPU 0 carries two MIG instances: each has its own memory series with the parent's `gpu` and
    `uuid` plus `gpu_instance_id` and `mig_uuid`; power, utilisation, temperature and energy are
    the parent's alone, so sum() over the node counts the GPU once. A sidecar whose run samples one
    instance exports that instance only (not the parent, which other sidecars' instances share)."""
    nvml = FakeNvml(2, clock=clock)
    nvml.gpu(0).with_mig(20 * GIB, 40 * GIB)
    nvml.gpu(0).mig[1].memory_used = 5 * GIB
    g0 = nvml.gpu(0)
    m0, m1 = g0.mig
    exp = Exporter(nvml, clock)
    exp.sampler.sweep()
    clock.advance(1.0)
    g0.advance_energy(100.0)
    exp.sampler.sweep()
    v = exp.samples()
    mig1 = tuple(sorted({"gpu": "0", "uuid": g0.uuid, "name": f"{g0.name} MIG", "gpu_instance_id": "2", "mig_uuid": m1.uuid}.items()))
    assert v[("smoltrace_gpu_memory_used_bytes", mig1)] == 5 * GIB
    assert v[("smoltrace_gpu_memory_total_bytes", mig1)] == 40 * GIB
    assert v[("smoltrace_gpu_up", mig1)] == 1
    assert v[("smoltrace_gpu_memory_used_bytes", gpu_labels(nvml, 0))] == 10 * GIB  # the whole GPU, as before
    for family in ("smoltrace_gpu_power_watts", "smoltrace_gpu_utilization_ratio", "smoltrace_gpu_energy_joules_total"):
        assert [dict(labels).get("mig_uuid", "") for name, labels in v if name == family] == ["", ""], family
    assert v[("smoltrace_gpu_energy_joules_total", gpu_labels(nvml, 0))] == 100.0
    assert v[("smoltrace_gpu_exporter_gpus", ())] == 2  # whole GPUs
    assert {dict(labels).get("mig_uuid") for name, labels in v if name == "smoltrace_gpu_info"} == {None, m0.uuid, m1.uuid}

    sidecar = Exporter(nvml, clock)
    sidecar.collector = ExporterCollector(sidecar.sampler, sidecar.registry, sidecar.publisher, RunDefaults(), "runs")
    sidecar.prom_registry = make_registry(sidecar.collector)
    sidecar.registry.start(RunParams.create("on-m0", interval_ms=500, gpu_uuids=[m0.uuid]))
    sidecar.sampler.sweep()
    exported = {(name, dict(labels).get("mig_uuid", "")) for name, labels in sidecar.samples() if name.startswith("smoltrace_gpu_memory")}
    assert exported == {("smoltrace_gpu_memory_used_bytes", m0.uuid), ("smoltrace_gpu_memory_total_bytes", m0.uuid)}
    assert not any(name == "smoltrace_gpu_energy_joules_total" for name, _ in sidecar.samples())
