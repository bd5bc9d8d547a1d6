"""sampler.py over FakeNvml: the failure model, re-initialisation with backoff, listeners, the loop."""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from smoltrace_gpu_exporter.nvml import Field
from smoltrace_gpu_exporter.sampler import INITIAL_BACKOFF_S, MAX_BACKOFF_S, DeviceReading, Sampler, Snapshot
from tests.fakes.fake_nvml import GIB, FakeClock, FakeNvml


class Recorder:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.lock = threading.Lock()

    def on_snapshot(self, snapshot: Snapshot) -> None:
        with self.lock:
            self.snapshots.append(snapshot)

    def count(self) -> int:
        with self.lock:
            return len(self.snapshots)


def by_uuid(snapshot: Snapshot) -> dict[str, DeviceReading]:
    return {r.uuid: r for r in snapshot.devices}


def test_sweep_reads_every_device(nvml: FakeNvml, sampler: Sampler, clock: FakeClock) -> None:
    assert sampler.health.nvml_up is True
    assert sampler.health.driver_version == "550.54.15"
    snapshot = sampler.sweep()
    assert snapshot.nvml_up is True
    assert snapshot.monotonic == clock.now
    assert [r.index for r in snapshot.devices] == [0, 1]
    r0, r1 = snapshot.devices
    assert (r0.utilization_percent, r0.memory_used_bytes, r0.temperature_celsius, r0.power_watts) == (40.0, 10 * GIB, 50.0, 200.0)
    assert (r1.utilization_percent, r1.memory_used_bytes, r1.temperature_celsius, r1.power_watts) == (50.0, 11 * GIB, 51.0, 250.0)
    assert r0.energy_counter_joules == 1_000_000.0
    assert r1.energy_counter_joules == 1_001_000.0
    assert r0.uuid == nvml.gpu(0).uuid and r0.memory_total_bytes == 80 * GIB
    assert not r0.failed and not r1.failed
    assert sampler.latest is snapshot
    assert sampler.health.sweeps == 1
    assert sampler.health.errors == {}


def test_wall_clock_is_injectable(nvml: FakeNvml, clock: FakeClock) -> None:
    sampler = Sampler(nvml, clock=clock, wall_clock_ns=lambda: 1_700_000_000_123_000_000)
    snapshot = sampler.sweep()
    assert snapshot.timestamp_ns == 1_700_000_000_123_000_000
    assert sampler.health.last_success_unix == pytest.approx(1_700_000_000.123)


@pytest.mark.parametrize("mark", ["unsupported", "no_permission"])
def test_unsupported_fields_are_cached_and_omitted(clock: FakeClock, mark: str) -> None:
    nvml = FakeNvml(2, clock=clock)
    getattr(nvml.gpu(0), mark)(Field.POWER, Field.ENERGY)
    sampler = Sampler(nvml, clock=clock)
    for _ in range(3):
        clock.advance(1.0)
        snapshot = sampler.sweep()
        r0, r1 = snapshot.devices
        assert r0.power_watts is None  # omitted, never 0
        assert r0.energy_counter_joules is None
        assert r0.utilization_percent == 40.0  # the other fields still come
        assert r1.power_watts == 250.0
        assert r1.energy_counter_joules == 1_001_000.0
    assert nvml.device_calls[("power_watts", 0)] == 1  # asked once, then cached as unsupported
    assert nvml.device_calls[("total_energy_joules", 0)] == 1
    assert nvml.device_calls[("power_watts", 1)] == 3
    assert nvml.device_calls[("utilization_percent", 0)] == 3
    assert sampler.devices()[0].unsupported == {Field.POWER, Field.ENERGY}
    assert sampler.devices()[1].unsupported == set()
    assert sampler.health.errors == {}
    assert sampler.devices()[0].lifetime_energy.method == "none"


