"""Run accounting end to end over gRPC: the energy/CO2 acceptance check against the simulated
energy counter, lease expiry, and concurrent runs sharing one exporter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_proto import pb
from tests.integration.conftest import RPC_TIMEOUT_S, Client, start_request

JOULES_PER_KWH = 3_600_000.0


@dataclass
class CounterBounds:
    """Energy-counter reads around a run: outer (before start, after stop) and inner (after start, before stop)."""

    before_start: list[float]
    after_start: list[float]
    before_stop: list[float]
    after_stop: list[float]

    def outer(self, index: int) -> float:
        return self.after_stop[index] - self.before_start[index]

    def inner(self, index: int) -> float:
        return self.before_stop[index] - self.after_start[index]


def read_counters(app: ExporterApp, count: int) -> list[float]:
    return [app.backend.total_energy_joules(i) for i in range(count)]


def timed_run(
    app: ExporterApp,
    client: Client,
    run_id: str,
    seconds: float,
    gpus: int = 2,
    on_started: Callable[[], None] = lambda: None,
    **fields: object,
) -> tuple[pb.RunSummary, CounterBounds, pb.StartSamplingResponse]:
    before_start = read_counters(app, gpus)
    started = client.stub.StartSampling(start_request(run_id, **fields), timeout=RPC_TIMEOUT_S)
    after_start = read_counters(app, gpus)
    on_started()
    time.sleep(seconds)
    before_stop = read_counters(app, gpus)
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    after_stop = read_counters(app, gpus)
    return summary, CounterBounds(before_start, after_start, before_stop, after_stop), started


def assert_energy_within(summary: pb.RunSummary, bounds: CounterBounds) -> None:
    for device in summary.devices:
        i = device.index
        slack = 1e-6 * bounds.outer(i)
        assert bounds.inner(i) - slack <= device.energy_joules <= bounds.outer(i) + slack, (
            f"GPU {i}: {device.energy_joules} J not within counter bounds [{bounds.inner(i)}, {bounds.outer(i)}]"
        )


@pytest.mark.slow
def test_acceptance_three_second_run_matches_the_simulated_counter(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]
) -> None:
    app = make_app()
    client = client_factory(app.addresses.grpc)
    summary, bounds, started = timed_run(app, client, "acceptance-3s", 3.0, interval_ms=100)

    assert started.energy_method == "counter" and started.simulated
    assert summary.gpu_available and summary.simulated and summary.stop_reason == "client"
    assert summary.energy_method == "counter"
    assert len(summary.devices) == 2
    assert_energy_within(summary, bounds)
    assert summary.energy_joules == pytest.approx(sum(d.energy_joules for d in summary.devices), rel=1e-12)
    # total energy between the sum of the inner and the sum of the outer bounds
    assert sum(bounds.inner(i) for i in (0, 1)) * (1 - 1e-6) <= summary.energy_joules <= sum(bounds.outer(i) for i in (0, 1)) * (1 + 1e-6)

    # CO2 = kWh x 475 g/kWh x PUE 1.0; cost = kWh x 0.12 USD
    assert summary.carbon_intensity_g_per_kwh == 475.0 and summary.pue == 1.0
    assert summary.co2_grams == pytest.approx(summary.energy_joules / JOULES_PER_KWH * 475.0 * 1.0, rel=1e-9)
    assert summary.power_cost_usd == pytest.approx(summary.energy_joules / JOULES_PER_KWH * 0.12, rel=1e-9)
    for device in summary.devices:
        assert device.co2_grams == pytest.approx(device.energy_joules / JOULES_PER_KWH * 475.0, rel=1e-9)
        assert device.energy_method == "counter" and not device.counter_reset and not device.failed

    # the run lasted the 3 s we slept (plus the RPCs), and the sweeps came every 100 ms
    assert 3.0 <= summary.duration_seconds < 3.8
    expected = summary.duration_seconds / 0.1 + 1
    assert abs(summary.sample_count - expected) <= 2, (summary.sample_count, expected)
    for device in summary.devices:
        assert device.sample_count == summary.sample_count
        assert device.duration_seconds == pytest.approx(summary.duration_seconds, abs=1e-6)
        # the counter energy agrees with mean power x duration (the load changes slowly)
        assert device.energy_joules == pytest.approx(device.power_watts.avg * device.duration_seconds, rel=0.05)
    # run totals: power summed across devices, utilisation averaged
    assert summary.power_watts.avg == pytest.approx(sum(d.power_watts.avg for d in summary.devices), rel=1e-9)
    assert summary.utilization_percent.avg == pytest.approx(sum(d.utilization_percent.avg for d in summary.devices) / 2, rel=1e-9)
    assert summary.temperature_celsius.max == pytest.approx(max(d.temperature_celsius.max for d in summary.devices))


def test_custom_carbon_intensity_and_pue(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app()
    client = client_factory(app.addresses.grpc)
    summary, bounds, _ = timed_run(
        app, client, "co2-custom", 0.5, interval_ms=100, carbon_intensity_g_per_kwh=300.0, pue=1.4, power_cost_per_kwh=0.5
    )
    assert_energy_within(summary, bounds)
    assert (summary.carbon_intensity_g_per_kwh, summary.pue, summary.power_cost_per_kwh) == (300.0, 1.4, 0.5)
    assert summary.co2_grams == pytest.approx(summary.energy_joules / JOULES_PER_KWH * 300.0 * 1.4, rel=1e-9)
    assert summary.power_cost_usd == pytest.approx(summary.energy_joules / JOULES_PER_KWH * 0.5, rel=1e-9)


def test_exporter_defaults_apply_to_runs(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app(carbon_intensity=100.0, pue=1.2)
    client = client_factory(app.addresses.grpc)
    summary, _, started = timed_run(app, client, "co2-defaults", 0.3)
    assert (started.carbon_intensity_g_per_kwh, started.pue) == (100.0, 1.2)
    assert summary.co2_grams == pytest.approx(summary.energy_joules / JOULES_PER_KWH * 100.0 * 1.2, rel=1e-9)


def test_lease_expiry_stops_the_run(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app()
    client = client_factory(app.addresses.grpc)
    started_at = time.monotonic()
    client.stub.StartSampling(start_request("lease-lapses", interval_ms=100, lease_seconds=1), timeout=RPC_TIMEOUT_S)
    state = client.stub.GetRun(pb.GetRunRequest(run_id="lease-lapses"), timeout=RPC_TIMEOUT_S)
    assert state.phase == pb.RunState.ACTIVE
    while True:
        state = client.stub.GetRun(pb.GetRunRequest(run_id="lease-lapses"), timeout=RPC_TIMEOUT_S)
        if state.phase == pb.RunState.STOPPED:
            break
        assert time.monotonic() - started_at < 2.5, "the run outlived its 1 s lease by more than 1.5 s"
        time.sleep(0.05)
    elapsed = time.monotonic() - started_at
    assert elapsed >= 0.9, f"stopped after {elapsed:.2f} s, before its 1 s lease lapsed"
    assert state.summary.stop_reason == "lease_expired"
    assert state.summary.energy_joules > 0 and state.summary.duration_seconds == pytest.approx(1.0, abs=0.5)
    # the exporter summarised it: StopSampling returns that summary, a heartbeat is too late
    assert client.stub.StopSampling(pb.StopSamplingRequest(run_id="lease-lapses"), timeout=RPC_TIMEOUT_S) == state.summary
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Heartbeat(pb.HeartbeatRequest(run_id="lease-lapses"), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "lease_expired" in err.value.details()
    assert app.registry.runs_expired == 1


def test_heartbeats_keep_the_run_alive(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app()
    client = client_factory(app.addresses.grpc)
    client.stub.StartSampling(start_request("lease-kept", interval_ms=100, lease_seconds=1), timeout=RPC_TIMEOUT_S)
    end = time.monotonic() + 2.2
    while time.monotonic() < end:
        time.sleep(0.3)
        client.stub.Heartbeat(pb.HeartbeatRequest(run_id="lease-kept"), timeout=RPC_TIMEOUT_S)
        state = client.stub.GetRun(pb.GetRunRequest(run_id="lease-kept"), timeout=RPC_TIMEOUT_S)
        assert state.phase == pb.RunState.ACTIVE, "a heartbeated run was stopped"
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="lease-kept"), timeout=RPC_TIMEOUT_S)
    assert summary.stop_reason == "client" and summary.duration_seconds >= 2.2
    assert app.registry.runs_expired == 0


def test_two_concurrent_runs_each_get_their_own_summary(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]
) -> None:
    app = make_app()
    results: dict[str, tuple[pb.RunSummary, CounterBounds, float]] = {}
    errors: list[BaseException] = []
    a_started = threading.Event()
    clients: dict[str, Client] = {}

    def drive(run_id: str, delay: float, seconds: float, interval_ms: int, gpu_uuids: list[str]) -> None:
        try:
            client = clients[run_id] = client_factory(app.addresses.grpc)  # each thread its own channel
            if delay:
                assert a_started.wait(5)
                time.sleep(delay)
            t0 = time.monotonic()
            summary, bounds, _ = timed_run(
                app, client, run_id, seconds, on_started=a_started.set, interval_ms=interval_ms, gpu_uuids=gpu_uuids
            )
            results[run_id] = (summary, bounds, time.monotonic() - t0)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)
            a_started.set()

    threads = [
        threading.Thread(target=drive, args=("overlap-a", 0.0, 1.5, 100, [])),
        threading.Thread(target=drive, args=("overlap-b", 0.5, 1.5, 200, [])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert not errors, errors
    a, bounds_a, wall_a = results["overlap-a"]
    b, bounds_b, wall_b = results["overlap-b"]
    assert a.run_id == "overlap-a" and b.run_id == "overlap-b"
    # overlapping windows: b started while a was live and outlived it
    assert a.start_unix_ms < b.start_unix_ms < a.end_unix_ms < b.end_unix_ms
    for summary, bounds, wall in ((a, bounds_a, wall_a), (b, bounds_b, wall_b)):
        assert summary.stop_reason == "client" and len(summary.devices) == 2
        for device in summary.devices:  # shared part of the window: half the GPU's energy each
            assert bounds.inner(device.index) / 2 * (1 - 1e-6) <= device.energy_joules <= bounds.outer(device.index) * (1 + 1e-6)
            assert device.split_method == "equal_share" and device.shared_seconds > 0
        assert 1.5 <= summary.duration_seconds <= wall
        assert summary.co2_grams == pytest.approx(summary.energy_joules / JOULES_PER_KWH * 475.0, rel=1e-9)
        assert all(d.sample_count == summary.sample_count for d in summary.devices)
    # a at 100 ms: ~16 sweeps; b at 200 ms, but sampled at a's 100 ms while a was live
    assert abs(a.sample_count - (a.duration_seconds / 0.1 + 1)) <= 3
    assert b.duration_seconds / 0.2 + 1 - 2 <= b.sample_count <= b.duration_seconds / 0.1 + 3
    assert a.energy_joules != b.energy_joules
    # together they drew what the GPUs drew over the union of their windows, no more
    for i in (0, 1):
        together = a.devices[i].energy_joules + b.devices[i].energy_joules
        union_inner = bounds_b.before_stop[i] - bounds_a.after_start[i]
        union_outer = bounds_b.after_stop[i] - bounds_a.before_start[i]
        assert union_inner * (1 - 1e-6) <= together <= union_outer * (1 + 1e-6)
    # each keeps its own summary: a second stop (by its owner) returns exactly it
    assert clients["overlap-a"].stub.StopSampling(pb.StopSamplingRequest(run_id="overlap-a"), timeout=RPC_TIMEOUT_S) == a
    assert clients["overlap-b"].stub.StopSampling(pb.StopSamplingRequest(run_id="overlap-b"), timeout=RPC_TIMEOUT_S) == b


def test_the_sampling_interval_follows_the_live_runs(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app(idle_interval_ms=60_000)
    client = client_factory(app.addresses.grpc)
    time.sleep(0.2)
    idle_sweeps = app.sampler.health.sweeps
    time.sleep(0.5)
    assert app.sampler.health.sweeps == idle_sweeps, "the idle exporter swept faster than its idle interval"
    client.stub.StartSampling(start_request("interval-follow", interval_ms=50), timeout=RPC_TIMEOUT_S)
    time.sleep(0.5)
    busy = app.sampler.health.sweeps - idle_sweeps
    assert 7 <= busy <= 13, busy
    client.stub.StopSampling(pb.StopSamplingRequest(run_id="interval-follow"), timeout=RPC_TIMEOUT_S)
    time.sleep(0.1)
    after = app.sampler.health.sweeps
    time.sleep(0.5)
    assert app.sampler.health.sweeps == after, "sampling did not return to the idle interval after the run"
