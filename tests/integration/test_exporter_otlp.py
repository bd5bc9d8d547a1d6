"""The per-run OTLP push, received by a real OTLP/gRPC receiver (tests/fakes/otlp_receiver.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_gpu_exporter.otlp import OtlpPublisher
from smoltrace_gpu_exporter.prometheus import ExporterCollector, MetricsServer, make_registry
from smoltrace_gpu_exporter.runs import RunDefaults, RunRegistry
from smoltrace_gpu_exporter.sampler import Sampler
from smoltrace_gpu_exporter.service import GpuExporterService, build_server
from smoltrace_gpu_exporter.simulated import SimulatedBackend
from smoltrace_proto import pb
from tests.fakes.otlp_receiver import DataPoint, OtlpReceiver
from tests.integration.conftest import RPC_TIMEOUT_S, Client, closed_port, connect, scrape, start_request, value_of, wait_until

MIB = 1024 * 1024
GAUGES = {
    "gen_ai.gpu.utilization": "%",
    "gen_ai.gpu.memory.used": "MiB",
    "gen_ai.gpu.memory.total": "MiB",
    "gen_ai.gpu.temperature": "Cel",
    "gen_ai.gpu.power": "W",
}
SUMS = {"gen_ai.gpu.energy": "J", "gen_ai.co2.emissions": "gCO2e", "gen_ai.power.cost": "USD"}
CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def of_run(run_id: str) -> Callable[[DataPoint], bool]:
    return lambda p: p.resource.get("run.id") == run_id


def by_gpu(points: list[DataPoint]) -> dict[str, list[DataPoint]]:
    out: dict[str, list[DataPoint]] = {}
    for point in points:
        out.setdefault(str(point.attributes["gpu_id"]), []).append(point)
    for gpu_points in out.values():
        gpu_points.sort(key=lambda p: p.time_unix_nano)
    return out


def test_run_metrics_arrive_live_and_completely_by_stop(
    make_app: Callable[..., ExporterApp],
    client_factory: Callable[..., Client],
    otlp_receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=evals")
    app = make_app(otlp_export_interval_ms=300)
    client = client_factory(app.addresses.grpc)
    run_id = "otlp-run-1"
    client.stub.StartSampling(
        start_request(
            run_id, interval_ms=100, otlp_endpoint=otlp_receiver.endpoint, resource_attributes={"model": "tiny", "provider": "ollama"}
        ),
        timeout=RPC_TIMEOUT_S,
    )
    # pushed while the run is live, not only at the end
    otlp_receiver.wait_for_points("gen_ai.gpu.utilization", 2, timeout=3.0, where=of_run(run_id))
    time.sleep(0.5)
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)

    # everything is there the moment StopSampling returns (final flush), no waiting
    received = {name: otlp_receiver.points(name, of_run(run_id)) for name in (*GAUGES, *SUMS)}
    for name, unit in {**GAUGES, **SUMS}.items():
        points = received[name]
        assert points, f"no {name} points"
        assert {p.unit for p in points} == {unit}, name
        assert {p.scope for p in points} == {"smoltrace.gpu"}
        if name in SUMS:
            assert {(p.kind, p.is_monotonic, p.temporality) for p in points} == {("sum", True, CUMULATIVE)}, name
        else:
            assert {p.kind for p in points} == {"gauge"}, name
        per_gpu = by_gpu(points)
        assert sorted(per_gpu) == ["0", "1"], name
        for gpu, gpu_points in per_gpu.items():
            assert len(gpu_points) == summary.sample_count, f"{name} GPU {gpu}: {len(gpu_points)} points, {summary.sample_count} samples"
            assert len({p.time_unix_nano for p in gpu_points}) == len(gpu_points), f"{name}: duplicated samples"
            device = summary.devices[int(gpu)]
            assert {(p.attributes["gpu_uuid"], p.attributes["gpu_name"]) for p in gpu_points} == {(device.uuid, device.name)}
            assert gpu_points[0].time_unix_nano // 1_000_000 == summary.start_unix_ms
            assert gpu_points[-1].time_unix_nano // 1_000_000 == summary.end_unix_ms
            if name in SUMS:  # cumulative from the run's start (gauges carry no start time)
                assert {p.start_time_unix_nano // 1_000_000 for p in gpu_points} == {summary.start_unix_ms}

    for gpu, device in enumerate(summary.devices):
        gpu_id = str(gpu)
        energy = by_gpu(received["gen_ai.gpu.energy"])[gpu_id]
        values = [p.value for p in energy]
        assert values == sorted(values) and values[0] == 0.0
        assert values[-1] == pytest.approx(device.energy_joules, rel=1e-12)
        assert by_gpu(received["gen_ai.co2.emissions"])[gpu_id][-1].value == pytest.approx(device.co2_grams, rel=1e-12)
        assert by_gpu(received["gen_ai.power.cost"])[gpu_id][-1].value == pytest.approx(device.power_cost_usd, rel=1e-12)
        util = [p.value for p in by_gpu(received["gen_ai.gpu.utilization"])[gpu_id]]
        assert sum(util) / len(util) == pytest.approx(device.utilization_percent.avg, rel=1e-9)
        assert max(util) == device.utilization_percent.max
        power = [p.value for p in by_gpu(received["gen_ai.gpu.power"])[gpu_id]]
        assert sum(power) / len(power) == pytest.approx(device.power_watts.avg, rel=1e-9)
        memory = [p.value for p in by_gpu(received["gen_ai.gpu.memory.used"])[gpu_id]]
        assert max(memory) == pytest.approx(device.memory_used_bytes.max / MIB, rel=1e-12)
        total = {p.value for p in by_gpu(received["gen_ai.gpu.memory.total"])[gpu_id]}
        assert total == {device.memory_total_bytes / MIB}
        temp = [p.value for p in by_gpu(received["gen_ai.gpu.temperature"])[gpu_id]]
        assert max(temp) == device.temperature_celsius.max

    resources = [r for r in otlp_receiver.resource_attributes() if r.get("run.id") == run_id]
    assert len(resources) >= 2  # at least one live push and the final flush
    for resource in resources:
        assert resource["service.name"] == "smoltrace-gpu-exporter"
        assert resource["gpu.simulated"] is True
        assert resource["model"] == "tiny" and resource["provider"] == "ollama"
        assert resource["host.name"]
        assert resource["deployment.environment"] == "ci" and resource["team"] == "evals"

    assert summary.otlp_exported_samples == summary.sample_count and summary.otlp_dropped_samples == 0
    metrics = scrape(app.addresses.metrics)
    assert value_of(metrics, "smoltrace_gpu_exporter_otlp_exported_samples_total") == summary.sample_count
    assert value_of(metrics, "smoltrace_gpu_exporter_otlp_dropped_samples_total") == 0


def test_runs_are_routed_to_their_own_endpoint(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    with OtlpReceiver() as default_receiver, OtlpReceiver() as run_receiver:
        app = make_app(otlp_endpoint=f"http://{default_receiver.endpoint}", otlp_export_interval_ms=60_000)
        client = client_factory(app.addresses.grpc)
        client.stub.StartSampling(start_request("routed-own", otlp_endpoint=run_receiver.endpoint), timeout=RPC_TIMEOUT_S)
        client.stub.StartSampling(start_request("routed-default"), timeout=RPC_TIMEOUT_S)
        assert client.stub.GetRun(pb.GetRunRequest(run_id="routed-default"), timeout=RPC_TIMEOUT_S).otlp_endpoint == (
            f"http://{default_receiver.endpoint}"
        )
        time.sleep(0.3)
        own = client.stub.StopSampling(pb.StopSamplingRequest(run_id="routed-own"), timeout=RPC_TIMEOUT_S)
        default = client.stub.StopSampling(pb.StopSamplingRequest(run_id="routed-default"), timeout=RPC_TIMEOUT_S)
        assert {r["run.id"] for r in run_receiver.resource_attributes()} == {"routed-own"}
        assert {r["run.id"] for r in default_receiver.resource_attributes()} == {"routed-default"}
        assert len(run_receiver.points("gen_ai.gpu.power")) == 2 * own.sample_count
        assert len(default_receiver.points("gen_ai.gpu.power")) == 2 * default.sample_count


def test_lease_expired_run_is_still_delivered(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], otlp_receiver: OtlpReceiver
) -> None:
    app = make_app(otlp_export_interval_ms=200)
    client = client_factory(app.addresses.grpc)
    client.stub.StartSampling(start_request("otlp-lapsed", lease_seconds=1, otlp_endpoint=otlp_receiver.endpoint), timeout=RPC_TIMEOUT_S)
    state = wait_until(
        lambda: (s := client.stub.GetRun(pb.GetRunRequest(run_id="otlp-lapsed"), timeout=RPC_TIMEOUT_S)).phase == pb.RunState.STOPPED and s,
        timeout=3.0,
        what="the lease to lapse",
    )
    assert state.summary.stop_reason == "lease_expired"
    points = otlp_receiver.wait_for_points("gen_ai.gpu.energy", 2 * state.summary.sample_count, timeout=3.0, where=of_run("otlp-lapsed"))
    assert len(points) == 2 * state.summary.sample_count


def test_shutdown_flushes_live_runs(make_app: Callable[..., ExporterApp], otlp_receiver: OtlpReceiver) -> None:
    app = make_app(otlp_export_interval_ms=60_000)
    client = connect(app.addresses.grpc)
    try:
        client.stub.StartSampling(start_request("otlp-shutdown", otlp_endpoint=otlp_receiver.endpoint), timeout=RPC_TIMEOUT_S)
        time.sleep(0.3)
    finally:
        client.close()
    assert not otlp_receiver.metrics_requests()  # nothing pushed yet (60 s interval)
    summaries = app.stop(deadline_s=3.0)
    assert [s.run_id for s in summaries] == ["otlp-shutdown"]
    assert summaries[0].stop_reason == "shutdown"
    utilization = otlp_receiver.points("gen_ai.gpu.utilization", of_run("otlp-shutdown"))
    assert len(utilization) == 2 * summaries[0].sample_count


def test_shutdown_with_dead_collectors_keeps_its_deadline_and_flushes_the_healthy_one(
    make_app: Callable[..., ExporterApp], otlp_receiver: OtlpReceiver, black_hole: str
) -> None:
    # three live runs to three collectors that never answer (one black hole, two other ports that
    # accept and hang) and one to a healthy receiver: the exporter must stop within its deadline
    holes = [black_hole]
    extra = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for sock in extra:
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            holes.append(f"127.0.0.1:{sock.getsockname()[1]}")
        app = make_app(otlp_export_interval_ms=100, otlp_timeout_s=2.0)
        client = connect(app.addresses.grpc)
        try:
            for i, hole in enumerate(holes):
                client.stub.StartSampling(start_request(f"hole-{i}", otlp_endpoint=hole), timeout=RPC_TIMEOUT_S)
            client.stub.StartSampling(start_request("healthy", otlp_endpoint=otlp_receiver.endpoint), timeout=RPC_TIMEOUT_S)
            time.sleep(0.5)  # background pushes to the holes are in flight
        finally:
            client.close()
        started = time.monotonic()
        summaries = {s.run_id: s for s in app.stop(deadline_s=4.0)}
        took = time.monotonic() - started
    finally:
        for sock in extra:
            sock.close()
    assert took < 4.0, f"shutdown took {took:.2f} s with a 4 s deadline"
    assert sorted(summaries) == ["healthy", "hole-0", "hole-1", "hole-2"]
    healthy = otlp_receiver.points("gen_ai.gpu.utilization", of_run("healthy"))
    assert len(healthy) == 2 * summaries["healthy"].sample_count  # the live run's final samples made it


def test_collector_outage_keeps_samples_until_it_recovers(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], otlp_receiver: OtlpReceiver
) -> None:
    app = make_app(otlp_export_interval_ms=100, otlp_timeout_s=0.5)
    client = client_factory(app.addresses.grpc)
    otlp_receiver.fail_with = grpc.StatusCode.UNAVAILABLE
    client.stub.StartSampling(start_request("otlp-outage", otlp_endpoint=otlp_receiver.endpoint), timeout=RPC_TIMEOUT_S)
    wait_until(lambda: otlp_receiver.rejected >= 1, timeout=3.0, what="a rejected export")
    time.sleep(0.3)
    started = time.monotonic()
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="otlp-outage"), timeout=RPC_TIMEOUT_S)
    assert time.monotonic() - started < 0.5 + 0.4, "StopSampling waited on a collector known to be down"
    assert app.publisher.stats.export_failures >= 1
    otlp_receiver.fail_with = None
    points = otlp_receiver.wait_for_points("gen_ai.gpu.utilization", 2 * summary.sample_count, timeout=3.0, where=of_run("otlp-outage"))
    assert len(points) == 2 * summary.sample_count  # nothing lost, nothing sent twice
    assert len({(p.attributes["gpu_id"], p.time_unix_nano) for p in points}) == len(points)


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port that accepts TCP connections and never answers: every OTLP export runs to its timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["refused", "black-hole"])
def test_unreachable_endpoint_does_not_slow_the_api(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], black_hole: str, kind: str
) -> None:
    timeout_s = 1.0
    dead = f"127.0.0.1:{closed_port()}" if kind == "refused" else black_hole
    app = make_app(otlp_export_interval_ms=60_000, otlp_timeout_s=timeout_s)  # only StopSampling pushes
    client = client_factory(app.addresses.grpc)

    def timed(call: Callable[[], object]) -> float:
        started = time.monotonic()
        call()
        return time.monotonic() - started

    # first run: the endpoint is not known to be down yet, so the final flush tries it once
    assert timed(lambda: client.stub.StartSampling(start_request("dead-1", otlp_endpoint=dead), timeout=RPC_TIMEOUT_S)) < 0.3
    time.sleep(0.3)
    first_stop = timed(lambda: client.stub.StopSampling(pb.StopSamplingRequest(run_id="dead-1"), timeout=RPC_TIMEOUT_S))
    assert first_stop < timeout_s + 0.6, f"first StopSampling took {first_stop:.2f} s with a {timeout_s} s OTLP timeout"
    assert app.publisher.stats.export_failures == 1

    # second run: known down, nothing waits on it, and sampling goes on
    assert timed(lambda: client.stub.StartSampling(start_request("dead-2", otlp_endpoint=dead), timeout=RPC_TIMEOUT_S)) < 0.3
    first = client.stub.GetRun(pb.GetRunRequest(run_id="dead-2"), timeout=RPC_TIMEOUT_S).sample_count
    time.sleep(0.5)
    second = client.stub.GetRun(pb.GetRunRequest(run_id="dead-2"), timeout=RPC_TIMEOUT_S).sample_count
    assert second - first >= 3, (first, second)
    stop = timed(lambda: client.stub.StopSampling(pb.StopSamplingRequest(run_id="dead-2"), timeout=RPC_TIMEOUT_S))
    assert stop < 0.3, f"StopSampling took {stop:.2f} s although the endpoint is known to be down"


def test_first_stop_waits_at_most_one_otlp_timeout_while_a_push_is_in_flight(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], black_hole: str
) -> None:
    timeout_s = 1.0
    app = make_app(otlp_export_interval_ms=100, otlp_timeout_s=timeout_s)
    client = client_factory(app.addresses.grpc)
    client.stub.StartSampling(start_request("hole-inflight", otlp_endpoint=black_hole), timeout=RPC_TIMEOUT_S)
    time.sleep(0.3)  # the background thread's first push (~0.1 s in) hangs until its timeout
    assert app.publisher.stats.export_failures == 0
    started = time.monotonic()
    client.stub.StopSampling(pb.StopSamplingRequest(run_id="hole-inflight"), timeout=RPC_TIMEOUT_S)
    took = time.monotonic() - started
    assert took < timeout_s + 0.3, f"StopSampling took {took:.2f} s: it queued behind the failing push, then tried again"
    assert app.publisher.stats.export_failures >= 1


def test_a_dead_endpoint_does_not_delay_other_runs_flush(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], otlp_receiver: OtlpReceiver
) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    app = make_app(otlp_export_interval_ms=100, otlp_timeout_s=2.0)
    client = client_factory(app.addresses.grpc)
    client.stub.StartSampling(start_request("dead-neighbour", otlp_endpoint=dead), timeout=RPC_TIMEOUT_S)
    client.stub.StartSampling(start_request("healthy-run", otlp_endpoint=otlp_receiver.endpoint), timeout=RPC_TIMEOUT_S)
    wait_until(lambda: app.publisher.stats.export_failures >= 1, timeout=5.0, what="a failed export")
    wait_until(lambda: otlp_receiver.points("gen_ai.gpu.power"), timeout=5.0, what="a push of the healthy run")
    time.sleep(0.3)  # the background thread is retrying the dead endpoint again
    started = time.monotonic()
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="healthy-run"), timeout=RPC_TIMEOUT_S)
    took = time.monotonic() - started
    assert took < 0.5, f"the healthy run's StopSampling waited {took:.2f} s on another run's dead collector"
    assert len(otlp_receiver.points("gen_ai.gpu.power", of_run("healthy-run"))) == 2 * summary.sample_count


def test_background_pushes_to_a_dead_endpoint_do_not_block_sampling_or_rpcs(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]
) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    app = make_app(otlp_export_interval_ms=100, otlp_timeout_s=2.0)
    client = client_factory(app.addresses.grpc)
    client.stub.StartSampling(start_request("dead-bg", otlp_endpoint=dead), timeout=RPC_TIMEOUT_S)
    wait_until(lambda: app.publisher.stats.export_failures >= 1, timeout=5.0, what="a failed export")
    before = client.stub.GetRun(pb.GetRunRequest(run_id="dead-bg"), timeout=RPC_TIMEOUT_S).sample_count
    for _ in range(5):
        started = time.monotonic()
        client.stub.Heartbeat(pb.HeartbeatRequest(run_id="dead-bg"), timeout=RPC_TIMEOUT_S)
        client.stub.GetRun(pb.GetRunRequest(run_id="dead-bg"), timeout=RPC_TIMEOUT_S)
        assert time.monotonic() - started < 0.2
        time.sleep(0.1)
    after = client.stub.GetRun(pb.GetRunRequest(run_id="dead-bg"), timeout=RPC_TIMEOUT_S).sample_count
    assert after - before >= 4, "sampling stalled while OTLP exports were failing"
    started = time.monotonic()
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="dead-bg"), timeout=RPC_TIMEOUT_S)
    assert time.monotonic() - started < 0.3
    assert summary.otlp_exported_samples == 0 and summary.sample_count >= after


# -- a small queue, to see drops ---------------------------------------------------------------
class SmallQueueExporter:
    """The exporter's pieces assembled by hand, with a tiny OTLP queue per run."""

    def __init__(self, max_pending: int, publish_interval_s: float, otlp_timeout_s: float) -> None:
        self.backend = SimulatedBackend(2)
        holder: list[RunRegistry] = []
        self.sampler = Sampler(self.backend, idle_interval_s=15.0, interval_source=lambda: holder[0].min_interval_s())
        self.registry = RunRegistry(self.sampler, RunDefaults(), max_pending_samples=max_pending)
        holder.append(self.registry)
        self.publisher = OtlpPublisher(self.registry.active_runs, simulated=True, interval_s=publish_interval_s, timeout_s=otlp_timeout_s)
        self.registry.set_finalizer(self.publisher.finalize)
        self.server, port, _ = build_server(GpuExporterService(self.registry), "127.0.0.1:0")
        self.metrics = MetricsServer(
            make_registry(ExporterCollector(self.sampler, self.registry, self.publisher, RunDefaults())), "127.0.0.1", 0
        )
        self.grpc_address = f"127.0.0.1:{port}"
        self.metrics_address = f"127.0.0.1:{self.metrics.port}"

    def start(self) -> None:
        self.sampler.start()
        self.publisher.start()
        self.metrics.start()
        self.server.start()

    def stop(self) -> None:
        self.registry.stop_all()
        self.publisher.stop(deadline_s=0.5)
        self.server.stop(0).wait(1.0)
        self.metrics.stop()
        self.sampler.stop(timeout=1.0)


