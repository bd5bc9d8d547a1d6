"""simulated.py: plausible readings, and an energy counter that is the integral of the power curve."""

from __future__ import annotations

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smoltrace_gpu_exporter.runs import RunParams, RunRegistry
from smoltrace_gpu_exporter.sampler import Sampler
from smoltrace_gpu_exporter.simulated import SimulatedBackend
from tests.fakes.fake_nvml import FakeClock


def simpson(f, a: float, b: float, n: int = 2000) -> float:
    h = (b - a) / n
    total = f(a) + f(b)
    for i in range(1, n):
        total += (4 if i % 2 else 2) * f(a + i * h)
    return total * h / 3


def power_at(backend: SimulatedBackend, clock: FakeClock, index: int, t: float) -> float:
    saved = clock.now
    clock.now = t
    try:
        return backend.power_watts(index)
    finally:
        clock.now = saved


@pytest.mark.parametrize("index", [0, 1, 3])
def test_energy_counter_is_the_integral_of_power(index: int) -> None:
    clock = FakeClock(500.0)
    sim = SimulatedBackend(4, clock=clock)
    for a, b in [(500.0, 501.0), (503.0, 517.5), (520.0, 580.0)]:
        clock.now = a
        start = sim.total_energy_joules(index)
        clock.now = b
        end = sim.total_energy_joules(index)
        expected = simpson(lambda t: power_at(sim, clock, index, t), a, b)
        assert end - start == pytest.approx(expected, rel=1e-9)
    assert sim.total_energy_joules(index) > 1_000_000.0  # a counter that did not start at 0


@given(steps=st.lists(st.floats(min_value=0.0, max_value=30.0, allow_nan=False), min_size=1, max_size=50))
@settings(max_examples=50)
def test_energy_counter_is_monotonic(steps: list[float]) -> None:
    clock = FakeClock(0.0)
    sim = SimulatedBackend(2, clock=clock)
    previous = [sim.total_energy_joules(i) for i in range(2)]
    for step in steps:
        clock.advance(step)
        current = [sim.total_energy_joules(i) for i in range(2)]
        for before, now in zip(previous, current, strict=True):
            assert now >= before - 1e-9
        previous = current


def test_readings_are_plausible() -> None:
    clock = FakeClock(0.0)
    sim = SimulatedBackend(3, clock=clock)
    seen_util = set()
    for _ in range(200):  # 2 load cycles in 0.2 s steps
        clock.advance(0.2)
        for i in range(3):
            total = sim.device_info(i).memory_total_bytes
            util = sim.utilization_percent(i)
            seen_util.add(round(util))
            assert 10.0 <= util <= 90.0
            assert 0 < sim.memory_used_bytes(i) < total
            assert 35.0 <= sim.temperature_celsius(i) <= 75.0
            assert 100.0 <= sim.power_watts(i) <= 600.0
    assert max(seen_util) - min(seen_util) > 50  # it actually varies


def test_identity_and_errors() -> None:
    sim = SimulatedBackend(2)
    assert sim.simulated is True and sim.name == "simulated"
    assert sim.device_count() == 2
    infos = [sim.device_info(i) for i in range(2)]
    assert len({info.uuid for info in infos}) == 2
    assert all(info.uuid.startswith("GPU-") for info in infos)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        sim.power_watts(2)
    with pytest.raises(ValueError, match=r"1\.\.64"):
        SimulatedBackend(0)


def test_run_over_simulated_gpus_counter_and_integration_agree() -> None:
    clock = FakeClock(0.0)
    sampler = Sampler(SimulatedBackend(2, clock=clock), clock=clock)
    registry = RunRegistry(sampler, clock=clock)
    registry.start(RunParams.create("sim", interval_ms=100))
    for _ in range(300):  # 30 s at 100 ms
        clock.advance(0.1)
        sampler.sweep()
    summary = registry.stop("sim")
    assert summary.simulated is True
    assert summary.energy_method == "counter"
    for device in summary.devices:
        assert device.counter_reset is False
        assert device.energy_joules > 0
    meter_energy = [registry.get("sim").accounts[d.uuid].energy for d in summary.devices]
    for meter in meter_energy:
        assert meter.integrated_joules == pytest.approx(meter.counter_joules, rel=1e-3)
    assert [s.unsupported for s in sampler.devices()] == [set(), set()]
