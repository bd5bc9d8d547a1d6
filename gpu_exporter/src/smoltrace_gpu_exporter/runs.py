"""Runs: what the exporter measures for each evaluation run, and the registry that owns them.

A run starts with a boundary sweep of its devices, records every sweep the sampler takes while it
is live, and stops with another boundary sweep: its energy is exact between those two reads. The
registry holds the live runs (several share the one sampler), expires runs whose lease lapses,
and keeps stopped runs' summaries for a while so a second StopSampling returns the same summary.
Memory per run is O(devices): running aggregates, plus a bounded queue of samples awaiting OTLP.
"""

from __future__ import annotations

import enum
import logging
import queue
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from smoltrace_proto.summary import (
    METHOD_MIG_MEMORY_SHARE,
    SPLIT_EQUAL_SHARE,
    SPLIT_EXCLUSIVE,
    SPLIT_IN_PARENT,
    DeviceSummary,
    RunSummary,
    StatsSummary,
)

from .endpoints import AllowList, EndpointError
from .energy import (
    DEFAULT_CARBON_INTENSITY_G_PER_KWH,
    DEFAULT_POWER_COST_USD_PER_KWH,
    DEFAULT_PUE,
    METHOD_NONE,
    EnergyMeter,
    RunningStats,
    co2_grams,
    combine_methods,
    power_cost_usd,
)
from .nvml import DeviceInfo
from .sampler import DeviceReading, Sampler, Snapshot
from .shares import EXCLUSIVE, MigTopology, Share, device_shares

log = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 50, 60_000
DEFAULT_LEASE_S = 120
MAX_LEASE_S = 3_600
DEFAULT_MAX_LIVE_RUNS = 256
MAX_ATTRIBUTES, MAX_ATTRIBUTE_LEN = 64, 1024
MAX_GPU_UUIDS = 256
MAX_OTLP_HEADERS, MAX_HEADER_VALUE_LEN = 16, 4096
HEADER_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
HEADER_VALUE_PATTERN = re.compile(r"[\x20-\x7e]*")


class InvalidRequest(ValueError):
    """Bad parameters (INVALID_ARGUMENT)."""


class RunConflict(Exception):
    """The run id is taken by a live run with other parameters, or by a stopped run (ALREADY_EXISTS)."""


class RunLimit(Exception):
    """Too many live runs (RESOURCE_EXHAUSTED)."""