@pytest.fixture
def small_queue() -> Iterator[SmallQueueExporter]:
    exporter = SmallQueueExporter(max_pending=5, publish_interval_s=0.2, otlp_timeout_s=0.5)
    exporter.start()
    yield exporter
    exporter.stop()


def test_queue_overflow_is_counted_on_metrics(small_queue: SmallQueueExporter) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    client = connect(small_queue.grpc_address)
    try:
        client.stub.StartSampling(start_request("overflow", interval_ms=50, otlp_endpoint=dead), timeout=RPC_TIMEOUT_S)
        time.sleep(1.5)
        summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="overflow"), timeout=RPC_TIMEOUT_S)
    finally:
        client.close()
    assert summary.sample_count >= 20
    # at most 5 samples fit the queue; the rest were dropped, and the run says so
    assert summary.otlp_exported_samples == 0
    assert summary.otlp_dropped_samples >= summary.sample_count - 5 - 1
    run = small_queue.registry.get("overflow")

    def dropped_on_metrics() -> float:
        return value_of(scrape(small_queue.metrics_address), "smoltrace_gpu_exporter_otlp_dropped_samples_total")

    # the exporter-wide counter agrees with the run's own count once the publisher settled
    wait_until(
        lambda: dropped_on_metrics() == run.otlp_dropped,
        timeout=3.0,
        what=f"dropped samples on /metrics ({dropped_on_metrics()}) to match the run's ({run.otlp_dropped})",
    )
    assert dropped_on_metrics() >= summary.otlp_dropped_samples
