"""`FakeNvml`: a pure-Python `NvmlBackend` with scripted readings and failure injection.

It raises the REAL `pynvml.NVMLError_*` classes (`pynvml.NVMLError(code)` maps a code to its
subclass), so the exporter's error classification is exercised exactly as with the real library.
Nothing here needs a GPU, a driver or a native library.

Scenario builder, by example::

    clock = FakeClock()
    nvml = FakeNvml(2, clock=clock)
    nvml.gpu(0).set(Field.UTILIZATION, lambda t: 50 + t)      # a reading as a function of time
    nvml.gpu(1).unsupported(Field.POWER).no_permission(Field.TEMPERATURE)
    nvml.gpu(1).lose_after(5)                                  # GpuIsLost from the 6th call on GPU 1
    nvml.gpu(0).advance_energy(120.0)                          # the energy counter, in J
    nvml.gpu(0).reset_energy()                                 # driver reload: the counter restarts at 0
    nvml.break_library(after_calls=10, code=pynvml.NVML_ERROR_UNKNOWN, failed_inits=1)
    nvml.missing_library()                                     # init() raises LibraryNotFound

Units are those of the `NvmlBackend` protocol: percent, bytes, degrees Celsius, watts, joules.
Every backend call is counted (`calls` by method, `device_calls` by (method, index)), failing
calls included, so a test can prove that something did NOT reach NVML.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pynvml

from smoltrace_gpu_exporter.nvml import DeviceInfo, Field

GIB = 1024**3
MIB = 1024**2

Reading = float | int | Callable[[float], float]

FIELD_METHODS: dict[Field, str] = {
    Field.UTILIZATION: "utilization_percent",
    Field.MEMORY_USED: "memory_used_bytes",
    Field.TEMPERATURE: "temperature_celsius",
    Field.POWER: "power_watts",
    Field.ENERGY: "total_energy_joules",
}
_METHOD_FIELDS = {method: fld for fld, method in FIELD_METHODS.items()}


def nvml_error(code: int) -> pynvml.NVMLError:
    """The real pynvml exception for an NVML return code (an `NVMLError_*` subclass instance)."""
    return pynvml.NVMLError(code)


class FakeClock:
    """A monotonic clock that only moves when told to. Pass it as `clock=` everywhere."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go backwards")
        with self._lock:
            self.now += seconds
            return self.now

    def set(self, t: float) -> None:
        if t < self.now:
            raise ValueError("a monotonic clock does not go backwards")
        self.now = float(t)


@dataclass
class _FieldFault:
    code: int
    after: int = 0  # successful calls of the field before the fault starts
    times: int | None = None  # how many calls fail (None = every call from then on)
    seen: int = 0  # calls of the field so far


@dataclass
class FakeMig:
    """One MIG instance of a FakeGpu: its own memory only (NVML gives an instance nothing else)."""

    slot: int
    uuid: str
    memory_total_bytes: int
    memory_used: Reading = 1 * GIB
    gpu_instance_id: int = -1


