"""nvml.py: error classification, and the real nvidia-ml-py on a machine without a driver."""

from __future__ import annotations

import pynvml
import pytest

from smoltrace_gpu_exporter.nvml import ErrorKind, PynvmlBackend, classify_error, describe_error
from smoltrace_gpu_exporter.runs import RunParams, RunRegistry
from smoltrace_gpu_exporter.sampler import Sampler


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (pynvml.NVML_ERROR_NOT_SUPPORTED, ErrorKind.UNSUPPORTED),
        (pynvml.NVML_ERROR_NO_PERMISSION, ErrorKind.UNSUPPORTED),
        (pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, ErrorKind.UNSUPPORTED),
        (pynvml.NVML_ERROR_GPU_IS_LOST, ErrorKind.DEVICE_LOST),
        (pynvml.NVML_ERROR_RESET_REQUIRED, ErrorKind.DEVICE_LOST),
        (pynvml.NVML_ERROR_GPU_NOT_FOUND, ErrorKind.DEVICE_LOST),
        (pynvml.NVML_ERROR_UNINITIALIZED, ErrorKind.LIBRARY),
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, ErrorKind.LIBRARY),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, ErrorKind.LIBRARY),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, ErrorKind.LIBRARY),
        (pynvml.NVML_ERROR_UNKNOWN, ErrorKind.LIBRARY),
        (pynvml.NVML_ERROR_TIMEOUT, ErrorKind.TRANSIENT),
        (pynvml.NVML_ERROR_NO_DATA, ErrorKind.TRANSIENT),
    ],
)
def test_classify_error(code: int, kind: ErrorKind) -> None:
    assert classify_error(pynvml.NVMLError(code)) is kind


def test_non_nvml_errors_are_transient() -> None:
    assert classify_error(ValueError("boom")) is ErrorKind.TRANSIENT
    assert describe_error(ValueError("boom")) == "boom"


def test_describe_error_names_the_code() -> None:
    assert describe_error(pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)) == "GPU is lost (NVML error 15)"


def _driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


no_driver = pytest.mark.skipif(_driver_present(), reason="an NVIDIA driver is installed here; this checks the no-driver path")


@no_driver
def test_real_pynvml_without_driver_raises_library_not_found() -> None:
    with pytest.raises(pynvml.NVMLError_LibraryNotFound) as info:
        PynvmlBackend().init()
    assert classify_error(info.value) is ErrorKind.LIBRARY


@no_driver
def test_sampler_over_real_pynvml_stays_in_soft_mode() -> None:
    sampler = Sampler(PynvmlBackend())
    assert sampler.health.nvml_up is False
    assert "Library Not Found" in sampler.health.nvml_error
    assert "(NVML error 12)" in sampler.health.nvml_error
    assert sampler.health.errors == {"init_failed": 1}
    snapshot = sampler.sweep()
    assert snapshot.nvml_up is False
    assert snapshot.devices == ()
    assert sampler.devices() == []
    sampler.stop()


@no_driver
def test_registry_over_real_pynvml_reports_no_gpu() -> None:
    sampler = Sampler(PynvmlBackend())
    registry = RunRegistry(sampler)
    run, already = registry.start(RunParams.create("no-gpu-run"))
    assert already is False
    assert run.gpu_available is False
    assert run.message.startswith("NVML unavailable: ")
    assert "Library Not Found" in run.message
    summary = registry.stop("no-gpu-run")
    assert summary.gpu_available is False
    assert summary.devices == ()
    assert summary.energy_joules == 0.0
    assert summary.energy_method == "none"
    assert summary.message == run.message
    assert summary.sample_count == 2  # the two boundary sweeps
