"""The gRPC contract of smoltrace.gpu.v1.GpuExporter, in process, against a simulated two-GPU exporter."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_gpu_exporter.service import SERVICE_NAME
from smoltrace_proto import pb
from tests.integration.conftest import RPC_TIMEOUT_S, Client, connect, sim_config, start_request

SIM_UUIDS = ["GPU-5170a7ed-0000-4000-8000-000000000000", "GPU-5170a7ed-0000-4000-8000-000000000001"]


@pytest.fixture(scope="module")
def app() -> Iterator[ExporterApp]:
    exporter = ExporterApp(sim_config())
    exporter.start()
    yield exporter
    exporter.stop(deadline_s=2.0)


@pytest.fixture(scope="module")
def client(app: ExporterApp) -> Iterator[Client]:
    assert app.addresses is not None
    c = connect(app.addresses.grpc)
    yield c
    c.close()


def new_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def assert_still_serving(client: Client) -> None:
    assert client.check() == health_pb2.HealthCheckResponse.SERVING
    client.stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S)
    run_id = new_id("alive")
    client.stub.StartSampling(start_request(run_id), timeout=RPC_TIMEOUT_S)
    assert client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S).run_id == run_id


# -- health -----------------------------------------------------------------------------------
@pytest.mark.parametrize("service", ["", SERVICE_NAME])
def test_health_check_serving(client: Client, service: str) -> None:
    assert client.check(service) == health_pb2.HealthCheckResponse.SERVING


def test_health_check_unknown_service_is_not_found(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.check("no.such.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -- the happy path ---------------------------------------------------------------------------
def test_every_rpc_over_one_run(client: Client) -> None:
    stub = client.stub
    run_id = new_id()
    started = stub.StartSampling(
        start_request(run_id, interval_ms=100, lease_seconds=30, resource_attributes={"model": "tiny", "provider": "transformers"}),
        timeout=RPC_TIMEOUT_S,
    )
    assert started.gpu_available and started.simulated and not started.already_running
    assert [(d.index, d.uuid) for d in started.devices] == list(enumerate(SIM_UUIDS))
    assert all(d.name == "Simulated GPU 80GB" and d.memory_total_bytes > 0 and not d.failed for d in started.devices)
    assert started.energy_method == "counter"
    assert started.interval_ms == 100
    assert (started.carbon_intensity_g_per_kwh, started.pue, started.power_cost_per_kwh) == (475.0, 1.0, 0.12)
    now_ms = time.time() * 1000
    assert now_ms + 25_000 < started.lease_expires_unix_ms <= now_ms + 31_000

    time.sleep(0.3)
    beat = stub.Heartbeat(pb.HeartbeatRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    assert beat.lease_expires_unix_ms >= started.lease_expires_unix_ms + 200

    state = stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    assert state.run_id == run_id and state.phase == pb.RunState.ACTIVE
    assert state.interval_ms == 100 and state.sample_count >= 2
    assert dict(state.resource_attributes) == {"model": "tiny", "provider": "transformers"}
    assert len(state.devices) == 2 and state.energy_joules > 0
    assert not state.HasField("summary")

    listed = {r.run_id: r for r in stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S).runs}
    assert listed[run_id].phase == pb.RunState.ACTIVE

    summary = stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    assert summary.run_id == run_id and summary.stop_reason == "client" and summary.gpu_available and summary.simulated
    assert summary.energy_method == "counter" and summary.energy_joules > 0
    assert summary.sample_count >= state.sample_count + 1
    assert [d.uuid for d in summary.devices] == SIM_UUIDS
    assert summary.energy_joules == pytest.approx(sum(d.energy_joules for d in summary.devices))
    assert summary.end_unix_ms - summary.start_unix_ms == pytest.approx(summary.duration_seconds * 1000, abs=50)
    for device in summary.devices:
        assert device.sample_count == summary.sample_count and device.energy_method == "counter"
        for stats in (device.utilization_percent, device.memory_used_bytes, device.temperature_celsius, device.power_watts):
            assert stats.count == summary.sample_count and stats.min <= stats.avg <= stats.max
        assert device.power_watts.min >= 100.0 and device.power_watts.max <= 600.0

    state = stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    assert state.phase == pb.RunState.STOPPED and state.summary == summary and state.lease_expires_unix_ms == 0
    listed = {r.run_id: r for r in stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S).runs}
    assert listed[run_id].phase == pb.RunState.STOPPED and listed[run_id].summary == summary

    # a second stop returns the same summary, even later
    time.sleep(0.2)
    assert stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S) == summary


def test_start_is_idempotent_for_the_same_parameters(client: Client) -> None:
    run_id = new_id()
    request = start_request(run_id, interval_ms=200, resource_attributes={"a": "b"}, carbon_intensity_g_per_kwh=300)
    first = client.stub.StartSampling(request, timeout=RPC_TIMEOUT_S)
    time.sleep(0.25)
    again = client.stub.StartSampling(request, timeout=RPC_TIMEOUT_S)
    assert not first.already_running and again.already_running
    assert list(again.devices) == list(first.devices) and again.energy_method == first.energy_method
    assert again.lease_expires_unix_ms > first.lease_expires_unix_ms  # the repeat renews the lease
    # still one run, and its start did not move
    runs = [r for r in client.stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S).runs if r.run_id == run_id]
    assert len(runs) == 1
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    assert summary.duration_seconds >= 0.25
    assert summary.carbon_intensity_g_per_kwh == 300.0


def test_gpu_subset_by_uuid(client: Client) -> None:
    run_id = new_id()
    started = client.stub.StartSampling(start_request(run_id, gpu_uuids=[SIM_UUIDS[1]]), timeout=RPC_TIMEOUT_S)
    assert [d.uuid for d in started.devices] == [SIM_UUIDS[1]]
    time.sleep(0.2)
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    assert [d.index for d in summary.devices] == [1] and summary.energy_joules == summary.devices[0].energy_joules


def test_watch_run_streams_until_stop(client: Client) -> None:
    run_id = new_id("watch")
    client.stub.StartSampling(start_request(run_id, interval_ms=100), timeout=RPC_TIMEOUT_S)
    samples: list[pb.Sample] = []
    errors: list[BaseException] = []
    subscribed = threading.Event()

    def watch() -> None:
        try:
            for sample in client.stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=15):
                samples.append(sample)
                subscribed.set()
        except grpc.RpcError as err:  # pragma: no cover - reported below
            errors.append(err)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert subscribed.wait(5), "no sample streamed within 5 s"
    time.sleep(0.6)
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    watcher.join(timeout=5)
    assert not watcher.is_alive(), "WatchRun did not end when the run stopped"
    assert not errors, errors
    assert len(samples) >= 5
    assert len(samples) <= summary.sample_count - 1  # the start boundary sweep precedes the subscription
    stamps = [s.timestamp_unix_nano for s in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for sample in samples:
        assert sample.run_id == run_id
        assert [d.uuid for d in sample.devices] == SIM_UUIDS
        for reading in sample.devices:
            assert reading.HasField("utilization_percent") and reading.HasField("power_watts")
            assert reading.HasField("memory_used_bytes") and reading.HasField("temperature_celsius")
    for index in (0, 1):
        energies = [s.devices[index].energy_joules for s in samples]
        assert energies == sorted(energies)
        # the last streamed sample is the stop boundary read: its energy is the summary's
        assert energies[-1] == pytest.approx(summary.devices[index].energy_joules, rel=1e-12)
    assert samples[-1].timestamp_unix_nano // 1_000_000 == summary.end_unix_ms


def test_watch_of_a_stopped_run_ends_at_once(client: Client) -> None:
    run_id = new_id()
    client.stub.StartSampling(start_request(run_id), timeout=RPC_TIMEOUT_S)
    client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    started = time.monotonic()
    assert list(client.stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=5)) == []
    assert time.monotonic() - started < 2.0


# -- errors -----------------------------------------------------------------------------------
BAD_STARTS = [
    pytest.param({"interval_ms": 10}, "interval_ms", id="interval-too-small"),
    pytest.param({"interval_ms": 60_001}, "interval_ms", id="interval-too-large"),
    pytest.param({"run_id": ""}, "run_id is required", id="empty-run-id"),
    pytest.param({"run_id": "x" * 10_240}, "at most 128", id="10kB-run-id"),
    pytest.param({"run_id": "-leading-dash"}, "run_id must start", id="bad-run-id-chars"),
    pytest.param({"run_id": "a b"}, "run_id must start", id="space-in-run-id"),
    pytest.param({"gpu_uuids": ["GPU-00000000-dead-beef-0000-000000000000"]}, "unknown GPU UUID", id="unknown-uuid"),
    pytest.param({"carbon_intensity_g_per_kwh": -1.0}, "carbon_intensity_g_per_kwh must not be negative", id="negative-carbon"),
    pytest.param({"carbon_intensity_g_per_kwh": float("nan")}, "finite", id="nan-carbon"),
    pytest.param({"pue": 0.5}, "pue must be >= 1.0", id="pue-below-1"),
    pytest.param({"lease_seconds": 86_401}, "lease_seconds", id="lease-too-long"),
    pytest.param({"power_cost_per_kwh": -0.1}, "power_cost_per_kwh", id="negative-price"),
    pytest.param({"otlp_endpoint": "host name:4317"}, "otlp_endpoint", id="endpoint-with-space"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_STARTS)
def test_bad_start_is_invalid_argument(client: Client, fields: dict, message: str) -> None:
    fields = dict(fields)
    run_id = fields.pop("run_id", new_id("bad"))
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(start_request(run_id, **fields), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert message in err.value.details()
    assert len(err.value.details()) < 300  # a clear message, not a dump of the request
    if run_id:  # nothing was registered under that id
        with pytest.raises(grpc.RpcError) as missing:
            client.stub.GetRun(pb.GetRunRequest(run_id=run_id[:128]), timeout=RPC_TIMEOUT_S)
        assert missing.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    assert_still_serving(client)


@pytest.mark.parametrize("rpc", ["Heartbeat", "StopSampling", "GetRun", "WatchRun"])
def test_unknown_run_is_not_found(client: Client, rpc: str) -> None:
    run_id = new_id("ghost")
    request = {
        "Heartbeat": pb.HeartbeatRequest,
        "StopSampling": pb.StopSamplingRequest,
        "GetRun": pb.GetRunRequest,
        "WatchRun": pb.WatchRunRequest,
    }[rpc](run_id=run_id)
    with pytest.raises(grpc.RpcError) as err:
        result = getattr(client.stub, rpc)(request, timeout=RPC_TIMEOUT_S)
        if rpc == "WatchRun":
            list(result)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value
    assert run_id in err.value.details()
    assert_still_serving(client)


@pytest.mark.parametrize("rpc", ["Heartbeat", "StopSampling", "GetRun", "WatchRun"])
def test_bad_run_id_elsewhere_is_invalid_argument(client: Client, rpc: str) -> None:
    request = {
        "Heartbeat": pb.HeartbeatRequest,
        "StopSampling": pb.StopSamplingRequest,
        "GetRun": pb.GetRunRequest,
        "WatchRun": pb.WatchRunRequest,
    }[rpc](run_id="")
    with pytest.raises(grpc.RpcError) as err:
        result = getattr(client.stub, rpc)(request, timeout=RPC_TIMEOUT_S)
        if rpc == "WatchRun":
            list(result)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert "run_id" in err.value.details()


def test_conflicting_start_is_already_exists(client: Client) -> None:
    run_id = new_id()
    client.stub.StartSampling(start_request(run_id, interval_ms=100), timeout=RPC_TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(start_request(run_id, interval_ms=250), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "other parameters" in err.value.details()
    # the live run is untouched
    assert client.stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=RPC_TIMEOUT_S).interval_ms == 100
    client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    # a stopped run id cannot be started again
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(start_request(run_id, interval_ms=100), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already stopped" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Heartbeat(pb.HeartbeatRequest(run_id=run_id), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "stopped" in err.value.details()
    assert_still_serving(client)


def test_oversized_request_is_rejected_and_service_survives(client: Client) -> None:
    attributes = {f"k{i}": "v" * 1000 for i in range(300)}  # ~300 kB, over the 256 kB limit
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(start_request(new_id(), resource_attributes=attributes), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(client)


def test_garbage_bytes_on_the_grpc_port_do_not_take_it_down(app: ExporterApp, client: Client) -> None:
    assert app.addresses is not None
    host, port = app.addresses.grpc.rsplit(":", 1)
    payloads = [
        os.urandom(4096),
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(2048),  # a valid preface, then junk frames
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(512),  # a TLS ClientHello-ish start
    ]
    for payload in payloads:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(3)
                while sock.recv(4096):  # the server answers or hangs up; it must not hang us
                    pass
            except (ConnectionResetError, BrokenPipeError, TimeoutError):
                pass
    # many half-open connections that just go away
    sockets = [socket.create_connection((host, int(port)), timeout=5) for _ in range(20)]
    for sock in sockets:
        sock.close()
    assert_still_serving(client)
    fresh = connect(app.addresses.grpc)
    try:
        assert_still_serving(fresh)
    finally:
        fresh.close()