class RunNotFound(KeyError):
    """No such run (NOT_FOUND)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "run not found"


class StopReason(enum.StrEnum):
    CLIENT = "client"
    LEASE_EXPIRED = "lease_expired"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class RunDefaults:
    carbon_intensity_g_per_kwh: float = DEFAULT_CARBON_INTENSITY_G_PER_KWH
    pue: float = DEFAULT_PUE
    power_cost_per_kwh: float = DEFAULT_POWER_COST_USD_PER_KWH
    otlp_endpoint: str = ""
    otlp_allow: AllowList = field(default_factory=AllowList)  # where runs may push OTLP (loopback; see endpoints.py)


@dataclass(frozen=True, slots=True)
class RunParams:
    run_id: str
    interval_ms: int
    gpu_uuids: tuple[str, ...]
    otlp_endpoint: str
    resource_attributes: tuple[tuple[str, str], ...]
    carbon_intensity_g_per_kwh: float
    pue: float
    lease_seconds: int
    power_cost_per_kwh: float
    # sent with the run's OTLP export (a per-run collector token): never in a repr, log or reply
    otlp_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def create(
        cls,
        run_id: str,
        *,
        defaults: RunDefaults = RunDefaults(),
        interval_ms: int = 0,
        gpu_uuids: Sequence[str] = (),
        otlp_endpoint: str = "",
        resource_attributes: Mapping[str, str] | None = None,
        carbon_intensity_g_per_kwh: float = 0.0,
        pue: float = 0.0,
        lease_seconds: int = 0,
        power_cost_per_kwh: float = 0.0,
        otlp_headers: Mapping[str, str] | None = None,
    ) -> RunParams:
        """Apply defaults (0 / empty = default) and validate; raises InvalidRequest."""
        validate_run_id(run_id)
        interval = interval_ms or DEFAULT_INTERVAL_MS
        if not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
            raise InvalidRequest(f"interval_ms must be {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS} (0 = {DEFAULT_INTERVAL_MS}), got {interval}")
        lease = lease_seconds or DEFAULT_LEASE_S
        if not 1 <= lease <= MAX_LEASE_S:
            raise InvalidRequest(f"lease_seconds must be 1..{MAX_LEASE_S} (0 = {DEFAULT_LEASE_S}), got {lease}")
        ci = _positive_or_default(
            "carbon_intensity_g_per_kwh", carbon_intensity_g_per_kwh, defaults.carbon_intensity_g_per_kwh, upper=5000.0
        )
        pue_value = _positive_or_default("pue", pue, defaults.pue, upper=10.0)
        if pue_value < 1.0:
            raise InvalidRequest(f"pue must be >= 1.0 (0 = default {defaults.pue}), got {pue_value}")
        price = _positive_or_default("power_cost_per_kwh", power_cost_per_kwh, defaults.power_cost_per_kwh, upper=100.0)
        uuids = tuple(sorted(set(gpu_uuids)))
        if len(uuids) > MAX_GPU_UUIDS or any(not u or len(u) > 128 for u in uuids):
            raise InvalidRequest("gpu_uuids must hold at most 256 non-empty UUIDs of at most 128 characters")
        attributes = dict(resource_attributes or {})
        if len(attributes) > MAX_ATTRIBUTES:
            raise InvalidRequest(f"at most {MAX_ATTRIBUTES} resource_attributes are allowed, got {len(attributes)}")
        for key, value in attributes.items():
            if not key or len(key) > 255 or len(value) > MAX_ATTRIBUTE_LEN:
                raise InvalidRequest(f"resource attribute keys must be 1..255 characters and values at most {MAX_ATTRIBUTE_LEN}")
        endpoint = otlp_endpoint or defaults.otlp_endpoint
        if len(endpoint) > 2048 or any(c.isspace() for c in endpoint):
            raise InvalidRequest("otlp_endpoint must be host:port or a URL without spaces")
        if endpoint and endpoint != defaults.otlp_endpoint:  # the exporter's own default is allowed
            try:  # before any connection: an endpoint outside the allow-list is never dialled
                defaults.otlp_allow.check(endpoint)
            except EndpointError as err:
                raise InvalidRequest(str(err)) from err
        headers = dict(otlp_headers or {})
        if len(headers) > MAX_OTLP_HEADERS:
            raise InvalidRequest(f"at most {MAX_OTLP_HEADERS} otlp_headers are allowed, got {len(headers)}")
        for key, value in headers.items():  # never echo a header value: it is a credential
            if not HEADER_NAME_PATTERN.fullmatch(key):
                raise InvalidRequest("otlp_headers names must be 1..64 characters of lowercase a-z, 0-9, '-', '_' or '.'")
            if len(value) > MAX_HEADER_VALUE_LEN or not HEADER_VALUE_PATTERN.fullmatch(value):
                raise InvalidRequest(f"otlp_headers[{key!r}] must be printable ASCII, at most {MAX_HEADER_VALUE_LEN} characters")
        return cls(
            run_id=run_id,
            interval_ms=interval,
            gpu_uuids=uuids,
            otlp_endpoint=endpoint,
            resource_attributes=tuple(sorted(attributes.items())),
            carbon_intensity_g_per_kwh=ci,
            pue=pue_value,
            lease_seconds=lease,
            power_cost_per_kwh=price,
            otlp_headers=tuple(sorted(headers.items())),
        )


def validate_run_id(run_id: str) -> None:
    if not run_id:
        raise InvalidRequest("run_id is required")
    if len(run_id) > 128:
        raise InvalidRequest(f"run_id must be at most 128 characters, got {len(run_id)}")
    if not RUN_ID_PATTERN.fullmatch(run_id):  # not match(): "$" also matches before a trailing newline
        raise InvalidRequest("run_id must start with a letter or digit and hold only letters, digits and ._:/@+-")


def _positive_or_default(name: str, value: float, default: float, upper: float) -> float:
    if value != value or value in (float("inf"), float("-inf")):  # NaN / inf
        raise InvalidRequest(f"{name} must be a finite number, got {value}")
    if value < 0:
        raise InvalidRequest(f"{name} must not be negative (0 = default {default}), got {value}")
    if value > upper:
        raise InvalidRequest(f"{name} must be at most {upper}, got {value}")
    return value or default


# -- summaries --------------------------------------------------------------------------------
def stats_of(stats: RunningStats) -> StatsSummary | None:
    if not stats.count:
        return None
    return StatsSummary(stats.average, stats.minimum, stats.maximum, stats.count)


# -- one run ----------------------------------------------------------------------------------
@dataclass(slots=True)
class DeviceAccount:
    info: DeviceInfo
    utilization: RunningStats = field(default_factory=RunningStats)
    memory: RunningStats = field(default_factory=RunningStats)
    temperature: RunningStats = field(default_factory=RunningStats)
    power: RunningStats = field(default_factory=RunningStats)
    energy: EnergyMeter = field(default_factory=EnergyMeter)
    samples: int = 0
    first_t: float | None = None
    last_t: float | None = None
    failed: bool = False
    error: str = ""
    exclusive_seconds: float = 0.0  # of the run's window, time this run was the device's only user
    shared_seconds: float = 0.0  # ... and time it shared the device with other runs
    reported_joules: float = 0.0  # the cumulative energy last sent to OTLP / WatchRun
    in_parent: bool = False  # a MIG instance whose energy this run is charged on its parent's account

    def record(self, t: float, reading: DeviceReading, share: Share = EXCLUSIVE, counter_read: bool = True) -> None:
        """One sweep's reading; `share` = this run's part of the energy since the previous sweep
        (1/k while k runs sampled the device; a MIG instance's memory fraction of its parent,
        split among the runs using that slice: shares.py)."""
        if reading.failed:
            self.failed = True
            self.error = self.error or reading.error
            return
        self.samples += 1
        if self.first_t is None:
            self.first_t = t
        elif self.last_t is not None and t > self.last_t:
            if share.shared:
                self.shared_seconds += t - self.last_t
            else:
                self.exclusive_seconds += t - self.last_t
        self.last_t = t
        for stats, value in (
            (self.utilization, reading.utilization_percent),
            (self.memory, reading.memory_used_bytes),
            (self.temperature, reading.temperature_celsius),
            (self.power, reading.power_watts),
        ):
            if value is not None:
                stats.add(float(value))
        if share.in_parent:
            self.in_parent = True
        self.energy.add(t, reading.power_watts, reading.energy_counter_joules, share=share.fraction, counter_read=counter_read)


@dataclass(frozen=True, slots=True)
class PendingSample:
    """A sweep of a run's devices awaiting OTLP export, with each device's energy so far."""

    timestamp_ns: int
    readings: tuple[tuple[DeviceReading, float], ...]


class Run:
    def __init__(
        self,
        params: RunParams,
        devices: Sequence[DeviceInfo],
        gpu_available: bool,
        message: str,
        simulated: bool,
        clock: Callable[[], float],
        max_pending: int,
    ) -> None:
        self.params = params
        self.secret = secrets.token_urlsafe(32)  # what StartSampling returns; the run's RPCs must send it
        self.gpu_available = gpu_available
        self.message = message
        self.simulated = simulated
        self._clock = clock
        self.accounts: dict[str, DeviceAccount] = {d.uuid: DeviceAccount(info=d) for d in devices}
        self.totals = {name: RunningStats() for name in ("utilization", "memory", "temperature", "power")}
        self.sample_count = 0
        self.start_unix_ns = time.time_ns()
        self.start_mono = clock()
        self.end_unix_ns: int | None = None
        self.end_mono: float | None = None
        self.lease_expires_mono = self.start_mono + params.lease_seconds
        self.stopped = False
        self.stop_reason: StopReason | None = None
        self.summary: RunSummary | None = None
        self.pending: deque[PendingSample] = deque(maxlen=max_pending)
        self.otlp_dropped = 0
        self.otlp_exported = 0
        self.pending_lock = threading.Lock()
        self._watchers: list[queue.Queue[PendingSample | None]] = []
        self._last_snapshot: Snapshot | None = None  # a stop sweep reaches a run twice (listener, then finish)

    @property
    def run_id(self) -> str:
        return self.params.run_id

    def lease_expires_unix_ms(self) -> int:
        return int((time.time() + (self.lease_expires_mono - self._clock())) * 1000)

    def extend_lease(self) -> None:
        self.lease_expires_mono = self._clock() + self.params.lease_seconds

    def energy_joules(self) -> float:
        return sum(a.energy.joules for a in self.accounts.values())

    def record(self, snapshot: Snapshot, shares: Mapping[str, Share] | None = None) -> None:
        """Account one sweep. `shares`: device uuid -> this run's share of its energy since the
        previous sweep (None = this run alone on every device)."""
        if snapshot is self._last_snapshot:
            return
        self._last_snapshot = snapshot
        if self.stopped or not self.accounts:
            if not self.stopped:
                self.sample_count += 1
            return
        t = snapshot.monotonic
        readings: list[tuple[DeviceReading, float]] = []
        utilizations: list[float] = []
        memory = power = 0.0
        have_memory = have_power = False
        hottest: float | None = None
        physical: set[str] = set()  # GPUs whose utilisation/power/temperature are counted (a MIG instance's are its parent's)
        for reading in snapshot.devices:
            account = self.accounts.get(reading.uuid)
            if account is None:
                continue
            account.record(t, reading, shares.get(reading.uuid, EXCLUSIVE) if shares else EXCLUSIVE, snapshot.energy_read)
            if reading.failed:
                continue
            # cumulative energy for OTLP/WatchRun never goes down: an estimate between counter reads
            # that ran ahead of the next read is held until the counter catches up
            account.reported_joules = max(account.reported_joules, account.energy.joules)
            readings.append((reading, account.reported_joules))
            if reading.is_mig and reading.parent_uuid in self.accounts:
                continue  # the parent's readings already hold this instance
            gpu = reading.parent_uuid if reading.is_mig else reading.uuid
            if reading.memory_used_bytes is not None:
                memory += reading.memory_used_bytes
                have_memory = True
            if gpu in physical:
                continue
            physical.add(gpu)
            if reading.utilization_percent is not None:
                utilizations.append(reading.utilization_percent)
            if reading.power_watts is not None:
                power += reading.power_watts
                have_power = True
            if reading.temperature_celsius is not None:
                hottest = reading.temperature_celsius if hottest is None else max(hottest, reading.temperature_celsius)
        seen = {r.uuid for r in snapshot.devices}
        for uuid, account in self.accounts.items():  # a device missing from the sweep is not measured
            if uuid not in seen and snapshot.nvml_up:
                account.failed = True
                account.error = account.error or "GPU no longer visible"
        self.sample_count += 1
        if utilizations:
            self.totals["utilization"].add(sum(utilizations) / len(utilizations))
        if have_memory:
            self.totals["memory"].add(memory)
        if have_power:
            self.totals["power"].add(power)
        if hottest is not None:
            self.totals["temperature"].add(hottest)
        sample = PendingSample(snapshot.timestamp_ns, tuple(readings))
        if readings and self.params.otlp_endpoint:  # queued for OTLP only when there is somewhere to send it
            with self.pending_lock:
                if len(self.pending) == self.pending.maxlen:
                    self.otlp_dropped += 1
                self.pending.append(sample)
        for watcher in list(self._watchers):
            _offer(watcher, sample)

    # -- OTLP queue ---------------------------------------------------------------------------
    def take_pending(self) -> list[PendingSample]:
        with self.pending_lock:
            batch = list(self.pending)
            self.pending.clear()
            return batch

    def return_pending(self, batch: list[PendingSample]) -> None:
        """Put back samples whose export failed, oldest first; what no longer fits is dropped."""
        with self.pending_lock:
            room = (self.pending.maxlen or 0) - len(self.pending)
            keep = batch[-room:] if room > 0 else []
            self.otlp_dropped += len(batch) - len(keep)
            self.pending.extendleft(reversed(keep))

    # -- watching -----------------------------------------------------------------------------
    def subscribe(self, maxsize: int = 256) -> queue.Queue[PendingSample | None]:
        watcher: queue.Queue[PendingSample | None] = queue.Queue(maxsize=maxsize)
        self._watchers.append(watcher)
        if self.stopped:
            _offer(watcher, None)
        return watcher

    def unsubscribe(self, watcher: queue.Queue[PendingSample | None]) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    # -- stopping -----------------------------------------------------------------------------
    def finish(self, snapshot: Snapshot, reason: StopReason) -> None:
        self.record(snapshot)
        self.stopped = True
        self.stop_reason = reason
        self.end_unix_ns = snapshot.timestamp_ns
        self.end_mono = snapshot.monotonic
        for watcher in list(self._watchers):
            _offer(watcher, None)

    def seal(self) -> RunSummary:
        """Freeze the summary (after the final OTLP flush). Later calls return the same one."""
        if self.summary is None:
            self.summary = self.build_summary()
        return self.summary

    def build_summary(self) -> RunSummary:
        p = self.params
        end_mono = self.end_mono if self.end_mono is not None else self._clock()
        end_ns = self.end_unix_ns if self.end_unix_ns is not None else time.time_ns()
        devices = []
        for account in sorted(self.accounts.values(), key=lambda a: a.info.index):
            joules = account.energy.joules
            duration = (account.last_t - account.first_t) if account.first_t is not None and account.last_t is not None else 0.0
            devices.append(
                DeviceSummary(
                    index=account.info.index,
                    uuid=account.info.uuid,
                    name=account.info.name,
                    memory_total_bytes=account.info.memory_total_bytes,
                    energy_joules=joules,
                    co2_grams=co2_grams(joules, p.carbon_intensity_g_per_kwh, p.pue),
                    power_cost_usd=power_cost_usd(joules, p.power_cost_per_kwh),
                    duration_seconds=duration,
                    sample_count=account.samples,
                    utilization_percent=stats_of(account.utilization),
                    memory_used_bytes=stats_of(account.memory),
                    temperature_celsius=stats_of(account.temperature),
                    power_watts=stats_of(account.power),
                    energy_method=(
                        METHOD_MIG_MEMORY_SHARE if account.info.is_mig and account.energy.method != METHOD_NONE else account.energy.method
                    ),
                    counter_reset=account.energy.counter_reset,
                    failed=account.failed,
                    error=account.error,
                    exclusive_seconds=account.exclusive_seconds,
                    shared_seconds=account.shared_seconds,
                    split_method=(
                        SPLIT_IN_PARENT if account.in_parent else SPLIT_EQUAL_SHARE if account.shared_seconds > 0 else SPLIT_EXCLUSIVE
                    ),
                    is_mig=account.info.is_mig,
                    parent_uuid=account.info.parent_uuid,
                )
            )
        total = sum(d.energy_joules for d in devices)
        return RunSummary(
            run_id=p.run_id,
            gpu_available=self.gpu_available,
            start_unix_ms=self.start_unix_ns // 1_000_000,
            end_unix_ms=end_ns // 1_000_000,
            duration_seconds=max(0.0, end_mono - self.start_mono),
            sample_count=self.sample_count,
            energy_joules=total,
            co2_grams=sum(d.co2_grams for d in devices),
            power_cost_usd=sum(d.power_cost_usd for d in devices),
            utilization_percent=stats_of(self.totals["utilization"]),
            memory_used_bytes=stats_of(self.totals["memory"]),
            temperature_celsius=stats_of(self.totals["temperature"]),
            power_watts=stats_of(self.totals["power"]),
            energy_method=combine_methods([d.energy_method for d in devices]) if devices else METHOD_NONE,
            carbon_intensity_g_per_kwh=p.carbon_intensity_g_per_kwh,
            pue=p.pue,
            power_cost_per_kwh=p.power_cost_per_kwh,
            devices=tuple(devices),
            stop_reason=(self.stop_reason.value if self.stop_reason else ""),
            simulated=self.simulated,
            message=self.message,
            otlp_dropped_samples=self.otlp_dropped,
            otlp_exported_samples=self.otlp_exported,
        )


def _offer(watcher: queue.Queue, item: PendingSample | None) -> None:
    """Non-blocking put; a slow watcher loses its oldest samples, never the end marker."""
    while True:
        try:
            watcher.put_nowait(item)
            return
        except queue.Full:
            try:
                watcher.get_nowait()
            except queue.Empty:
                pass


# -- the registry -----------------------------------------------------------------------------
RunFinalizer = Callable[[Run, bool], None]  # (run, synchronous): final OTLP flush


class RunRegistry:
    """Live and recently stopped runs. Thread-safe; implements the sampler's listener and hook."""

    def __init__(
        self,
        sampler: Sampler,
        defaults: RunDefaults = RunDefaults(),
        finalizer: RunFinalizer | None = None,
        max_stopped: int = 256,
        max_pending_samples: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        max_live_runs: int = DEFAULT_MAX_LIVE_RUNS,
    ) -> None:
        self.sampler = sampler
        self.defaults = defaults
        self._finalizer = finalizer
        self._max_stopped = max_stopped
        self._max_pending = max_pending_samples
        self.max_live_runs = max_live_runs
        self._clock = clock
        self._lock = threading.RLock()
        self._active: dict[str, Run] = {}
        self._stopped: OrderedDict[str, Run] = OrderedDict()
        self._shares_cache: tuple[MigTopology, tuple[Run, ...], list[dict[str, Share]]] | None = None  # of the last sweep
        self.runs_started = 0
        self.runs_expired = 0
        sampler.add_listener(self)
        sampler.add_hook(self)
        sampler.set_interval_source(self.min_interval_s)

    def set_finalizer(self, finalizer: RunFinalizer) -> None:
        self._finalizer = finalizer

    # -- sampler integration ------------------------------------------------------------------
    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Every live run records the sweep. A run registered after the previous sweep is not live
        yet when this one is dispatched, so the runs here are exactly those that sampled each device
        over the interval: each is charged 1/k of a device that k of them share, and a MIG
        instance's runs its memory fraction of the parent, split the same way (shares.py)."""
        with self._lock:
            runs = list(self._active.values())
        if not runs:
            return
        for run, shares in zip(runs, self._shares(runs), strict=True):
            run.record(snapshot, shares)

    def _shares(self, runs: list[Run]) -> list[dict[str, Share]]:
        """Each run's shares; the same until a run starts or stops or the devices are rediscovered."""
        topology = self.sampler.mig_topology
        cached = self._shares_cache
        if (
            cached is not None
            and cached[0] is topology
            and len(cached[1]) == len(runs)
            and all(a is b for a, b in zip(cached[1], runs, strict=True))
        ):
            return cached[2]
        shares = device_shares([run.accounts.keys() for run in runs], topology)
        self._shares_cache = (topology, tuple(runs), shares)  # holds the runs: identity compares stay valid
        return shares

    def on_tick(self, now_monotonic: float) -> None:
        with self._lock:
            expired = [r.run_id for r in self._active.values() if r.lease_expires_mono <= now_monotonic]
        for run_id in expired:
            log.warning("run %s: lease expired without a heartbeat; stopping it", run_id)
            try:
                self.stop(run_id, StopReason.LEASE_EXPIRED)
                self.runs_expired += 1
            except RunNotFound:
                pass

    def next_deadline(self) -> float | None:
        with self._lock:
            if not self._active:
                return None
            return min(r.lease_expires_mono for r in self._active.values())

    def min_interval_s(self) -> float | None:
        with self._lock:
            if not self._active:
                return None
            return min(r.params.interval_ms for r in self._active.values()) / 1000.0

    # -- the API ------------------------------------------------------------------------------
    def start(self, params: RunParams) -> tuple[Run, bool]:
        """Start a run (boundary sweep first). Returns (run, already_running)."""
        with self._lock:
            live = self._active.get(params.run_id)
            if live is not None:
                if live.params != params:
                    raise RunConflict(f"run {params.run_id!r} is live with other parameters; stop it or use another run_id")
                live.extend_lease()
                return live, True
            if params.run_id in self._stopped:
                raise RunConflict(f"run {params.run_id!r} has already stopped; use a new run_id")
            self._check_room()
        health = self.sampler.health
        states = self.sampler.devices()
        known = {s.info.uuid: s for s in states}
        if params.gpu_uuids and health.nvml_up:
            unknown = [u for u in params.gpu_uuids if u not in known]
            if unknown:
                visible = ", ".join(sorted(known)) or "none"
                raise InvalidRequest(f"unknown GPU UUID(s): {', '.join(unknown)} (visible: {visible})")
        chosen = [s for s in states if not params.gpu_uuids or s.info.uuid in params.gpu_uuids]
        gpu_available = bool(health.nvml_up and chosen)
        if not health.nvml_up:
            message = f"NVML unavailable: {health.nvml_error}" if health.nvml_error else "NVML unavailable"
        elif not chosen:
            message = "no GPU visible to NVML"
        else:
            message = ""
        run = Run(
            params,
            [s.info for s in chosen] if gpu_available else [],
            gpu_available,
            message,
            self.sampler.backend.simulated,
            self._clock,
            self._max_pending,
        )

        outcome: list[tuple[Run, bool]] = []

        def register(snapshot: Snapshot) -> None:
            with self._lock:
                live = self._active.get(params.run_id)
                if live is not None and live.params == params:  # an identical start won the race: idempotent
                    live.extend_lease()
                    outcome.append((live, True))
                    return
                if live is not None or params.run_id in self._stopped:
                    raise RunConflict(f"run {params.run_id!r} was started concurrently")
                self._check_room()
                run.start_unix_ns = snapshot.timestamp_ns
                run.start_mono = snapshot.monotonic
                run.extend_lease()
                run.record(snapshot)
                self._active[params.run_id] = run
                self.runs_started += 1
                self._publish_users()
                outcome.append((run, False))

        self.sampler.sweep(after=register)
        self.sampler.wake()
        return outcome[0]

    def _publish_users(self) -> None:
        """Tell a backend that models load (the simulated one) how many runs use each device.
        Called under the lock, between two sweeps."""
        set_users = getattr(self.sampler.backend, "set_device_users", None)
        if set_users is None:
            return
        users: dict[str, int] = {}
        for run in self._active.values():
            for uuid in run.accounts:
                users[uuid] = users.get(uuid, 0) + 1
        set_users(users)

    def _check_room(self) -> None:
        if len(self._active) >= self.max_live_runs:
            raise RunLimit(f"this exporter already samples {len(self._active)} live runs (at most {self.max_live_runs}); stop one first")

    def heartbeat(self, run_id: str) -> Run:
        with self._lock:
            run = self._active.get(run_id)
            if run is None:
                if run_id in self._stopped:
                    raise RunNotFound(f"run {run_id!r} has stopped ({self._stopped[run_id].stop_reason.value})")  # type: ignore[union-attr]
                raise RunNotFound(f"no run {run_id!r}")
            run.extend_lease()
            return run

    def stop(self, run_id: str, reason: StopReason = StopReason.CLIENT) -> RunSummary:
        with self._lock:
            stopped = self._stopped.get(run_id)
            if stopped is not None:
                return stopped.seal()
            if run_id not in self._active:
                raise RunNotFound(f"no run {run_id!r}")
        finished: list[Run] = []

        def finish(snapshot: Snapshot) -> None:
            with self._lock:
                run = self._active.pop(run_id, None)
                if run is None:
                    return
                run.finish(snapshot, reason)
                self._publish_users()
                self._stopped[run_id] = run
                while len(self._stopped) > self._max_stopped:
                    self._stopped.popitem(last=False)
                finished.append(run)

        self.sampler.sweep(after=finish)
        if not finished:  # another thread stopped it between our check and the sweep
            with self._lock:
                return self._stopped[run_id].seal()
        run = finished[0]
        if self._finalizer is not None:
            try:
                self._finalizer(run, reason is not StopReason.LEASE_EXPIRED)
            except Exception:
                log.exception("run %s: final OTLP flush failed", run_id)
        self.sampler.wake()
        return run.seal()

    def stop_all(self, reason: StopReason = StopReason.SHUTDOWN) -> list[RunSummary]:
        """Stop every live run at one boundary sweep (not one sweep per run: a flood of runs must
        not make shutdown quadratic), then hand each to the finalizer."""
        finished: list[Run] = []

        def finish_all(snapshot: Snapshot) -> None:
            with self._lock:
                for run_id in list(self._active):
                    run = self._active.pop(run_id)
                    run.finish(snapshot, reason)
                    self._stopped[run_id] = run
                    finished.append(run)
                while len(self._stopped) > self._max_stopped:
                    self._stopped.popitem(last=False)
                self._publish_users()

        self.sampler.sweep(after=finish_all)
        for run in finished:
            if self._finalizer is not None:
                try:
                    self._finalizer(run, False)
                except Exception:
                    log.exception("run %s: final OTLP flush failed", run.run_id)
        self.sampler.wake()
        return [run.seal() for run in finished]

    def get(self, run_id: str) -> Run:
        with self._lock:
            run = self._active.get(run_id) or self._stopped.get(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r}")
        return run

    def active_runs(self) -> list[Run]:
        with self._lock:
            return list(self._active.values())

    def all_runs(self) -> list[Run]:
        with self._lock:
            return list(self._active.values()) + list(self._stopped.values())