@dataclass
class FakeGpu:
    """One scripted GPU. Builder methods return `self` so they chain."""

    index: int
    uuid: str
    name: str = "NVIDIA Fake A100-SXM4-80GB"
    memory_total_bytes: int = 80 * GIB
    readings: dict[Field, Reading] = field(default_factory=dict)
    energy_joules: float = 1_000_000.0  # the total-energy counter (J since the "driver loaded")
    faults: dict[Field, _FieldFault] = field(default_factory=dict)
    delays: dict[Field, float] = field(default_factory=dict)
    lost_after: int | None = None  # per-device calls that succeed before GpuIsLost
    lost_code: int = pynvml.NVML_ERROR_GPU_IS_LOST
    calls: int = 0  # per-device calls (device_info and readings), failing ones included
    mig: list[FakeMig] = field(default_factory=list)  # MIG instances (MIG mode on when not empty)

    # -- builder ------------------------------------------------------------------------------
    def set(self, fld: Field, value: Reading) -> FakeGpu:
        """A constant or a function of the fake clock's time. For ENERGY this overrides the counter."""
        self.readings[Field(fld)] = value
        return self

    def fail(self, fld: Field, code: int, *, after: int = 0, times: int | None = None) -> FakeGpu:
        """`fld` raises `pynvml.NVMLError(code)` after `after` good calls, `times` times (None = always)."""
        self.faults[Field(fld)] = _FieldFault(code=code, after=after, times=times)
        return self

    def unsupported(self, *fields: Field) -> FakeGpu:
        for fld in fields:
            self.fail(fld, pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self

    def no_permission(self, *fields: Field) -> FakeGpu:
        for fld in fields:
            self.fail(fld, pynvml.NVML_ERROR_NO_PERMISSION)
        return self

    def delay(self, fld: Field, seconds: float) -> FakeGpu:
        """A stuck call: reading `fld` sleeps this long (real time) first."""
        self.delays[Field(fld)] = seconds
        return self

    def lose_after(self, calls: int, code: int = pynvml.NVML_ERROR_GPU_IS_LOST) -> FakeGpu:
        """The first `calls` per-device calls succeed; every later one raises `code` (GpuIsLost)."""
        self.lost_after = calls
        self.lost_code = code
        return self

    def lose_now(self, code: int = pynvml.NVML_ERROR_GPU_IS_LOST) -> FakeGpu:
        return self.lose_after(self.calls, code)

    def set_energy(self, joules: float) -> FakeGpu:
        self.readings.pop(Field.ENERGY, None)
        self.energy_joules = float(joules)
        return self

    def advance_energy(self, joules: float) -> FakeGpu:
        if joules < 0:
            raise ValueError("the energy counter only grows; use reset_energy() for a driver reload")
        self.energy_joules += joules
        return self

    def reset_energy(self, to: float = 0.0) -> FakeGpu:
        """The counter restarts (driver reload, GPU reset): it goes backwards to `to`."""
        self.energy_joules = float(to)
        return self

    def with_mig(self, *memory_totals: int) -> FakeGpu:
        """MIG on, with one instance per memory size (bytes), in slots 0, 1, ..."""
        self.mig = [
            FakeMig(slot, f"MIG-fa4e{self.index:04x}-0000-4000-8000-{slot:012x}", total, gpu_instance_id=slot + 1)
            for slot, total in enumerate(memory_totals)
        ]
        return self

    # -- state --------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        return self.lost_after is not None and self.calls > self.lost_after

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.index, self.uuid, self.name, self.memory_total_bytes)


def default_readings(index: int) -> dict[Field, Reading]:
    """Deterministic, distinct per GPU: util 40+10i %, 10+i GiB used, 50+i °C, 200+50i W."""
    return {
        Field.UTILIZATION: 40.0 + 10 * index,
        Field.MEMORY_USED: (10 + index) * GIB,
        Field.TEMPERATURE: 50.0 + index,
        Field.POWER: 200.0 + 50 * index,
    }


def fake_uuid(index: int) -> str:
    return f"GPU-fa4e0000-0000-4000-8000-{index:012x}"


