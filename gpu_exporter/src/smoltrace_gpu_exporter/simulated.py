"""`--backend simulated:N`: N plausible GPUs for demos and tests on machines without one.

Readings vary smoothly with time; the energy counter is the exact integral of the power curve, so
counter-based and integrated energy agree and both grow monotonically. Everything the exporter
emits in this mode is marked `gpu.simulated=true`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .nvml import DeviceInfo

_MIB = 1024 * 1024
_PERIOD_S = 20.0  # one load cycle


class SimulatedBackend:
    name = "simulated"
    simulated = True

    def __init__(self, count: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= count <= 64:
            raise ValueError(f"simulated GPU count must be 1..64, got {count}")
        self._count = count
        self._clock = clock
        self._t0 = clock()

    def init(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def driver_version(self) -> str:
        return "simulated"

    def device_count(self) -> int:
        return self._count

    def device_info(self, index: int) -> DeviceInfo:
        self._check(index)
        return DeviceInfo(
            index=index,
            uuid=f"GPU-5170a7ed-0000-4000-8000-{index:012d}",
            name="Simulated GPU 80GB",
            memory_total_bytes=81_559 * _MIB,
        )

    def _check(self, index: int) -> None:
        if not 0 <= index < self._count:
            import pynvml

            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    # load(t) = 0.5 + 0.4 sin(w t + phase), phase differs per device
    def _phase(self, index: int) -> float:
        return index * 1.3

    def _t(self) -> float:
        return self._clock() - self._t0

    def _load(self, index: int, t: float) -> float:
        return 0.5 + 0.4 * math.sin(2 * math.pi * t / _PERIOD_S + self._phase(index))

    def utilization_percent(self, index: int) -> float:
        self._check(index)
        return round(100.0 * self._load(index, self._t()), 1)

    def memory_used_bytes(self, index: int) -> int:
        self._check(index)
        return int((8_000 + 40_000 * self._load(index, self._t())) * _MIB)

    def temperature_celsius(self, index: int) -> float:
        self._check(index)
        return round(35.0 + 40.0 * self._load(index, self._t()), 1)

    # power(t) = 100 + 500 load(t) W; its integral is the energy counter.
    def power_watts(self, index: int) -> float:
        self._check(index)
        return 100.0 + 500.0 * self._load(index, self._t())

    def total_energy_joules(self, index: int) -> float:
        self._check(index)
        t = self._t()
        w = 2 * math.pi / _PERIOD_S
        phase = self._phase(index)
        # integral of 100 + 500 (0.5 + 0.4 sin(w t + phase)) dt from 0 to t, plus an offset so the
        # counter does not start at 0 (a real one counts since the driver loaded)
        integral = 350.0 * t - (200.0 / w) * (math.cos(w * t + phase) - math.cos(phase))
        return 1_000_000.0 + integral
