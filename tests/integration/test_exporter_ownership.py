"""Per-run ownership of the exporter's control API (issue 13): a second gRPC client cannot list,
stop, heartbeat, read or watch another client's run; limits answer RESOURCE_EXHAUSTED; the
per-run OTLP headers reach the collector and nothing else."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_proto import pb
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.integration.conftest import RPC_TIMEOUT_S, Client, start_request, wait_until

TOKEN = "admin-token-for-ownership-tests"


def _foreign_calls(stub: object, run_id: str) -> dict[str, Callable[[], object]]:
    """Every per-run RPC a second client (knowing only the run id) might try."""
    return {
        "Heartbeat": lambda: stub.Heartbeat(pb.HeartbeatRequest(run_id=run_id), timeout=RPC_TIMEOUT_S),
        "GetRun": lambda: stub.GetRun(pb.GetRunRequest(run_id=run_id, run_secret="guess"), timeout=RPC_TIMEOUT_S),
        "WatchRun": lambda: next(iter(stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=RPC_TIMEOUT_S))),
        "StopSampling": lambda: stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S),
        "StartSampling (repeat)": lambda: stub.StartSampling(start_request(run_id), timeout=RPC_TIMEOUT_S),
    }


def test_a_second_client_cannot_touch_another_clients_run(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]
) -> None:
    app = make_app()
    owner, intruder = client_factory(app.addresses.grpc), client_factory(app.addresses.grpc)
    started = owner.stub.StartSampling(start_request("victim"), timeout=RPC_TIMEOUT_S)
    assert len(started.run_secret) >= 32
    for name, call in _foreign_calls(intruder.stub, "victim").items():
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert started.run_secret not in err.value.details(), name
    # ListRuns shows the intruder nothing of the victim's run (ids, endpoints, attributes)
    assert list(intruder.stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S).runs) == []
    # the run is untouched: still live, and its owner stops it with its secret
    state = owner.stub.GetRun(pb.GetRunRequest(run_id="victim"), timeout=RPC_TIMEOUT_S)
    assert state.phase == pb.RunState.ACTIVE
    assert [r.run_id for r in owner.stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S).runs] == ["victim"]
    summary = owner.stub.StopSampling(pb.StopSamplingRequest(run_id="victim"), timeout=RPC_TIMEOUT_S)
    assert summary.stop_reason == "client"
    # even after the stop, its summary is the owner's only
    with pytest.raises(grpc.RpcError) as err:
        intruder.stub.StopSampling(pb.StopSamplingRequest(run_id="victim"), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_bearer_token_holder_may_act_on_any_run(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    app = make_app(auth_token_file=str(token_file))
    admin = [("authorization", f"Bearer {TOKEN}")]
    owner, operator = client_factory(app.addresses.grpc), client_factory(app.addresses.grpc)
    owner.stub.StartSampling(start_request("run-x"), metadata=admin, timeout=RPC_TIMEOUT_S)
    listed = operator.stub.bare.ListRuns(pb.ListRunsRequest(), metadata=admin, timeout=RPC_TIMEOUT_S)
    assert [r.run_id for r in listed.runs] == ["run-x"]
    operator.stub.bare.Heartbeat(pb.HeartbeatRequest(run_id="run-x"), metadata=admin, timeout=RPC_TIMEOUT_S)
    summary = operator.stub.bare.StopSampling(pb.StopSamplingRequest(run_id="run-x"), metadata=admin, timeout=RPC_TIMEOUT_S)
    assert summary.run_id == "run-x"


def test_live_runs_are_capped(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app()
    app.registry.max_live_runs = 3
    client = client_factory(app.addresses.grpc)
    for i in range(3):
        client.stub.StartSampling(start_request(f"cap-{i}", interval_ms=1000), timeout=RPC_TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(start_request("cap-3", interval_ms=1000), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 3" in err.value.details()
    client.stub.StopSampling(pb.StopSamplingRequest(run_id="cap-0"), timeout=RPC_TIMEOUT_S)
    client.stub.StartSampling(start_request("cap-3", interval_ms=1000), timeout=RPC_TIMEOUT_S)  # room again


def test_the_default_live_run_limit_and_lease_bound(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app()
    assert app.registry.max_live_runs == 256
    client = client_factory(app.addresses.grpc)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(start_request("long-lease", lease_seconds=3601), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "1..3600" in err.value.details()


def test_otlp_headers_reach_the_collector_and_nothing_else(
    make_app: Callable[..., ExporterApp],
    client_factory: Callable[..., Client],
    otlp_receiver: OtlpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = "Bearer per-run-collector-token-CANARY-7f3a"
    caplog.set_level(logging.DEBUG)
    app = make_app(log_level="DEBUG")
    client = client_factory(app.addresses.grpc)
    request = start_request("headers", otlp_endpoint=otlp_receiver.endpoint, otlp_headers={"authorization": canary})
    client.stub.StartSampling(request, timeout=RPC_TIMEOUT_S)
    state = client.stub.GetRun(pb.GetRunRequest(run_id="headers"), timeout=RPC_TIMEOUT_S)
    listed = client.stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S)
    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="headers"), timeout=RPC_TIMEOUT_S)
    wait_until(lambda: otlp_receiver.request_headers, 5, what="an OTLP export")
    assert all(h.get("authorization") == canary for h in otlp_receiver.request_headers)
    for text in (str(state), str(listed), str(summary), caplog.text, repr(app.registry.get("headers").params)):
        assert "CANARY" not in text


def test_bad_otlp_headers_are_invalid_without_echoing_them(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]
) -> None:
    app = make_app()
    client = client_factory(app.addresses.grpc)
    for headers in ({"Bad Name": "x"}, {"authorization": "line\nbreak-SECRET"}):
        with pytest.raises(grpc.RpcError) as err:
            client.stub.StartSampling(start_request("bad-headers", otlp_headers=headers), timeout=RPC_TIMEOUT_S)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "SECRET" not in err.value.details()


@pytest.mark.parametrize("endpoint", ["10.0.0.1:4317", "http://169.254.169.254:80", "metadata.internal:4317"])
def test_an_otlp_endpoint_outside_the_allow_list_is_invalid_and_never_dialled(
    endpoint: str, make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]
) -> None:
    app = make_app()
    client = client_factory(app.addresses.grpc)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(start_request("ssrf", otlp_endpoint=endpoint), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not allowed" in err.value.details()
    assert app.registry.runs_started == 0 and app.publisher.client_count == 0  # no run, no OTLP client


def test_a_host_on_the_allow_list_is_accepted(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app(otlp_allow="collector.test")
    client = client_factory(app.addresses.grpc)
    client.stub.StartSampling(start_request("allowed", otlp_endpoint="collector.test:4317"), timeout=RPC_TIMEOUT_S)
    assert app.registry.get("allowed").params.otlp_endpoint == "collector.test:4317"