class FakeNvml:
    """The `NvmlBackend` protocol over scripted GPUs. Thread-safe enough for the sampler thread."""

    name = "fake"

    def __init__(
        self,
        gpus: int | Iterable[FakeGpu] = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        driver_version: str = "550.54.15",
        simulated: bool = False,
    ) -> None:
        self.clock = clock
        self.simulated = simulated
        self._driver_version = driver_version
        if isinstance(gpus, int):
            self.gpus = [FakeGpu(i, fake_uuid(i), readings=default_readings(i), energy_joules=1_000_000.0 + 1000 * i) for i in range(gpus)]
        else:
            self.gpus = list(gpus)
        self.calls: Counter[str] = Counter()
        self.device_calls: Counter[tuple[str, int]] = Counter()
        self.initialized = False
        self.init_count = 0
        self.shutdown_count = 0
        self._library_missing = False
        self._broken_code: int | None = None  # set while the library is broken
        self._break_after: int | None = None  # calls left before it breaks
        self._break_code = pynvml.NVML_ERROR_UNKNOWN
        self._failed_inits_left: int | None = None
        self._lock = threading.RLock()

    # -- builder ------------------------------------------------------------------------------
    def gpu(self, index: int) -> FakeGpu:
        for g in self.gpus:
            if g.index == index:
                return g
        raise KeyError(index)

    def add_gpu(self, gpu: FakeGpu | None = None) -> FakeGpu:
        if gpu is None:
            index = len(self.gpus)
            gpu = FakeGpu(index, fake_uuid(index), readings=default_readings(index))
        self.gpus.append(gpu)
        return gpu

    def remove_gpu(self, index: int) -> FakeGpu:
        """The GPU disappears (NVML indices of the later ones shift down, as after a real re-init)."""
        gone = self.gpu(index)
        self.gpus.remove(gone)
        for new_index, g in enumerate(self.gpus):
            g.index = new_index
        return gone

    def missing_library(self, missing: bool = True) -> FakeNvml:
        """init() raises NVMLError_LibraryNotFound (no driver installed) while `missing`."""
        self._library_missing = missing
        return self

    def break_library(self, after_calls: int = 0, code: int = pynvml.NVML_ERROR_UNKNOWN, failed_inits: int | None = 0) -> FakeNvml:
        """After `after_calls` more calls, every call raises `code` (a library-level error).

        It recovers at the first init() after `failed_inits` failed ones (None: only `recover()`).
        """
        self._break_after = after_calls
        self._break_code = code
        self._failed_inits_left = failed_inits
        if after_calls == 0:
            self._broken_code = code
            self._break_after = None
        return self

    def recover(self) -> FakeNvml:
        self._broken_code = None
        self._break_after = None
        self._failed_inits_left = 0
        return self

    @property
    def library_broken(self) -> bool:
        return self._broken_code is not None

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()
            self.device_calls.clear()

    # -- plumbing -----------------------------------------------------------------------------
    def _enter(self, method: str) -> None:
        """Count a library call, then raise whatever the scenario says the library does now."""
        self.calls[method] += 1
        if self._library_missing:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        if self._broken_code is not None:
            raise nvml_error(self._broken_code)
        if not self.initialized:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
        if self._break_after is not None:
            if self._break_after <= 0:
                self._broken_code = self._break_code
                self._break_after = None
                raise nvml_error(self._broken_code)
            self._break_after -= 1

    def _device(self, method: str, index: int) -> FakeGpu:
        self._enter(method)
        self.device_calls[(method, index)] += 1
        if not 0 <= index < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        gpu.calls += 1
        if gpu.lost:
            raise nvml_error(gpu.lost_code)
        return gpu

    def _read(self, method: str, index: int) -> float:
        with self._lock:
            gpu = self._device(method, index)
            fld = _METHOD_FIELDS[method]
            fault = gpu.faults.get(fld)
            if fault is not None:
                fault.seen += 1
                failing = fault.seen > fault.after and (fault.times is None or fault.seen <= fault.after + fault.times)
                if failing:
                    raise nvml_error(fault.code)
            delay = gpu.delays.get(fld, 0.0)
            value = gpu.readings.get(fld)
            if value is None:
                if fld is not Field.ENERGY:
                    raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
                value = gpu.energy_joules
            elif callable(value):
                value = value(self.clock())
        if delay:
            time.sleep(delay)
        return value

    # -- NvmlBackend --------------------------------------------------------------------------
    def init(self) -> None:
        with self._lock:
            self.calls["init"] += 1
            self.init_count += 1
            if self._library_missing:
                raise nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
            if self._broken_code is not None:
                if self._failed_inits_left is None or self._failed_inits_left > 0:
                    if self._failed_inits_left is not None:
                        self._failed_inits_left -= 1
                    raise nvml_error(self._broken_code)
                self._broken_code = None
            self.initialized = True

    def shutdown(self) -> None:
        with self._lock:
            self.calls["shutdown"] += 1
            self.shutdown_count += 1
            if not self.initialized and not self._broken_code:
                raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)
            self.initialized = False

    def driver_version(self) -> str:
        with self._lock:
            self._enter("driver_version")
            return self._driver_version

    def device_count(self) -> int:
        with self._lock:
            self._enter("device_count")
            return len(self.gpus)

    def device_info(self, index: int) -> DeviceInfo:
        with self._lock:
            return self._device("device_info", index).info()

    def utilization_percent(self, index: int) -> float:
        return float(self._read("utilization_percent", index))

    def memory_used_bytes(self, index: int) -> int:
        return int(self._read("memory_used_bytes", index))

    def temperature_celsius(self, index: int) -> float:
        return float(self._read("temperature_celsius", index))

    def power_watts(self, index: int) -> float:
        return float(self._read("power_watts", index))

    def total_energy_joules(self, index: int) -> float:
        return float(self._read("total_energy_joules", index))

    def mig_devices(self, index: int) -> list[DeviceInfo]:
        with self._lock:
            self._enter("mig_devices")  # not a per-device call: lose_after() counts stay as they were
            gpu = self.gpus[index]
            return [
                DeviceInfo(index, m.uuid, f"{gpu.name} MIG", m.memory_total_bytes, True, gpu.uuid, m.slot, m.gpu_instance_id)
                for m in gpu.mig
            ]

    def mig_memory_used_bytes(self, index: int, mig_index: int) -> int:
        with self._lock:
            gpu = self._device("mig_memory_used_bytes", index)
            for m in gpu.mig:
                if m.slot == mig_index:
                    value = m.memory_used
                    return int(value(self.clock()) if callable(value) else value)
            raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)
