"""`--backend simulated:N`: N plausible GPUs for demos and tests on machines without one.

Readings vary smoothly with time, and each GPU's power also follows the runs that use it (the
exporter tells the backend through `set_device_users`): +50 W per run, up to three, so tests can
model topologies (runs sharing a GPU, runs on different GPUs). The energy counter is the exact
integral of the power curve, so counter-based and integrated energy agree and both grow
monotonically. Everything the exporter emits in this mode is marked `gpu.simulated=true`.

MIG: `simulated:N,mig=I:K` splits GPU I into K MIG instances (1 <= K <= 7; repeat `,mig=J:L` for
more GPUs). As on an 80 GB H100, a GPU has 8 memory slices and 7 compute slices: each of the K
instances gets 8//K memory slices (profile `<7//K>g.<10*(8//K)>gb`), so their memory fractions of
the parent are (8//K)/8 each. An instance's memory in use follows the parent's load; utilisation,
power, temperature and the energy counter exist only on the parent, as with real NVML.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from .nvml import DeviceInfo

_MIB = 1024 * 1024
_PERIOD_S = 20.0  # one load cycle
WATTS_PER_RUN = 50.0  # extra power while a run uses the GPU
MAX_RUNS_DRAWING = 3  # a GPU saturates: more runs draw no more
MAX_MIG_INSTANCES = 7
_MEMORY_SLICES = 8
_PARENT_MEMORY = 81_559 * _MIB


class SimulatedBackend:
    name = "simulated"
    simulated = True

    def __init__(self, count: int = 1, clock: Callable[[], float] = time.monotonic, mig: Mapping[int, int] | None = None) -> None:
        if not 1 <= count <= 64:
            raise ValueError(f"simulated GPU count must be 1..64, got {count}")
        for gpu, instances in (mig or {}).items():
            if not 0 <= gpu < count:
                raise ValueError(f"simulated MIG: GPU {gpu} does not exist (GPUs 0..{count - 1})")
            if not 1 <= instances <= MAX_MIG_INSTANCES:
                raise ValueError(f"simulated MIG: GPU {gpu} needs 1..{MAX_MIG_INSTANCES} instances, got {instances}")
        self._count = count
        self._mig = dict(mig or {})
        self._clock = clock
        self._t0 = clock()
        self._users = [0] * count
        self._user_joules = [0.0] * count  # energy of the per-run part up to _user_since
        self._user_since = [0.0] * count

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
            memory_total_bytes=_PARENT_MEMORY,
        )

    # -- MIG ----------------------------------------------------------------------------------
    def mig_devices(self, index: int) -> list[DeviceInfo]:
        self._check(index)
        instances = self._mig.get(index, 0)
        if not instances:
            return []
        slices = _MEMORY_SLICES // instances
        profile = f"{MAX_MIG_INSTANCES // instances}g.{10 * slices}gb"
        parent = self.device_info(index).uuid
        return [
            DeviceInfo(
                index=index,
                uuid=f"MIG-5170a7ed-{index:04d}-4000-8000-{slot:012d}",
                name=f"Simulated GPU 80GB MIG {profile}",
                memory_total_bytes=_PARENT_MEMORY * slices // _MEMORY_SLICES,
                is_mig=True,
                parent_uuid=parent,
                mig_index=slot,
                gpu_instance_id=slot + 1,
            )
            for slot in range(instances)
        ]

    def mig_memory_used_bytes(self, index: int, mig_index: int) -> int:
        self._check(index)
        instances = self._mig.get(index, 0)
        if not 0 <= mig_index < instances:
            import pynvml

            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        fraction = (_MEMORY_SLICES // instances) / _MEMORY_SLICES
        return int(self.memory_used_bytes(index) * fraction)

    def _check(self, index: int) -> None:
        if not 0 <= index < self._count:
            import pynvml

            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def set_device_users(self, users: Mapping[str, int]) -> None:
        """How many runs use each GPU from now on (uuid -> count; absent = 0). Runs on a MIG
        instance count for its parent: the parent draws the power."""
        t = self._t()
        for index in range(self._count):
            n = users.get(self.device_info(index).uuid, 0) + sum(users.get(m.uuid, 0) for m in self.mig_devices(index))
            self._user_joules[index] = self._user_energy(index, t)
            self._user_since[index] = t
            self._users[index] = n

    def _user_watts(self, index: int) -> float:
        return WATTS_PER_RUN * min(self._users[index], MAX_RUNS_DRAWING)

    def _user_energy(self, index: int, t: float) -> float:
        return self._user_joules[index] + self._user_watts(index) * max(0.0, t - self._user_since[index])

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

    # power(t) = 100 + 350 load(t) + 50 W per run using it (at most 3); its integral is the counter.
    def power_watts(self, index: int) -> float:
        self._check(index)
        return 100.0 + 350.0 * self._load(index, self._t()) + self._user_watts(index)

    def total_energy_joules(self, index: int) -> float:
        self._check(index)
        t = self._t()
        w = 2 * math.pi / _PERIOD_S
        phase = self._phase(index)
        # integral of 100 + 350 (0.5 + 0.4 sin(w t + phase)) dt from 0 to t, plus an offset so the
        # counter does not start at 0 (a real one counts since the driver loaded)
        integral = 275.0 * t - (140.0 / w) * (math.cos(w * t + phase) - math.cos(phase))
        return 1_000_000.0 + integral + self._user_energy(index, t)
