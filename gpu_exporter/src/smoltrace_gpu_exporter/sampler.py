"""The collector loop: one thread sweeps every device through the NVML backend.

A sweep reads all devices once and produces an immutable `Snapshot`. The gauges are read at every
sweep; the energy counter, which costs ~3 ms per GPU on an H200 (a gauge costs 2-10 us), only at
boundary sweeps (a run's start and stop: `sweep(after=...)`) and about once a second
(`energy_interval_s`); between two counter reads a run's live energy is the last counter value
plus integrated power, and the next counter read replaces the estimate. The latest snapshot is what
`/metrics` serves; every snapshot is handed to the listeners (the run registry) in order. Nothing
else calls NVML: scrapes and OTLP pushes only read snapshots.

Failure model:
- a field a device does not support is cached as unsupported for that device and omitted;
- a device that is lost (or needs a reset) is marked failed while the others go on;
- a library-level error (driver gone, library missing, unknown error) marks NVML down; the loop
  re-initialises it with exponential backoff (1 s doubling to 60 s), re-discovering the devices.
With no NVML at all the exporter runs in soft mode: empty snapshots, `nvml_up` false.

MIG: the MIG instances of a MIG-enabled GPU are devices of their own (discovered with their
parent, listed right after it). NVML gives an instance only its memory; utilisation is
NOT_SUPPORTED on MIG handles and power, temperature and the energy counter exist only on the
parent. So a sweep reads an instance's memory from its MIG handle and copies the parent's other
readings of the same sweep (no second counter read); runs charge it its memory fraction of the
parent's energy (shares.py). The exporter's own lifetime energy is kept for whole GPUs only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .energy import EnergyMeter
from .nvml import DeviceInfo, ErrorKind, Field, NvmlBackend, classify_error, describe_error
from .shares import MigTopology

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
ENERGY_INTERVAL_S = 1.0  # the energy counter between boundary sweeps


@dataclass(frozen=True, slots=True)
class DeviceReading:
    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    utilization_percent: float | None = None
    memory_used_bytes: int | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    energy_counter_joules: float | None = None  # None on sweeps that do not read the counter
    failed: bool = False
    error: str = ""  # why the device failed (failed readings only)
    is_mig: bool = False  # a MIG instance: memory is its own, the other gauges and energy its parent's
    parent_uuid: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    timestamp_ns: int  # wall clock, for outputs
    monotonic: float  # for durations and integration
    devices: tuple[DeviceReading, ...]
    nvml_up: bool
    energy_read: bool = True  # this sweep read the energy counter (boundary, or ~1 s since the last)


@dataclass(slots=True)
class DeviceState:
    """What the exporter knows about one GPU across sweeps."""

    info: DeviceInfo
    unsupported: set[Field] = field(default_factory=set)
    failed: bool = False
    error: str = ""
    lifetime_energy: EnergyMeter = field(default_factory=EnergyMeter)


class SnapshotListener(Protocol):
    def on_snapshot(self, snapshot: Snapshot) -> None: ...


class TickHook(Protocol):
    """Called by the loop after each wake-up (lease expiry); says when it next needs a wake-up."""

    def on_tick(self, now_monotonic: float) -> None: ...
    def next_deadline(self) -> float | None: ...


@dataclass(slots=True)
class SamplerHealth:
    nvml_up: bool = False
    nvml_error: str = ""
    driver_version: str = ""
    errors: dict[str, int] = field(default_factory=dict)
    sweeps: int = 0
    last_success_unix: float = 0.0
    last_sweep_seconds: float = 0.0
    reinit_attempts: int = 0


_READERS: tuple[tuple[Field, str], ...] = (
    (Field.UTILIZATION, "utilization_percent"),
    (Field.MEMORY_USED, "memory_used_bytes"),
    (Field.TEMPERATURE, "temperature_celsius"),
    (Field.POWER, "power_watts"),
    (Field.ENERGY, "total_energy_joules"),
)
_READING_ATTR = {
    Field.UTILIZATION: "utilization_percent",
    Field.MEMORY_USED: "memory_used_bytes",
    Field.TEMPERATURE: "temperature_celsius",
    Field.POWER: "power_watts",
    Field.ENERGY: "energy_counter_joules",
}


class _NvmlDown(Exception):
    pass


class Sampler:
    def __init__(
        self,
        backend: NvmlBackend,
        idle_interval_s: float = 15.0,
        interval_source: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        energy_interval_s: float = ENERGY_INTERVAL_S,
    ) -> None:
        self.backend = backend
        self.energy_interval_s = energy_interval_s
        self._last_energy_read: float | None = None
        self.idle_interval_s = idle_interval_s
        self._interval_source = interval_source
        self._clock = clock
        self._wall_ns = wall_clock_ns
        self._listeners: list[SnapshotListener] = []
        self._hooks: list[TickHook] = []
        self._sweep_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._devices: dict[str, DeviceState] = {}
        self._order: list[str] = []  # uuids by NVML index
        self._topology = MigTopology()
        self.health = SamplerHealth()
        self._backoff = INITIAL_BACKOFF_S
        self._next_init = 0.0
        self._latest = Snapshot(self._wall_ns(), self._clock(), (), False)
        self._initialize()

    # -- wiring -------------------------------------------------------------------------------
    def add_listener(self, listener: SnapshotListener) -> None:
        self._listeners.append(listener)

    def add_hook(self, hook: TickHook) -> None:
        self._hooks.append(hook)

    def set_interval_source(self, source: Callable[[], float | None]) -> None:
        """What decides the interval while runs are live (None = idle interval)."""
        self._interval_source = source

    @property
    def latest(self) -> Snapshot:
        return self._latest

    @property
    def sweep_lock(self) -> threading.RLock:
        """Held while a sweep is taken and dispatched; hold it to act between two sweeps."""
        return self._sweep_lock

    def devices(self) -> list[DeviceState]:
        return [self._devices[u] for u in self._order]

    def device(self, uuid: str) -> DeviceState | None:
        return self._devices.get(uuid)

    @property
    def mig_topology(self) -> MigTopology:
        """MIG instances by parent with their energy fractions, as of the last discovery (a new
        object after each re-initialisation)."""
        return self._topology

    def wake(self) -> None:
        """Re-plan now (a run started or stopped and the interval may have changed)."""
        self._wake.set()

    # -- NVML lifecycle -----------------------------------------------------------------------
    def _initialize(self) -> bool:
        """(Re)initialise NVML and discover the devices. Never raises."""
        self.health.reinit_attempts += 1
        try:
            self.backend.init()
            driver = self.backend.driver_version()
            count = self.backend.device_count()
            infos: list[DeviceInfo] = []
            lost: list[str] = []
            for i in range(count):
                try:
                    infos.append(self.backend.device_info(i))
                except Exception as err:  # a GPU lost at discovery must not hide the others
                    if classify_error(err) is not ErrorKind.DEVICE_LOST:
                        raise
                    lost.append(f"GPU {i}: {describe_error(err)}")
                    self._count_error("device_lost")
                    log.error("GPU %d failed during discovery: %s", i, describe_error(err))
            infos = self._with_mig_instances(infos)
        except Exception as err:  # noqa: BLE001 - any failure keeps the exporter up in soft mode
            message = describe_error(err)
            if self.health.nvml_up or not self.health.nvml_error:
                log.warning("NVML unavailable: %s; GPU metrics off, retrying with backoff", message)
            self.health.nvml_up = False
            self.health.nvml_error = message
            self._count_error("init_failed")
            self._schedule_reinit()
            return False
        previous = self._devices
        self._devices = {}
        self._order = []
        for info in infos:
            state = previous.get(info.uuid) or DeviceState(info=info)
            state.info = info
            state.failed = False
            state.error = ""
            self._devices[info.uuid] = state
            self._order.append(info.uuid)
        for uuid, state in previous.items():  # a GPU that vanished stays known, as failed
            if uuid not in self._devices:
                state.failed = True
                state.error = state.error or "GPU no longer visible after NVML re-initialisation"
                self._devices[uuid] = state
        self._topology = MigTopology.from_devices(s.info for s in self._devices.values())
        self.health.nvml_up = True
        self.health.nvml_error = "" if infos else ("; ".join(lost) if lost else "no GPU visible to NVML")
        self.health.driver_version = driver
        self._backoff = INITIAL_BACKOFF_S
        log.info("NVML up: driver %s, %d GPU(s)", driver, count)
        return True

    def _with_mig_instances(self, gpus: list[DeviceInfo]) -> list[DeviceInfo]:
        """Each GPU followed by its MIG instances (none when MIG is off or unsupported)."""
        enumerate_mig = getattr(self.backend, "mig_devices", None)
        out: list[DeviceInfo] = []
        for info in gpus:
            out.append(info)
            if enumerate_mig is None:
                continue
            try:
                instances = enumerate_mig(info.index)
            except Exception as err:
                kind = classify_error(err)
                if kind is ErrorKind.LIBRARY:
                    raise
                log.warning("GPU %d (%s): MIG instances not listed: %s", info.index, info.uuid, describe_error(err))
                continue
            if instances:
                log.info("GPU %d (%s): %d MIG instance(s)", info.index, info.uuid, len(instances))
            out.extend(instances)
        return out

    def _schedule_reinit(self) -> None:
        self._next_init = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)

    def _nvml_failed(self, err: BaseException) -> None:
        self.health.nvml_up = False
        self.health.nvml_error = describe_error(err)
        log.warning("NVML error %s: re-initialising in %.0f s", self.health.nvml_error, self._backoff)
        try:
            self.backend.shutdown()
        except Exception:  # noqa: BLE001 - the library may already be gone
            pass
        self._schedule_reinit()

    def _count_error(self, reason: str) -> None:
        self.health.errors[reason] = self.health.errors.get(reason, 0) + 1

    # -- sweeping -----------------------------------------------------------------------------
    def _read_device(self, state: DeviceState, read_energy: bool) -> DeviceReading:
        info = state.info
        values: dict[str, float | int | None] = {}
        for fld, method in _READERS:
            if fld in state.unsupported or (fld is Field.ENERGY and not read_energy):
                continue
            try:
                values[_READING_ATTR[fld]] = getattr(self.backend, method)(info.index)
            except Exception as err:
                kind = classify_error(err)
                if kind is ErrorKind.UNSUPPORTED:
                    state.unsupported.add(fld)
                    log.info("GPU %d (%s): %s not supported: %s", info.index, info.uuid, fld.value, describe_error(err))
                elif kind is ErrorKind.DEVICE_LOST:
                    state.failed = True
                    state.error = describe_error(err)
                    self._count_error("device_lost")
                    log.error("GPU %d (%s) failed: %s", info.index, info.uuid, state.error)
                    break
                elif kind is ErrorKind.LIBRARY:
                    raise _NvmlDown(err) from err
                else:
                    self._count_error("transient")
        if state.failed:
            return self._failed_reading(state)
        return DeviceReading(
            index=info.index,
            uuid=info.uuid,
            name=info.name,
            memory_total_bytes=info.memory_total_bytes,
            **values,  # type: ignore[arg-type]
        )

    def _read_mig(self, state: DeviceState, parent: DeviceReading | None) -> DeviceReading:
        """A MIG instance: its own memory; utilisation, temperature, power and the energy counter
        are the parent's readings of this sweep."""
        info = state.info
        if parent is None or parent.failed:
            state.failed = True
            state.error = state.error or (parent.error if parent else "") or "parent GPU not readable"
            return self._failed_reading(state)
        memory_used: int | None = None
        if Field.MEMORY_USED not in state.unsupported:
            try:
                memory_used = self.backend.mig_memory_used_bytes(info.index, info.mig_index)
            except Exception as err:
                kind = classify_error(err)
                if kind is ErrorKind.UNSUPPORTED:
                    state.unsupported.add(Field.MEMORY_USED)
                    log.info("MIG %s: memory not readable: %s", info.uuid, describe_error(err))
                elif kind is ErrorKind.DEVICE_LOST:
                    state.failed = True
                    state.error = describe_error(err)
                    self._count_error("device_lost")
                    log.error("MIG %s failed: %s", info.uuid, state.error)
                    return self._failed_reading(state)
                elif kind is ErrorKind.LIBRARY:
                    raise _NvmlDown(err) from err
                else:
                    self._count_error("transient")
        return DeviceReading(
            index=info.index,
            uuid=info.uuid,
            name=info.name,
            memory_total_bytes=info.memory_total_bytes,
            utilization_percent=parent.utilization_percent,
            memory_used_bytes=memory_used,
            temperature_celsius=parent.temperature_celsius,
            power_watts=parent.power_watts,
            energy_counter_joules=parent.energy_counter_joules,
            is_mig=True,
            parent_uuid=info.parent_uuid,
        )

    def energy_due(self) -> bool:
        """Has `energy_interval_s` passed since the last energy-counter read?"""
        last = self._last_energy_read
        return last is None or self._clock() - last >= self.energy_interval_s * 0.95

    def sweep(self, after: Callable[[Snapshot], None] | None = None, read_energy: bool = True) -> Snapshot:
        """Read every device now, publish the snapshot, then call `after` under the same lock.

        Boundary sweeps (a run's start and stop) read the energy counter; the loop's periodic
        sweeps pass `read_energy=energy_due()`."""
        with self._sweep_lock:
            started = time.perf_counter()
            now = self._clock()
            if not self.health.nvml_up and now >= self._next_init:
                self._initialize()
            readings: list[DeviceReading] = []
            if self.health.nvml_up:
                try:
                    by_uuid: dict[str, DeviceReading] = {}
                    for uuid in self._order:
                        state = self._devices[uuid]
                        if state.failed:
                            reading = self._failed_reading(state)
                        elif state.info.is_mig:  # listed after its parent: the parent's reading is here
                            reading = self._read_mig(state, by_uuid.get(state.info.parent_uuid))
                        else:
                            reading = self._read_device(state, read_energy)
                        by_uuid[uuid] = reading
                        readings.append(reading)
                except _NvmlDown as down:
                    self._count_error("library")
                    self._nvml_failed(down.__cause__ or down)
                    readings = []
            snapshot = Snapshot(self._wall_ns(), self._clock(), tuple(readings), self.health.nvml_up, read_energy)
            if read_energy:
                self._last_energy_read = now
            for reading in readings:
                if not reading.failed and not reading.is_mig:  # a MIG instance's energy is its parent's
                    self._devices[reading.uuid].lifetime_energy.add(
                        snapshot.monotonic, reading.power_watts, reading.energy_counter_joules, counter_read=read_energy
                    )
            self._latest = snapshot
            self.health.sweeps += 1
            if self.health.nvml_up:
                self.health.last_success_unix = snapshot.timestamp_ns / 1e9
            for listener in self._listeners:
                try:
                    listener.on_snapshot(snapshot)
                except Exception:  # a listener bug must not stop sampling
                    log.exception("snapshot listener failed")
            if after is not None:
                after(snapshot)
            self.health.last_sweep_seconds = time.perf_counter() - started
            return snapshot

    @staticmethod
    def _failed_reading(state: DeviceState) -> DeviceReading:
        info = state.info
        return DeviceReading(
            info.index,
            info.uuid,
            info.name,
            info.memory_total_bytes,
            failed=True,
            error=state.error,
            is_mig=info.is_mig,
            parent_uuid=info.parent_uuid,
        )

    # -- the loop -----------------------------------------------------------------------------
    def current_interval_s(self) -> float:
        wanted = self._interval_source()
        return wanted if wanted is not None else self.idle_interval_s

    def _run(self) -> None:
        next_sweep = self._clock()
        while not self._stop.is_set():
            now = self._clock()
            if now >= next_sweep:
                try:
                    self.sweep(read_energy=self.energy_due())
                except Exception:
                    log.exception("sweep failed")
                    self._count_error("internal")
                interval = self.current_interval_s()
                next_sweep = max(next_sweep + interval, self._clock())
            else:  # woken early: the interval may have shrunk
                next_sweep = min(next_sweep, self._latest.monotonic + self.current_interval_s())
            for hook in self._hooks:
                try:
                    hook.on_tick(self._clock())
                except Exception:
                    log.exception("tick hook failed")
            deadline = next_sweep
            for hook in self._hooks:
                d = hook.next_deadline()
                if d is not None:
                    deadline = min(deadline, d)
            timeout = deadline - self._clock()
            if timeout > 0:
                self._wake.wait(timeout)
            self._wake.clear()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="smoltrace-gpu-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0, shutdown_backend: bool = True) -> None:
        """End the loop; then (unless told not to) shut NVML down. `sweep()` still works without
        the loop, which is how the last boundary sweep of a shutdown is taken."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if not shutdown_backend:
            return
        try:
            if self.health.nvml_up:
                self.backend.shutdown()
        except Exception:  # noqa: BLE001
            pass
