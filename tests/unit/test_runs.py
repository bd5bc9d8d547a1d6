"""runs.py: parameter validation, the registry's run lifecycle, leases, accounting and summaries."""

from __future__ import annotations

import math
import queue
import threading
import time

import pytest

from smoltrace_gpu_exporter.endpoints import AllowList
from smoltrace_gpu_exporter.energy import co2_grams, power_cost_usd
from smoltrace_gpu_exporter.nvml import Field
from smoltrace_gpu_exporter.runs import (
    DEFAULT_INTERVAL_MS,
    DEFAULT_LEASE_S,
    InvalidRequest,
    PendingSample,
    Run,
    RunConflict,
    RunDefaults,
    RunNotFound,
    RunParams,
    RunRegistry,
    StopReason,
)
from smoltrace_gpu_exporter.sampler import Sampler
from tests.fakes.fake_nvml import GIB, FakeClock, FakeNvml


def start(registry: RunRegistry, run_id: str, **kwargs) -> Run:
    run, already = registry.start(RunParams.create(run_id, defaults=registry.defaults, **kwargs))
    assert already is False
    return run


def drain(q: queue.Queue) -> list:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


# -- RunParams ------------------------------------------------------------------------------------
def test_defaults_apply() -> None:
    p = RunParams.create("run-1")
    assert p.interval_ms == DEFAULT_INTERVAL_MS == 1000
    assert p.lease_seconds == DEFAULT_LEASE_S == 120
    assert p.carbon_intensity_g_per_kwh == 475.0
    assert p.pue == 1.0
    assert p.power_cost_per_kwh == 0.12
    assert p.gpu_uuids == ()
    assert p.otlp_endpoint == ""
    custom = RunDefaults(carbon_intensity_g_per_kwh=50.0, pue=1.3, power_cost_per_kwh=0.3, otlp_endpoint="collector:4317")
    q = RunParams.create("run-1", defaults=custom)
    assert (q.carbon_intensity_g_per_kwh, q.pue, q.power_cost_per_kwh, q.otlp_endpoint) == (50.0, 1.3, 0.3, "collector:4317")
    allowed = RunDefaults(otlp_endpoint="collector:4317", otlp_allow=AllowList.parse("other"))
    assert RunParams.create("run-1", defaults=allowed, otlp_endpoint="other:4317").otlp_endpoint == "other:4317"


def test_explicit_values_and_normalisation() -> None:
    p = RunParams.create(
        "eval/2024-01-01T00:00:00Z@host+1",
        interval_ms=50,
        lease_seconds=3_600,
        carbon_intensity_g_per_kwh=300.5,
        pue=1.2,
        gpu_uuids=["GPU-b", "GPU-a", "GPU-b"],
        resource_attributes={"z": "1", "a": "2"},
    )
    assert p.interval_ms == 50 and p.lease_seconds == 3_600
    assert p.carbon_intensity_g_per_kwh == 300.5 and p.pue == 1.2
    assert p.gpu_uuids == ("GPU-a", "GPU-b")  # de-duplicated, order-independent
    assert p.resource_attributes == (("a", "2"), ("z", "1"))
    assert RunParams.create("r", interval_ms=60_000).interval_ms == 60_000
    assert RunParams.create("r" * 128).run_id == "r" * 128


