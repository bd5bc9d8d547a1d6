"""The energy counter (3 ms per GPU on an H200) is read at run boundaries and about once a second;
the gauges (microseconds) at every sweep. The run's energy stays exact at its boundaries."""

from __future__ import annotations

import pytest

from smoltrace_gpu_exporter.runs import RunParams, RunRegistry
from smoltrace_gpu_exporter.sampler import Sampler
from tests.fakes.fake_nvml import FakeClock, FakeNvml


def loop_sweep(sampler: Sampler) -> None:
    """What the sampler thread does at each interval."""
    sampler.sweep(read_energy=sampler.energy_due())


def test_counter_at_boundaries_and_about_once_a_second_gauges_every_sweep(nvml: FakeNvml, clock: FakeClock) -> None:
    sampler = Sampler(nvml, clock=clock)  # energy_interval_s defaults to 1 s
    registry = RunRegistry(sampler, clock=clock)
    nvml.reset_calls()
    registry.start(RunParams.create("cadence", interval_ms=100))
    assert nvml.calls["total_energy_joules"] == 2  # boundary read, both GPUs
    for _ in range(30):  # 3 s of 100 ms sweeps
        clock.advance(0.1)
        nvml.gpu(0).advance_energy(25.0)
        nvml.gpu(1).advance_energy(10.0)
        loop_sweep(sampler)
    summary = registry.stop("cadence")
    per_gpu_counter = nvml.calls["total_energy_joules"] / 2
    per_gpu_gauge = nvml.calls["power_watts"] / 2
    assert per_gpu_gauge == 32  # start + 30 sweeps + stop
    assert 1 + 3 + 1 <= per_gpu_counter <= 1 + 4 + 1, per_gpu_counter  # boundaries + ~1/s
    # exact at the boundaries, whatever happened between counter reads
    assert [d.energy_joules for d in summary.devices] == [pytest.approx(750.0), pytest.approx(300.0)]
    assert summary.energy_method == "counter"


def test_between_counter_reads_live_energy_is_estimated_from_power(nvml: FakeNvml, clock: FakeClock) -> None:
    nvml.gpu(0).set_energy(1_000_000.0)
    sampler = Sampler(nvml, clock=clock)
    registry = RunRegistry(sampler, clock=clock)
    run, _ = registry.start(RunParams.create("live", interval_ms=100, gpu_uuids=[nvml.gpu(0).uuid]))
    clock.advance(0.5)
    loop_sweep(sampler)  # no counter read: half a second since the boundary read
    account = run.accounts[nvml.gpu(0).uuid]
    assert account.energy.counter_joules == 0.0
    assert run.energy_joules() > 0.0  # power integrated since the last counter read
    assert account.energy.method == "counter"  # a gauge-only sweep does not demote the method
    clock.advance(0.5)
    nvml.gpu(0).advance_energy(123.0)
    loop_sweep(sampler)  # a second since the last read: the counter replaces the estimate
    assert run.energy_joules() == pytest.approx(123.0)


def test_the_counter_every_sweep_when_asked(nvml: FakeNvml, clock: FakeClock) -> None:
    sampler = Sampler(nvml, clock=clock, energy_interval_s=0.0)
    nvml.reset_calls()
    for _ in range(5):
        clock.advance(0.1)
        loop_sweep(sampler)
    assert nvml.calls["total_energy_joules"] == 10
