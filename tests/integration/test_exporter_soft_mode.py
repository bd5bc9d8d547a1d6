"""The real nvidia-ml-py backend on a machine without an NVIDIA driver: the exporter runs in soft
mode (no GPU), answers every RPC and reports NVML down, instead of failing."""

from __future__ import annotations

import time
from collections.abc import Callable

import pynvml
import pytest

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_proto import pb
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.integration.conftest import RPC_TIMEOUT_S, Client, scrape, series, sim_config, start_request, value_of


def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


pytestmark = pytest.mark.skipif(_nvml_works(), reason="NVML answers on this machine (a GPU driver is present); soft mode needs none")


def test_soft_mode_without_a_driver(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], otlp_receiver: OtlpReceiver
) -> None:
    app = make_app(sim_config(backend="nvml"))
    assert app.backend.name == "nvml" and not app.backend.simulated
    client = client_factory(app.addresses.grpc)
    assert client.check() == 1  # SERVING

    started = client.stub.StartSampling(start_request("soft-run", otlp_endpoint=otlp_receiver.endpoint), timeout=RPC_TIMEOUT_S)
    assert not started.gpu_available and not started.simulated
    assert list(started.devices) == [] and started.energy_method == ""
    assert started.message.startswith("NVML unavailable") and len(started.message) > len("NVML unavailable: ")
    # asking for a GPU by UUID is not an error while NVML is down: there is just no GPU
    other = client.stub.StartSampling(
        start_request("soft-uuid", gpu_uuids=["GPU-00000000-0000-0000-0000-000000000000"]), timeout=RPC_TIMEOUT_S
    )
    assert not other.gpu_available

    client.stub.Heartbeat(pb.HeartbeatRequest(run_id="soft-run"), timeout=RPC_TIMEOUT_S)
    time.sleep(0.3)
    state = client.stub.GetRun(pb.GetRunRequest(run_id="soft-run"), timeout=RPC_TIMEOUT_S)
    assert state.phase == pb.RunState.ACTIVE and list(state.devices) == [] and state.energy_joules == 0

    summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id="soft-run"), timeout=RPC_TIMEOUT_S)
    assert not summary.gpu_available and not summary.simulated
    assert list(summary.devices) == [] and summary.energy_joules == 0 and summary.co2_grams == 0
    assert summary.message == started.message and summary.stop_reason == "client"
    assert summary.energy_method == "none"
    assert not summary.HasField("power_watts") and not summary.HasField("utilization_percent")
    assert client.stub.StopSampling(pb.StopSamplingRequest(run_id="soft-run"), timeout=RPC_TIMEOUT_S) == summary
    client.stub.StopSampling(pb.StopSamplingRequest(run_id="soft-uuid"), timeout=RPC_TIMEOUT_S)

    # no GPU, no GPU metrics: nothing is pushed over OTLP ("resourceMetrics": [])
    assert otlp_receiver.metrics_requests() == []

    metrics = scrape(app.addresses.metrics)
    assert value_of(metrics, "smoltrace_gpu_exporter_up") == 1
    assert value_of(metrics, "smoltrace_gpu_exporter_nvml_up") == 0
    assert value_of(metrics, "smoltrace_gpu_exporter_gpus") == 0
    assert value_of(metrics, "smoltrace_gpu_exporter_collection_errors_total", reason="init_failed") >= 1
    assert value_of(metrics, "smoltrace_gpu_exporter_last_collect_success_timestamp_seconds") == 0
    assert value_of(metrics, "smoltrace_gpu_exporter_build_info", backend="nvml", simulated="false") == 1
    assert series(metrics, "smoltrace_gpu_utilization_ratio") == [] and series(metrics, "smoltrace_gpu_info") == []