@pytest.mark.parametrize(
    ("run_id", "kwargs", "message"),
    [
        ("", {}, "run_id is required"),
        ("r" * 129, {}, "run_id must be at most 128 characters, got 129"),
        ("r" * 10_240, {}, "run_id must be at most 128 characters, got 10240"),
        ("bad id", {}, "run_id must start with a letter or digit"),
        ("-leading-dash", {}, "run_id must start with a letter or digit"),
        ("semi;colon", {}, "run_id must start with a letter or digit"),
        ("newline\n", {}, "run_id must start with a letter or digit"),
        ("r", {"interval_ms": 49}, "interval_ms must be 50..60000 (0 = 1000), got 49"),
        ("r", {"interval_ms": 60_001}, "interval_ms must be 50..60000 (0 = 1000), got 60001"),
        ("r", {"interval_ms": -1}, "interval_ms must be 50..60000 (0 = 1000), got -1"),
        ("r", {"lease_seconds": -5}, "lease_seconds must be 1..3600 (0 = 120), got -5"),
        ("r", {"lease_seconds": 3_601}, "lease_seconds must be 1..3600 (0 = 120), got 3601"),
        ("r", {"carbon_intensity_g_per_kwh": -1.0}, "carbon_intensity_g_per_kwh must not be negative (0 = default 475.0), got -1.0"),
        ("r", {"carbon_intensity_g_per_kwh": math.nan}, "carbon_intensity_g_per_kwh must be a finite number, got nan"),
        ("r", {"carbon_intensity_g_per_kwh": math.inf}, "carbon_intensity_g_per_kwh must be a finite number, got inf"),
        ("r", {"carbon_intensity_g_per_kwh": 5000.1}, "carbon_intensity_g_per_kwh must be at most 5000.0"),
        ("r", {"pue": 0.5}, "pue must be >= 1.0 (0 = default 1.0), got 0.5"),
        ("r", {"pue": -1.0}, "pue must not be negative"),
        ("r", {"pue": math.nan}, "pue must be a finite number"),
        ("r", {"pue": 11.0}, "pue must be at most 10.0"),
        ("r", {"power_cost_per_kwh": -0.1}, "power_cost_per_kwh must not be negative"),
        ("r", {"gpu_uuids": [""]}, "gpu_uuids must hold at most 256 non-empty UUIDs"),
        ("r", {"gpu_uuids": [f"GPU-{i}" for i in range(257)]}, "gpu_uuids must hold at most 256"),
        ("r", {"resource_attributes": {f"k{i}": "v" for i in range(65)}}, "at most 64 resource_attributes are allowed, got 65"),
        ("r", {"resource_attributes": {"": "v"}}, "resource attribute keys must be 1..255 characters"),
        ("r", {"resource_attributes": {"k": "v" * 1025}}, "values at most 1024"),
        ("r", {"otlp_endpoint": "host :4317"}, "otlp_endpoint must be host:port or a URL without spaces"),
    ],
)
def test_invalid_params(run_id: str, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        RunParams.create(run_id, **kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


# -- lifecycle ------------------------------------------------------------------------------------
def test_start_is_idempotent_and_conflicts_are_refused(registry: RunRegistry, clock: FakeClock) -> None:
    params = RunParams.create("run-a", interval_ms=200, lease_seconds=10)
    run, already = registry.start(params)
    assert already is False
    assert run.gpu_available is True
    assert [a.info.index for a in run.accounts.values()] == [0, 1]
    clock.advance(6.0)
    again, already = registry.start(RunParams.create("run-a", interval_ms=200, lease_seconds=10))
    assert already is True
    assert again is run
    assert run.lease_expires_mono == clock.now + 10  # a repeated start renews the lease
    assert registry.runs_started == 1
    with pytest.raises(RunConflict, match="live with other parameters"):
        registry.start(RunParams.create("run-a", interval_ms=500, lease_seconds=10))
    registry.stop("run-a")
    with pytest.raises(RunConflict, match="already stopped"):
        registry.start(params)


def test_stop_twice_returns_the_identical_summary(registry: RunRegistry, sampler: Sampler, clock: FakeClock) -> None:
    calls: list[tuple[str, bool]] = []
    registry.set_finalizer(lambda run, synchronous: calls.append((run.run_id, synchronous)))
    start(registry, "run-a")
    clock.advance(1.0)
    first = registry.stop("run-a")
    sweeps = sampler.health.sweeps
    clock.advance(5.0)
    second = registry.stop("run-a")
    assert second is first
    assert second == first
    assert sampler.health.sweeps == sweeps  # no new boundary read for a stopped run
    assert calls == [("run-a", True)]  # flushed once, synchronously
    assert first.stop_reason == "client"
    assert registry.get("run-a").summary is first


def test_unknown_runs(registry: RunRegistry) -> None:
    for call in (registry.stop, registry.heartbeat, registry.get):
        with pytest.raises(RunNotFound) as info:
            call("nope")
        assert str(info.value) == "no run 'nope'"
    start(registry, "run-a")
    registry.stop("run-a")
    with pytest.raises(RunNotFound, match=r"has stopped \(client\)"):
        registry.heartbeat("run-a")


def test_concurrent_identical_starts_are_idempotent(clock: FakeClock) -> None:
    nvml = FakeNvml(1, clock=clock)
    nvml.gpu(0).delay(Field.POWER, 0.05)  # widen the window between the liveness check and the boundary sweep
    registry = RunRegistry(Sampler(nvml, clock=clock), clock=clock)
    results: list[object] = []
    barrier = threading.Barrier(4)

    def client() -> None:
        barrier.wait()
        try:
            results.append(registry.start(RunParams.create("same", interval_ms=100)))
        except Exception as err:  # noqa: BLE001 - recorded for the assertion
            results.append(err)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert all(isinstance(r, tuple) for r in results), results
    assert sorted(already for _, already in results) == [False, True, True, True]  # type: ignore[misc]
    assert len({id(run) for run, _ in results}) == 1  # type: ignore[misc]
    assert registry.runs_started == 1


def test_many_runs_from_many_threads(registry: RunRegistry) -> None:
    def client(i: int) -> None:
        start(registry, f"run-{i}")
        registry.heartbeat(f"run-{i}")
        registry.stop(f"run-{i}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert registry.runs_started == 8
    assert registry.active_runs() == []
    assert sorted(r.run_id for r in registry.all_runs()) == [f"run-{i}" for i in range(8)]
    assert all(r.summary is not None and r.summary.sample_count >= 2 for r in registry.all_runs())


# -- leases ---------------------------------------------------------------------------------------
def test_lease_expiry_with_a_fake_clock(registry: RunRegistry, clock: FakeClock) -> None:
    flushed: list[tuple[str, bool]] = []
    registry.set_finalizer(lambda run, synchronous: flushed.append((run.run_id, synchronous)))
    t0 = clock.now
    run = start(registry, "leased", lease_seconds=5)
    assert registry.next_deadline() == t0 + 5
    registry.on_tick(t0 + 4.9)
    assert not run.stopped
    clock.set(t0 + 4.0)
    registry.heartbeat("leased")
    assert registry.next_deadline() == t0 + 9
    assert abs(run.lease_expires_unix_ms() - (time.time() + 5) * 1000) < 1000
    clock.set(t0 + 8.99)
    registry.on_tick(clock.now)
    assert not run.stopped
    clock.set(t0 + 9.0)
    registry.on_tick(clock.now)
    assert run.stopped
    assert run.summary is not None
    assert run.summary.stop_reason == "lease_expired"
    assert run.summary.duration_seconds == 9.0
    assert registry.runs_expired == 1
    assert registry.next_deadline() is None
    assert flushed == [("leased", False)]  # the background thread flushes an expired run
    assert registry.stop("leased") is run.summary


def test_lease_expiry_with_the_real_sampler_thread() -> None:
    sampler = Sampler(FakeNvml(1), idle_interval_s=30.0)
    registry = RunRegistry(sampler)
    sampler.start()
    try:
        run = start(registry, "client-vanished", lease_seconds=1, interval_ms=100)
        deadline = time.monotonic() + 3.0
        while not run.stopped and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run.stopped
        summary = registry.stop("client-vanished")
        assert summary.stop_reason == StopReason.LEASE_EXPIRED.value
        assert 1.0 <= summary.duration_seconds < 2.0  # stopped at (not before) the lease's end
        assert 5 <= summary.sample_count <= 14  # 100 ms sampling for ~1 s, plus the boundary reads
        assert registry.runs_expired == 1
    finally:
        sampler.stop()


# -- accounting -----------------------------------------------------------------------------------
def test_concurrent_runs_share_the_sampler_and_get_their_own_energy(nvml: FakeNvml, sampler: Sampler, clock: FakeClock) -> None:
    registry = RunRegistry(sampler, clock=clock)
    g0, g1 = nvml.gpu(0), nvml.gpu(1)
    a = start(registry, "run-a", carbon_intensity_g_per_kwh=300.0, pue=1.5)
    clock.advance(1.0)
    g0.advance_energy(10.0)
    g1.advance_energy(20.0)
    sampler.sweep()
    b = start(registry, "run-b", gpu_uuids=[g1.uuid])  # boundary read of GPU 1 at 1_001_020 J
    assert b.accounts[g1.uuid].energy.counter_first == 1_001_020.0
    assert a.accounts[g0.uuid].energy.counter_first == 1_000_000.0
    clock.advance(1.0)
    g0.advance_energy(5.0)
    g1.advance_energy(7.0)
    sampler.sweep()
    clock.advance(1.0)
    g0.advance_energy(1.0)
    g1.advance_energy(2.0)
    summary_a = registry.stop("run-a")  # its boundary read sees these last increments
    clock.advance(1.0)
    g1.advance_energy(3.0)
    sampler.sweep()
    g1.advance_energy(4.0)
    g0.advance_energy(1000.0)  # not B's GPU
    summary_b = registry.stop("run-b")

    assert nvml.calls["device_count"] == 1  # one sampler, one discovery
    # GPU 1 drew 20 J (A alone), 7 + 2 J (A and B: half each), 3 + 4 J (B alone)
    assert [d.energy_joules for d in summary_a.devices] == [16.0, 24.5]
    assert summary_a.energy_joules == 40.5
    assert summary_a.energy_method == "counter"
    assert summary_a.co2_grams == pytest.approx(40.5 / 3.6e6 * 300.0 * 1.5)
    assert summary_a.devices[1].co2_grams == pytest.approx(co2_grams(24.5, 300.0, 1.5))
    assert summary_a.power_cost_usd == pytest.approx(power_cost_usd(40.5, 0.12))
    assert (summary_a.carbon_intensity_g_per_kwh, summary_a.pue) == (300.0, 1.5)
    assert summary_a.duration_seconds == 3.0
    assert summary_a.sample_count == 5  # start, sweep, B's start, sweep, stop
    gpu0_a, gpu1_a = summary_a.devices
    assert (gpu0_a.split_method, gpu0_a.exclusive_seconds, gpu0_a.shared_seconds) == ("exclusive", 3.0, 0.0)
    assert (gpu1_a.split_method, gpu1_a.exclusive_seconds, gpu1_a.shared_seconds) == ("equal_share", 1.0, 2.0)

    assert [d.uuid for d in summary_b.devices] == [g1.uuid]
    assert summary_b.energy_joules == 11.5
    assert summary_b.co2_grams == pytest.approx(11.5 / 3.6e6 * 475.0)
    assert summary_b.duration_seconds == 3.0
    (gpu1_b,) = summary_b.devices
    assert (gpu1_b.split_method, gpu1_b.exclusive_seconds, gpu1_b.shared_seconds) == ("equal_share", 1.0, 2.0)
    # the runs sharing GPU 1 add up to what it drew over the union of their windows
    assert gpu1_a.energy_joules + gpu1_b.energy_joules == 20.0 + 7.0 + 2.0 + 3.0 + 4.0
    assert summary_b.sample_count == 5  # start, sweep, A's stop, sweep, stop


def test_summary_statistics(nvml: FakeNvml, registry: RunRegistry, clock: FakeClock) -> None:
    t0 = clock.now
    nvml.gpu(0).set(Field.UTILIZATION, lambda t: 10.0 * (t - t0))  # 0, 10, 20
    nvml.gpu(0).set(Field.TEMPERATURE, lambda t: 60.0 + (t - t0))  # 60, 61, 62; GPU 1 is at 51
    start(registry, "stats", carbon_intensity_g_per_kwh=400.0, pue=1.25, power_cost_per_kwh=0.2)
    clock.advance(1.0)
    nvml.gpu(0).advance_energy(100.0)
    nvml.gpu(1).advance_energy(300.0)
    registry.sampler.sweep()
    clock.advance(1.0)
    nvml.gpu(0).advance_energy(100.0)
    nvml.gpu(1).advance_energy(300.0)
    s = registry.stop("stats")

    assert s.gpu_available is True and s.simulated is False and s.message == ""
    assert s.sample_count == 3
    assert s.duration_seconds == 2.0
    d0, d1 = s.devices
    assert (d0.index, d0.uuid, d0.name, d0.memory_total_bytes) == (0, nvml.gpu(0).uuid, nvml.gpu(0).name, 80 * GIB)
    assert d0.sample_count == 3 and d0.duration_seconds == 2.0
    assert (d0.utilization_percent.avg, d0.utilization_percent.min, d0.utilization_percent.max) == (10.0, 0.0, 20.0)
    assert d0.utilization_percent.count == 3
    assert (d0.temperature_celsius.avg, d0.temperature_celsius.max) == (61.0, 62.0)
    assert (d0.power_watts.avg, d1.power_watts.avg) == (200.0, 250.0)
    assert d1.memory_used_bytes.max == 11 * GIB
    assert (d0.energy_joules, d1.energy_joules) == (200.0, 600.0)
    assert (d0.energy_method, d1.energy_method) == ("counter", "counter")
    assert s.energy_joules == d0.energy_joules + d1.energy_joules == 800.0
    assert s.co2_grams == pytest.approx(800.0 / 3.6e6 * 400.0 * 1.25)
    assert s.co2_grams == pytest.approx(d0.co2_grams + d1.co2_grams)
    assert s.power_cost_usd == pytest.approx(800.0 / 3.6e6 * 0.2)
    # run totals: mean utilisation across GPUs, summed memory and power, hottest GPU
    assert (s.utilization_percent.min, s.utilization_percent.max) == (25.0, 35.0)
    assert s.memory_used_bytes.avg == 21 * GIB
    assert s.power_watts.avg == 450.0
    assert (s.temperature_celsius.min, s.temperature_celsius.max) == (60.0, 62.0)
    assert s.start_unix_ms <= s.end_unix_ms


def test_integrated_energy_where_the_counter_is_unsupported(clock: FakeClock) -> None:
    nvml = FakeNvml(1, clock=clock)
    nvml.gpu(0).unsupported(Field.ENERGY)
    sampler = Sampler(nvml, clock=clock)
    registry = RunRegistry(sampler, clock=clock)
    start(registry, "integrated")
    clock.advance(2.0)
    sampler.sweep()
    clock.advance(2.0)
    s = registry.stop("integrated")
    assert s.energy_method == "integrated"
    assert s.energy_joules == 200.0 * 4.0


def test_counter_reset_during_a_run(nvml: FakeNvml, registry: RunRegistry, clock: FakeClock) -> None:
    start(registry, "reset")
    nvml.gpu(0).advance_energy(40.0)
    clock.advance(1.0)
    registry.sampler.sweep()
    nvml.gpu(0).reset_energy().advance_energy(25.0)  # driver reload, then 25 J more
    clock.advance(1.0)
    s = registry.stop("reset")
    assert s.devices[0].counter_reset is True
    assert s.devices[0].energy_joules == 65.0
    assert s.devices[1].counter_reset is False


def test_gpu_uuid_filter_and_unknown_uuid(nvml: FakeNvml, registry: RunRegistry) -> None:
    uuid1 = nvml.gpu(1).uuid
    run = start(registry, "one-gpu", gpu_uuids=[uuid1])
    assert list(run.accounts) == [uuid1]
    summary = registry.stop("one-gpu")
    assert [(d.index, d.uuid) for d in summary.devices] == [(1, uuid1)]
    assert summary.utilization_percent.avg == 50.0  # GPU 0 is not part of this run
    with pytest.raises(InvalidRequest) as info:
        registry.start(RunParams.create("bad", gpu_uuids=[uuid1, "GPU-does-not-exist"]))
    message = str(info.value)
    assert message.startswith("unknown GPU UUID(s): GPU-does-not-exist (visible: ")
    assert nvml.gpu(0).uuid in message and uuid1 in message
    with pytest.raises(RunNotFound):
        registry.get("bad")


def test_failed_device_mid_run_is_flagged(nvml: FakeNvml, registry: RunRegistry, clock: FakeClock) -> None:
    start(registry, "lossy")
    nvml.gpu(1).advance_energy(50.0)
    clock.advance(1.0)
    registry.sampler.sweep()
    nvml.gpu(1).lose_now()
    nvml.gpu(1).advance_energy(999.0)  # never read again
    nvml.gpu(0).advance_energy(10.0)
    clock.advance(1.0)
    registry.sampler.sweep()
    clock.advance(1.0)
    s = registry.stop("lossy")
    d0, d1 = s.devices
    assert d1.failed is True
    assert d1.error == "GPU is lost (NVML error 15)"
    assert d1.sample_count == 2  # readings before the loss
    assert d1.energy_joules == 50.0  # energy up to the last good read
    assert d0.failed is False and d0.error == ""
    assert d0.sample_count == 4 and d0.energy_joules == 10.0
    assert s.energy_joules == 60.0


def test_gpu_vanished_after_reinit_is_flagged(nvml: FakeNvml, registry: RunRegistry, clock: FakeClock) -> None:
    start(registry, "vanish")
    nvml.break_library(after_calls=0)
    registry.sampler.sweep()
    nvml.remove_gpu(1)
    clock.advance(1.0)
    registry.sampler.sweep()
    s = registry.stop("vanish")
    assert s.devices[1].failed is True
    assert "no longer visible" in s.devices[1].error
    assert s.devices[0].failed is False


def test_no_gpu_runs(clock: FakeClock) -> None:
    soft = RunRegistry(Sampler(FakeNvml(2, clock=clock).missing_library(), clock=clock), clock=clock)
    run = start(soft, "soft", gpu_uuids=["GPU-whatever"])  # UUIDs cannot be checked without NVML
    assert run.gpu_available is False
    assert run.message == "NVML unavailable: NVML Shared Library Not Found (NVML error 12)"
    s = soft.stop("soft")
    assert (s.gpu_available, s.devices, s.energy_joules, s.energy_method) == (False, (), 0.0, "none")
    assert s.utilization_percent is None

    empty = RunRegistry(Sampler(FakeNvml(0, clock=clock), clock=clock), clock=clock)
    run = start(empty, "empty")
    assert run.gpu_available is False
    assert run.message == "no GPU visible to NVML"


def test_simulated_flag_is_carried(clock: FakeClock) -> None:
    registry = RunRegistry(Sampler(FakeNvml(1, clock=clock, simulated=True), clock=clock), clock=clock)
    start(registry, "sim")
    assert registry.stop("sim").simulated is True


def test_interval_follows_the_fastest_live_run(registry: RunRegistry, sampler: Sampler) -> None:
    assert registry.min_interval_s() is None
    assert sampler.current_interval_s() == 15.0
    start(registry, "slow", interval_ms=200)
    start(registry, "fast", interval_ms=100)
    assert sampler.current_interval_s() == 0.1
    registry.stop("fast")
    assert sampler.current_interval_s() == 0.2
    registry.stop("slow")
    assert sampler.current_interval_s() == 15.0


def test_stop_all_and_the_stopped_history_bound(sampler: Sampler, clock: FakeClock) -> None:
    registry = RunRegistry(sampler, clock=clock, max_stopped=2)
    for name in ("r1", "r2", "r3"):
        start(registry, name)
    summaries = registry.stop_all()
    assert sorted(s.run_id for s in summaries) == ["r1", "r2", "r3"]
    assert {s.stop_reason for s in summaries} == {"shutdown"}
    assert sorted(r.run_id for r in registry.all_runs()) == ["r2", "r3"]  # the oldest was forgotten
    with pytest.raises(RunNotFound):
        registry.get("r1")


def test_a_failing_finalizer_does_not_break_stop(registry: RunRegistry) -> None:
    def finalizer(run: Run, synchronous: bool) -> None:
        raise RuntimeError("collector exploded")

    registry.set_finalizer(finalizer)
    start(registry, "r")
    assert registry.stop("r").run_id == "r"


# -- OTLP queue and watchers ----------------------------------------------------------------------
def test_bounded_pending_queue_counts_drops(sampler: Sampler, clock: FakeClock) -> None:
    registry = RunRegistry(sampler, clock=clock, max_pending_samples=3)
    run = start(registry, "queued", otlp_endpoint="127.0.0.1:4317")
    snapshots = []
    for _ in range(5):
        clock.advance(1.0)
        snapshots.append(sampler.sweep())
    assert run.otlp_dropped == 3  # 6 samples into a queue of 3
    batch = run.take_pending()
    assert [s.timestamp_ns for s in batch] == [s.timestamp_ns for s in snapshots[-3:]]
    assert all(len(s.readings) == 2 for s in batch)
    assert run.take_pending() == []
    clock.advance(1.0)
    sampler.sweep()
    clock.advance(1.0)
    newest = sampler.sweep()
    run.return_pending(batch)  # the export failed: room for one of the three
    assert run.otlp_dropped == 5
    assert [s.timestamp_ns for s in run.take_pending()][-1] == newest.timestamp_ns
    summary = registry.stop("queued")
    assert summary.otlp_dropped_samples == 5


def test_pending_samples_carry_cumulative_energy(nvml: FakeNvml, registry: RunRegistry, clock: FakeClock) -> None:
    run = start(registry, "energy", otlp_endpoint="127.0.0.1:4317")
    for step in (5.0, 7.0):
        nvml.gpu(0).advance_energy(step)
        clock.advance(1.0)
        registry.sampler.sweep()
    energies = [dict((r.index, e) for r, e in s.readings)[0] for s in run.take_pending()]
    assert energies == [0.0, 5.0, 12.0]


def test_watch_receives_samples_then_the_end_marker(registry: RunRegistry, sampler: Sampler, clock: FakeClock) -> None:
    run = start(registry, "watched")
    watcher = run.subscribe()
    taken = []
    for _ in range(2):
        clock.advance(1.0)
        taken.append(sampler.sweep())
    clock.advance(1.0)
    registry.stop("watched")
    items = drain(watcher)
    assert items[-1] is None
    samples = items[:-1]
    assert all(isinstance(s, PendingSample) for s in samples)
    assert len(samples) == 3  # two sweeps and the stop boundary read, each once
    assert [s.timestamp_ns for s in samples[:2]] == [s.timestamp_ns for s in taken]
    assert [r.uuid for r, _ in samples[0].readings] == [a for a in run.accounts]
    late = run.subscribe()
    assert drain(late) == [None]
    run.unsubscribe(watcher)
    assert watcher not in run._watchers


def test_a_slow_watcher_loses_old_samples_never_the_end_marker(registry: RunRegistry, sampler: Sampler, clock: FakeClock) -> None:
    run = start(registry, "slow-watcher")
    watcher = run.subscribe(maxsize=2)
    for _ in range(5):
        clock.advance(1.0)
        sampler.sweep()
    registry.stop("slow-watcher")
    items = drain(watcher)
    assert len(items) == 2
    assert isinstance(items[0], PendingSample)
    assert items[1] is None


def test_no_samples_are_queued_for_a_run_without_a_collector(sampler: Sampler, clock: FakeClock) -> None:
    registry = RunRegistry(sampler, clock=clock, max_pending_samples=2)
    run = start(registry, "no-collector")
    for _ in range(5):
        clock.advance(1.0)
        sampler.sweep()
    assert run.take_pending() == []
    assert registry.stop("no-collector").otlp_dropped_samples == 0
