"""The real `PynvmlBackend`'s MIG enumeration against a fake `pynvml` module.

The fake module has the nvidia-ml-py 13.615.71 functions the backend calls, with their signatures
and return shapes (`nvmlDeviceGetMigMode` -> [current, pending], handles as opaque objects, bytes
or str UUIDs, memory info objects with total/used), and raises the REAL `pynvml.NVMLError_*`
classes, so the backend's error classification runs as with the library.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import pynvml
import pytest

from smoltrace_gpu_exporter import nvml as nvml_module
from smoltrace_gpu_exporter.nvml import PynvmlBackend
from smoltrace_gpu_exporter.sampler import Sampler

GIB = 1024**3


@dataclass(frozen=True)
class Handle:
    gpu: int
    slot: int | None = None  # a MIG handle's slot under its parent


@dataclass
class FakeGpuSpec:
    uuid: str
    memory_total: int
    mig_mode: int | None  # None: the GPU has no MIG mode (NOT_SUPPORTED)
    max_mig: int = 7
    slots: dict[int, tuple[str, int, int, int]] = field(default_factory=dict)  # slot -> (uuid, total, used, gpu instance id)


class FakePynvml(types.ModuleType):
    """Just what PynvmlBackend calls, with nvidia-ml-py's shapes."""

    def __init__(self, gpus: list[FakeGpuSpec]) -> None:
        super().__init__("pynvml")
        self.gpus = gpus
        self.calls: list[str] = []
        for name in dir(pynvml):  # constants and the real error classes
            if name.startswith(("NVML_", "NVMLError")) or name == "nvmlMemory_v2":
                setattr(self, name, getattr(pynvml, name))

    def _gpu(self, handle: Handle) -> FakeGpuSpec:
        return self.gpus[handle.gpu]

    def nvmlInit(self) -> None:  # noqa: N802
        self.calls.append("nvmlInit")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:  # noqa: N802
        return Handle(index)

    def nvmlDeviceGetUUID(self, handle: Handle) -> bytes:  # noqa: N802
        gpu = self._gpu(handle)
        return (gpu.uuid if handle.slot is None else gpu.slots[handle.slot][0]).encode()

    def nvmlDeviceGetName(self, handle: Handle) -> str:  # noqa: N802
        return "NVIDIA H100 80GB HBM3" + ("" if handle.slot is None else " MIG 1g.10gb")

    def nvmlDeviceGetMemoryInfo(self, handle: Handle, version: object = None) -> types.SimpleNamespace:  # noqa: N802
        gpu = self._gpu(handle)
        if handle.slot is None:
            return types.SimpleNamespace(total=gpu.memory_total, used=20 * GIB, free=0)
        _uuid, total, used, _gi = gpu.slots[handle.slot]
        return types.SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetMigMode(self, handle: Handle) -> list[int]:  # noqa: N802
        self.calls.append("nvmlDeviceGetMigMode")
        mode = self._gpu(handle).mig_mode
        if mode is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Handle) -> int:  # noqa: N802
        return self._gpu(handle).max_mig

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Handle, index: int) -> Handle:  # noqa: N802
        self.calls.append(f"nvmlDeviceGetMigDeviceHandleByIndex({handle.gpu},{index})")
        if index not in self._gpu(handle).slots:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return Handle(handle.gpu, index)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, mig: Handle) -> Handle:  # noqa: N802
        self.calls.append("nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        return Handle(mig.gpu)

    def nvmlDeviceGetGpuInstanceId(self, mig: Handle) -> int:  # noqa: N802
        assert mig.slot is not None
        return self._gpu(mig).slots[mig.slot][3]

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> types.SimpleNamespace:  # noqa: N802
        return types.SimpleNamespace(gpu=55, memory=10)

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:  # noqa: N802
        return 61

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:  # noqa: N802
        return 310_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:  # noqa: N802
        return 5_000_000  # mJ


PARENT = "GPU-aaaaaaaa-0000-4000-8000-000000000000"
MIG_A = "MIG-aaaaaaaa-0001-4000-8000-000000000000"
MIG_B = "MIG-aaaaaaaa-0003-4000-8000-000000000000"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    module = FakePynvml(
        [
            # MIG on: slots 0 and 2 hold instances, 1 and 3..6 are empty (NOT_FOUND)
            FakeGpuSpec(
                PARENT, 80 * GIB, pynvml.NVML_DEVICE_MIG_ENABLE, slots={0: (MIG_A, 10 * GIB, 2 * GIB, 9), 2: (MIG_B, 40 * GIB, 7 * GIB, 1)}
            ),
            FakeGpuSpec("GPU-bbbbbbbb-0000-4000-8000-000000000000", 80 * GIB, pynvml.NVML_DEVICE_MIG_DISABLE),
            FakeGpuSpec("GPU-cccccccc-0000-4000-8000-000000000000", 16 * GIB, None),  # no MIG mode at all (a T4)
        ]
    )
    monkeypatch.setattr(nvml_module, "pynvml", module)
    return module


def test_mig_instances_are_enumerated_from_a_mig_enabled_gpu(fake: FakePynvml) -> None:
    backend = PynvmlBackend()
    backend.init()
    a, b = backend.mig_devices(0)
    assert (a.uuid, a.index, a.mig_index, a.is_mig, a.parent_uuid, a.memory_total_bytes, a.gpu_instance_id) == (
        MIG_A,
        0,
        0,
        True,
        PARENT,
        10 * GIB,
        9,
    )
    assert (b.uuid, b.mig_index, b.memory_total_bytes, b.gpu_instance_id) == (MIG_B, 2, 40 * GIB, 1)
    assert a.name.endswith("MIG 1g.10gb")
    # every slot up to nvmlDeviceGetMaxMigDeviceCount is tried; empty ones (NOT_FOUND) are skipped
    assert [c for c in fake.calls if c.startswith("nvmlDeviceGetMigDeviceHandleByIndex")] == [
        f"nvmlDeviceGetMigDeviceHandleByIndex(0,{i})" for i in range(7)
    ]
    assert fake.calls.count("nvmlDeviceGetDeviceHandleFromMigDeviceHandle") == 2  # the parent, as NVML says it
    assert backend.mig_memory_used_bytes(0, 2) == 7 * GIB


def test_mig_disabled_or_unsupported_means_no_instances(fake: FakePynvml) -> None:
    backend = PynvmlBackend()
    backend.init()
    assert backend.mig_devices(1) == []  # MIG mode off
    assert backend.mig_devices(2) == []  # NOT_SUPPORTED: no MIG on this GPU


def test_the_sampler_reads_mig_memory_from_the_mig_handle_and_the_rest_from_the_parent(fake: FakePynvml) -> None:
    sampler = Sampler(PynvmlBackend(), clock=lambda: 100.0)
    assert [s.info.uuid for s in sampler.devices()][:3] == [PARENT, MIG_A, MIG_B]
    parent, a, b = sampler.sweep().devices[:3]
    assert (a.memory_used_bytes, b.memory_used_bytes, parent.memory_used_bytes) == (2 * GIB, 7 * GIB, 20 * GIB)
    assert (a.utilization_percent, a.power_watts, a.temperature_celsius, a.energy_counter_joules) == (55.0, 310.0, 61.0, 5000.0)
    assert len(sampler.devices()) == 5
