"""The NVML seam: a narrow backend protocol, the real `nvidia-ml-py` backend, error classes.

Everything that touches `pynvml` lives here. The sampler only sees `NvmlBackend`; tests swap in a
fake that raises the real `pynvml.NVMLError_*` classes, demos use `SimulatedBackend`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pynvml


class Field(enum.StrEnum):
    """A per-device reading. A field a device does not support is omitted, never reported as 0."""

    UTILIZATION = "utilization"
    MEMORY_USED = "memory_used"
    TEMPERATURE = "temperature"
    POWER = "power"
    ENERGY = "energy"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A whole GPU, or a MIG instance carved from one (`is_mig`). A MIG instance carries its
    parent's NVML `index`, the parent's UUID and its own slot under the parent (`mig_index`, what
    `nvmlDeviceGetMigDeviceHandleByIndex` takes and the `GPU:MIG` form of NVIDIA_VISIBLE_DEVICES
    names); `memory_total_bytes` is the instance's own memory."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    is_mig: bool = False
    parent_uuid: str = ""
    mig_index: int = -1
    gpu_instance_id: int = -1


@runtime_checkable
class NvmlBackend(Protocol):
    """What the sampler needs from NVML. Methods raise `pynvml.NVMLError` subclasses."""

    name: str
    simulated: bool

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str: ...
    def device_count(self) -> int: ...
    def device_info(self, index: int) -> DeviceInfo: ...
    def utilization_percent(self, index: int) -> float: ...
    def memory_used_bytes(self, index: int) -> int: ...
    def temperature_celsius(self, index: int) -> float: ...
    def power_watts(self, index: int) -> float: ...
    def total_energy_joules(self, index: int) -> float: ...
    def mig_devices(self, index: int) -> list[DeviceInfo]: ...
    def mig_memory_used_bytes(self, index: int, mig_index: int) -> int: ...


class ErrorKind(enum.StrEnum):
    UNSUPPORTED = "unsupported"  # the device lacks the field: cache it and omit it
    DEVICE_LOST = "device_lost"  # this GPU is gone or needs a reset: mark it failed, others go on
    LIBRARY = "library"  # NVML itself is broken or gone: re-initialise with backoff
    TRANSIENT = "transient"  # skip this reading, try again next sweep


_UNSUPPORTED = {
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_NO_PERMISSION,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
    pynvml.NVML_ERROR_NOT_FOUND,
    pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
    pynvml.NVML_ERROR_DEPRECATED,
}
_DEVICE_LOST = {
    pynvml.NVML_ERROR_GPU_IS_LOST,
    pynvml.NVML_ERROR_RESET_REQUIRED,
    pynvml.NVML_ERROR_GPU_NOT_FOUND,
}
_LIBRARY = {
    pynvml.NVML_ERROR_UNINITIALIZED,
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    pynvml.NVML_ERROR_UNKNOWN,
}


def classify_error(err: BaseException) -> ErrorKind:
    value = getattr(err, "value", None)
    if value in _UNSUPPORTED:
        return ErrorKind.UNSUPPORTED
    if value in _DEVICE_LOST:
        return ErrorKind.DEVICE_LOST
    if value in _LIBRARY:
        return ErrorKind.LIBRARY
    return ErrorKind.TRANSIENT


def describe_error(err: BaseException) -> str:
    """A short message for an NVML error ("GPU is lost (NVML error 15)")."""
    value = getattr(err, "value", None)
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - pynvml formats lazily through the library, which may be gone
        text = type(err).__name__
    return f"{text} (NVML error {value})" if value is not None else text


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class PynvmlBackend:
    """The real NVML, through `nvidia-ml-py`. Handles are looked up once per `init()`."""

    name = "nvml"
    simulated = False

    def __init__(self) -> None:
        self._handles: dict[int, object] = {}
        self._mig_handles: dict[tuple[int, int], object] = {}
        self._memory_v2 = True

    def init(self) -> None:
        pynvml.nvmlInit()
        self._handles = {}
        self._mig_handles = {}

    def shutdown(self) -> None:
        self._handles = {}
        self._mig_handles = {}
        pynvml.nvmlShutdown()

    def _handle(self, index: int) -> object:
        handle = self._handles.get(index)
        if handle is None:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._handles[index] = handle
        return handle

    def driver_version(self) -> str:
        return _text(pynvml.nvmlSystemGetDriverVersion())

    def device_count(self) -> int:
        return int(pynvml.nvmlDeviceGetCount())

    def device_info(self, index: int) -> DeviceInfo:
        handle = self._handle(index)
        memory = self._memory(handle)
        return DeviceInfo(
            index=index,
            uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
            name=_text(pynvml.nvmlDeviceGetName(handle)),
            memory_total_bytes=int(memory.total),
        )

    def utilization_percent(self, index: int) -> float:
        return float(pynvml.nvmlDeviceGetUtilizationRates(self._handle(index)).gpu)

    def _memory(self, handle: object) -> object:
        """Memory info v2, whose `used` excludes driver-reserved memory as nvidia-smi's does
        (v1's `used` counts the reserved part: ~600 MiB on an idle H200). v1 on older drivers."""
        if self._memory_v2:
            try:
                return pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
            except pynvml.NVMLError as err:
                if classify_error(err) is not ErrorKind.UNSUPPORTED:
                    raise
                self._memory_v2 = False
        return pynvml.nvmlDeviceGetMemoryInfo(handle)

    def memory_used_bytes(self, index: int) -> int:
        return int(self._memory(self._handle(index)).used)

    def temperature_celsius(self, index: int) -> float:
        return float(pynvml.nvmlDeviceGetTemperature(self._handle(index), pynvml.NVML_TEMPERATURE_GPU))

    def power_watts(self, index: int) -> float:
        return pynvml.nvmlDeviceGetPowerUsage(self._handle(index)) / 1000.0  # mW

    def total_energy_joules(self, index: int) -> float:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle(index)) / 1000.0  # mJ

    # -- MIG ----------------------------------------------------------------------------------
    def mig_devices(self, index: int) -> list[DeviceInfo]:
        """The MIG instances of GPU `index` ([] when MIG is off or the GPU has no MIG mode).

        `nvmlDeviceGetMigMode` -> (current, pending); with MIG enabled, slots
        0..`nvmlDeviceGetMaxMigDeviceCount`-1 are tried with `nvmlDeviceGetMigDeviceHandleByIndex`
        (an empty slot answers NOT_FOUND). Each instance: its UUID (`MIG-...`), its name, its own
        memory (memory info of the MIG handle), its parent through
        `nvmlDeviceGetDeviceHandleFromMigDeviceHandle`, its GPU instance id."""
        handle = self._handle(index)
        try:
            current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError as err:
            if classify_error(err) is ErrorKind.UNSUPPORTED:
                return []
            raise
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            return []
        parent_uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
        out: list[DeviceInfo] = []
        for slot in range(int(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError as err:
                if classify_error(err) is ErrorKind.UNSUPPORTED:  # NOT_FOUND: no instance in this slot
                    continue
                raise
            self._mig_handles[(index, slot)] = mig
            out.append(
                DeviceInfo(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(mig)),
                    name=_text(pynvml.nvmlDeviceGetName(mig)),
                    memory_total_bytes=int(self._memory(mig).total),
                    is_mig=True,
                    parent_uuid=self._parent_uuid(mig, parent_uuid),
                    mig_index=slot,
                    gpu_instance_id=self._optional_int(pynvml.nvmlDeviceGetGpuInstanceId, mig),
                )
            )
        return out

    @staticmethod
    def _parent_uuid(mig: object, enumerated_from: str) -> str:
        try:
            return _text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)))
        except pynvml.NVMLError as err:
            if classify_error(err) is not ErrorKind.UNSUPPORTED:
                raise
            return enumerated_from

    @staticmethod
    def _optional_int(getter: object, handle: object) -> int:
        try:
            return int(getter(handle))  # type: ignore[operator]
        except pynvml.NVMLError as err:
            if classify_error(err) is not ErrorKind.UNSUPPORTED:
                raise
            return -1

    def mig_memory_used_bytes(self, index: int, mig_index: int) -> int:
        """Memory in use on one MIG instance (the only per-instance reading NVML gives: utilisation
        is NOT_SUPPORTED on MIG handles; power, temperature and energy exist only on the parent)."""
        handle = self._mig_handles.get((index, mig_index))
        if handle is None:
            handle = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(self._handle(index), mig_index)
            self._mig_handles[(index, mig_index)] = handle
        return int(self._memory(handle).used)