def test_transient_errors_skip_one_reading_only(clock: FakeClock) -> None:
    nvml = FakeNvml(1, clock=clock)
    nvml.gpu(0).fail(Field.TEMPERATURE, pynvml.NVML_ERROR_TIMEOUT, times=1)
    sampler = Sampler(nvml, clock=clock)
    first = sampler.sweep().devices[0]
    second = sampler.sweep().devices[0]
    assert first.temperature_celsius is None
    assert first.power_watts == 200.0
    assert second.temperature_celsius == 50.0
    assert sampler.health.errors == {"transient": 1}
    assert sampler.devices()[0].unsupported == set()


def test_lost_gpu_is_marked_failed_and_others_keep_reporting(clock: FakeClock) -> None:
    nvml = FakeNvml(3, clock=clock)
    sampler = Sampler(nvml, clock=clock)
    sampler.sweep()
    nvml.gpu(1).lose_now()
    lost = sampler.sweep()
    calls_after_loss = nvml.gpu(1).calls
    later = [sampler.sweep() for _ in range(3)]
    for snapshot in (lost, *later):
        r0, r1, r2 = snapshot.devices
        assert r1.failed is True
        assert (r1.utilization_percent, r1.memory_used_bytes, r1.temperature_celsius, r1.power_watts, r1.energy_counter_joules) == (
            None,
            None,
            None,
            None,
            None,
        )
        assert r1.error == "GPU is lost (NVML error 15)"
        assert r1.uuid == nvml.gpu(1).uuid and r1.memory_total_bytes == 80 * GIB
        assert r0.power_watts == 200.0 and r2.power_watts == 300.0
        assert not r0.failed and not r2.failed
    assert snapshot.nvml_up is True
    assert nvml.gpu(1).calls == calls_after_loss  # a failed GPU is not asked again
    state = sampler.devices()[1]
    assert state.failed is True
    assert state.error == "GPU is lost (NVML error 15)"
    assert sampler.health.errors == {"device_lost": 1}
    assert sampler.health.nvml_up is True


def test_reset_required_is_a_device_failure_too(clock: FakeClock) -> None:
    nvml = FakeNvml(2, clock=clock)
    nvml.gpu(0).lose_after(3, code=pynvml.NVML_ERROR_RESET_REQUIRED)  # device_info at discovery + 2 readings
    sampler = Sampler(nvml, clock=clock)
    r0, r1 = sampler.sweep().devices
    assert r0.failed is True  # the 4th call (temperature) raised: the half-read values are dropped
    assert r0.utilization_percent is None
    assert "NVML error 16" in sampler.devices()[0].error
    assert not r1.failed and r1.power_watts == 250.0


def test_gpu_lost_at_discovery_does_not_hide_the_others(clock: FakeClock) -> None:
    nvml = FakeNvml(3, clock=clock)
    nvml.gpu(1).lose_after(0)
    sampler = Sampler(nvml, clock=clock)
    assert sampler.health.nvml_up is True
    assert [s.info.uuid for s in sampler.devices()] == [nvml.gpu(0).uuid, nvml.gpu(2).uuid]
    snapshot = sampler.sweep()
    assert [(r.index, r.power_watts) for r in snapshot.devices] == [(0, 200.0), (2, 300.0)]
    assert sampler.health.errors == {"device_lost": 1}


