"""The fake itself: it must honour the backend protocol and raise the real pynvml error classes."""

from __future__ import annotations

import pynvml
import pytest

from smoltrace_gpu_exporter.nvml import DeviceInfo, ErrorKind, Field, NvmlBackend, PynvmlBackend, classify_error
from smoltrace_gpu_exporter.simulated import SimulatedBackend
from tests.fakes.fake_nvml import GIB, FakeClock, FakeNvml


def test_backends_satisfy_the_protocol() -> None:
    assert isinstance(FakeNvml(1), NvmlBackend)
    assert isinstance(SimulatedBackend(1), NvmlBackend)
    assert isinstance(PynvmlBackend(), NvmlBackend)


def test_readings_are_scripted_per_device_and_over_time() -> None:
    clock = FakeClock(10.0)
    nvml = FakeNvml(2, clock=clock)
    nvml.init()
    assert nvml.device_count() == 2
    assert nvml.device_info(1) == DeviceInfo(1, nvml.gpu(1).uuid, "NVIDIA Fake A100-SXM4-80GB", 80 * GIB)
    assert nvml.utilization_percent(0) == 40.0
    assert nvml.utilization_percent(1) == 50.0
    assert nvml.memory_used_bytes(1) == 11 * GIB
    nvml.gpu(0).set(Field.POWER, lambda t: 100.0 + t)
    assert nvml.power_watts(0) == 110.0
    clock.advance(5)
    assert nvml.power_watts(0) == 115.0
    assert nvml.calls["power_watts"] == 2
    assert nvml.device_calls[("power_watts", 0)] == 2


def test_calls_before_init_raise_uninitialized() -> None:
    nvml = FakeNvml(1)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.device_count()
    nvml.init()
    nvml.shutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.power_watts(0)


@pytest.mark.parametrize(
    ("setup", "error_class", "kind"),
    [
        (lambda g: g.unsupported(Field.POWER), pynvml.NVMLError_NotSupported, ErrorKind.UNSUPPORTED),
        (lambda g: g.no_permission(Field.POWER), pynvml.NVMLError_NoPermission, ErrorKind.UNSUPPORTED),
        (lambda g: g.fail(Field.POWER, pynvml.NVML_ERROR_TIMEOUT), pynvml.NVMLError_Timeout, ErrorKind.TRANSIENT),
        (lambda g: g.lose_after(0), pynvml.NVMLError_GpuIsLost, ErrorKind.DEVICE_LOST),
    ],
)
def test_field_and_device_faults_raise_the_real_classes(setup, error_class, kind) -> None:
    nvml = FakeNvml(1)
    nvml.init()
    setup(nvml.gpu(0))
    with pytest.raises(error_class) as info:
        nvml.power_watts(0)
    assert type(info.value) is error_class
    assert isinstance(info.value, pynvml.NVMLError)
    assert classify_error(info.value) is kind


def test_lose_after_counts_calls_on_that_device_only() -> None:
    nvml = FakeNvml(2)
    nvml.init()
    nvml.gpu(1).lose_after(2)
    nvml.power_watts(1)
    nvml.utilization_percent(1)
    for _ in range(5):
        nvml.power_watts(0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.temperature_celsius(1)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.device_info(1)
    assert nvml.power_watts(0) == 200.0


def test_transient_fault_window() -> None:
    nvml = FakeNvml(1)
    nvml.init()
    nvml.gpu(0).fail(Field.TEMPERATURE, pynvml.NVML_ERROR_TIMEOUT, after=1, times=2)
    assert nvml.temperature_celsius(0) == 50.0
    for _ in range(2):
        with pytest.raises(pynvml.NVMLError_Timeout):
            nvml.temperature_celsius(0)
    assert nvml.temperature_celsius(0) == 50.0


def test_energy_counter_set_advance_reset() -> None:
    nvml = FakeNvml(1)
    nvml.init()
    gpu = nvml.gpu(0).set_energy(500.0)
    assert nvml.total_energy_joules(0) == 500.0
    gpu.advance_energy(12.5)
    assert nvml.total_energy_joules(0) == 512.5
    gpu.reset_energy()
    assert nvml.total_energy_joules(0) == 0.0
    with pytest.raises(ValueError):
        gpu.advance_energy(-1)


def test_missing_library() -> None:
    nvml = FakeNvml(1).missing_library()
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        nvml.init()
    assert classify_error(pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)) is ErrorKind.LIBRARY


def test_library_breaks_after_calls_and_recovers_on_reinit() -> None:
    nvml = FakeNvml(1)
    nvml.init()
    nvml.break_library(after_calls=2, code=pynvml.NVML_ERROR_DRIVER_NOT_LOADED, failed_inits=1)
    nvml.power_watts(0)
    nvml.power_watts(0)
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        nvml.power_watts(0)
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        nvml.device_count()
    nvml.shutdown()
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        nvml.init()
    nvml.init()
    assert not nvml.library_broken
    assert nvml.power_watts(0) == 200.0


def test_nvml_error_code_maps_to_subclass() -> None:
    err = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert type(err) is pynvml.NVMLError_NotSupported
    assert err.value == pynvml.NVML_ERROR_NOT_SUPPORTED