def test_library_error_marks_nvml_down_and_reinitialises_with_backoff(clock: FakeClock) -> None:
    nvml = FakeNvml(2, clock=clock)
    sampler = Sampler(nvml, clock=clock)
    sampler.sweep()
    assert nvml.init_count == 1 and nvml.calls["device_count"] == 1
    nvml.gpu(0).advance_energy(100.0)
    nvml.break_library(after_calls=3, code=pynvml.NVML_ERROR_UNKNOWN, failed_inits=1)

    down = sampler.sweep()
    assert down.nvml_up is False
    assert down.devices == ()  # nothing half-read is published
    assert sampler.health.nvml_up is False
    assert sampler.health.nvml_error == "Unknown Error (NVML error 999)"
    assert sampler.health.errors == {"library": 1}
    assert nvml.shutdown_count == 1

    clock.advance(INITIAL_BACKOFF_S - 0.01)
    assert sampler.sweep().devices == ()
    assert nvml.init_count == 1  # not before the backoff
    clock.advance(0.01)
    assert sampler.sweep().nvml_up is False  # first re-init fails
    assert nvml.init_count == 2
    assert sampler.health.errors == {"library": 1, "init_failed": 1}
    clock.advance(2 * INITIAL_BACKOFF_S - 0.01)  # the backoff doubled
    sampler.sweep()
    assert nvml.init_count == 2
    clock.advance(0.01)
    up = sampler.sweep()
    assert nvml.init_count == 3
    assert up.nvml_up is True and sampler.health.nvml_up is True
    assert sampler.health.nvml_error == ""
    assert nvml.calls["device_count"] == 2  # devices rediscovered
    assert nvml.device_calls[("device_info", 0)] == 2 and nvml.device_calls[("device_info", 1)] == 2
    assert [(r.index, r.power_watts) for r in up.devices] == [(0, 200.0), (1, 250.0)]
    # the per-GPU state survives the re-init: lifetime energy kept counting
    assert sampler.devices()[0].lifetime_energy.counter_joules == 100.0

    nvml.break_library(after_calls=0, code=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    assert sampler.sweep().nvml_up is False
    clock.advance(INITIAL_BACKOFF_S)  # a successful init reset the backoff
    assert sampler.sweep().nvml_up is True
    assert sampler.health.reinit_attempts == 4


def test_backoff_doubles_up_to_a_minute(clock: FakeClock) -> None:
    nvml = FakeNvml(1, clock=clock).missing_library()
    sampler = Sampler(nvml, clock=clock)
    start = clock.now
    attempts = []
    count = nvml.init_count
    for _ in range(500):  # 250 s in 0.5 s steps
        clock.advance(0.5)
        sampler.sweep()
        if nvml.init_count != count:
            count = nvml.init_count
            attempts.append(clock.now - start)
    gaps = [b - a for a, b in zip([0.0, *attempts], attempts, strict=False)]
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert MAX_BACKOFF_S == 60


def test_devices_are_rediscovered_and_vanished_ones_marked_failed(clock: FakeClock) -> None:
    nvml = FakeNvml(2, clock=clock)
    sampler = Sampler(nvml, clock=clock)
    uuid0, uuid1 = nvml.gpu(0).uuid, nvml.gpu(1).uuid
    nvml.break_library(after_calls=0)
    sampler.sweep()
    nvml.remove_gpu(0)
    clock.advance(1.0)
    snapshot = sampler.sweep()
    assert snapshot.nvml_up is True
    assert [(r.uuid, r.index) for r in snapshot.devices] == [(uuid1, 0)]
    gone = sampler.device(uuid0)
    assert gone is not None and gone.failed is True
    assert "no longer visible" in gone.error
    assert sampler.device(uuid1).info.index == 0


def test_missing_library_is_soft_mode(clock: FakeClock) -> None:
    nvml = FakeNvml(2, clock=clock).missing_library()
    sampler = Sampler(nvml, clock=clock)  # no exception
    assert sampler.health.nvml_up is False
    assert sampler.health.nvml_error == "NVML Shared Library Not Found (NVML error 12)"
    assert sampler.health.errors == {"init_failed": 1}
    assert sampler.devices() == []
    for _ in range(3):
        clock.advance(0.1)
        snapshot = sampler.sweep()
        assert snapshot.nvml_up is False
        assert snapshot.devices == ()
    assert sampler.health.last_success_unix == 0.0
    assert nvml.total_calls == nvml.calls["init"] == 1
    sampler.stop()  # no shutdown of a library that never came up
    assert nvml.shutdown_count == 0

    nvml.missing_library(False)  # the driver is installed later: picked up at the next retry
    clock.advance(1.0)
    assert len(sampler.sweep().devices) == 2
    assert sampler.health.nvml_up is True


def test_no_gpu_visible(clock: FakeClock) -> None:
    sampler = Sampler(FakeNvml(0, clock=clock), clock=clock)
    assert sampler.health.nvml_up is True
    assert sampler.health.nvml_error == "no GPU visible to NVML"
    assert sampler.sweep().devices == ()


def test_listeners_get_every_snapshot_in_order(sampler: Sampler, clock: FakeClock) -> None:
    first, second = Recorder(), Recorder()

    class Broken:
        def on_snapshot(self, snapshot: Snapshot) -> None:
            raise RuntimeError("listener bug")

    sampler.add_listener(first)
    sampler.add_listener(Broken())
    sampler.add_listener(second)
    taken = []
    for _ in range(5):
        clock.advance(0.25)
        taken.append(sampler.sweep())
    assert first.snapshots == taken
    assert second.snapshots == taken  # a failing listener does not stop the others
    assert [s.monotonic for s in taken] == sorted({s.monotonic for s in taken})


def test_sweep_after_callback_sees_the_published_snapshot(sampler: Sampler) -> None:
    seen: list[Snapshot] = []

    def after(snapshot: Snapshot) -> None:
        assert sampler.sweep_lock._is_owned()  # type: ignore[attr-defined]
        seen.append(snapshot)

    snapshot = sampler.sweep(after=after)
    assert seen == [snapshot]


def test_lifetime_energy_from_counter(nvml: FakeNvml, sampler: Sampler, clock: FakeClock) -> None:
    sampler.sweep()
    for step in (10.0, 20.0, 30.0):
        clock.advance(1.0)
        nvml.gpu(0).advance_energy(step)
        sampler.sweep()
    meter = sampler.devices()[0].lifetime_energy
    assert meter.method == "counter"
    assert meter.joules == 60.0


# -- the loop thread (real time, short intervals) -----------------------------------------------------
def wait_for(predicate, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_loop_honours_the_interval_source_and_stops_quickly() -> None:
    interval: list[float | None] = [0.05]
    sampler = Sampler(FakeNvml(1), idle_interval_s=30.0, interval_source=lambda: interval[0])
    recorder = Recorder()
    sampler.add_listener(recorder)
    sampler.start()
    try:
        assert wait_for(lambda: recorder.count() >= 6)
        snaps = recorder.snapshots[:6]
        mean_gap = (snaps[-1].monotonic - snaps[0].monotonic) / 5
        assert 0.045 <= mean_gap <= 0.2  # on the asked-for 50 ms schedule, not faster
        assert sampler.current_interval_s() == 0.05

        interval[0] = None  # no run: idle interval (30 s)
        time.sleep(0.1)  # let the current wait lapse
        idle_from = recorder.count()
        time.sleep(0.3)
        assert recorder.count() - idle_from <= 1
        assert sampler.current_interval_s() == 30.0

        interval[0] = 0.05  # a run starts: wake() re-plans at once instead of sleeping 30 s
        sampler.wake()
        resumed = recorder.count()
        assert wait_for(lambda: recorder.count() >= resumed + 3, timeout=1.0)
    finally:
        started = time.monotonic()
        sampler.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 0.5
    assert sampler._thread is None
    after = recorder.count()
    time.sleep(0.15)
    assert recorder.count() == after


def test_stop_is_quick_while_idle() -> None:
    nvml = FakeNvml(1)
    sampler = Sampler(nvml, idle_interval_s=60.0)
    recorder = Recorder()
    sampler.add_listener(recorder)
    sampler.start()
    assert wait_for(lambda: recorder.count() == 1)
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 0.5
    assert nvml.shutdown_count == 1
    assert recorder.count() == 1
