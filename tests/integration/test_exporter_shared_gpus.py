"""Runs sharing a GPU (issue 10): while k runs sample one device each is charged 1/k of its
energy, so the runs' energies add up to the device's own energy over the union of their windows.
Real gRPC against a simulated exporter whose per-GPU power follows the runs that use it."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_proto import pb
from tests.integration.conftest import RPC_TIMEOUT_S, Client, sim_config, start_request

SIM_UUID = "GPU-5170a7ed-0000-4000-8000-{:012d}"


def _device_energy_over_union(app: ExporterApp, first: str, last: str, uuid: str) -> float:
    """The device's counter at the first run's start read and at the last run's stop read."""
    start = app.registry.get(first).accounts[uuid].energy.counter_first
    end = app.registry.get(last).accounts[uuid].energy.counter_last
    assert start is not None and end is not None
    return end - start


@pytest.mark.parametrize("runs", [2, 3])
def test_overlapping_runs_on_one_gpu_add_up_to_the_gpus_energy(
    runs: int, make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], record_property: Callable[[str, object], None]
) -> None:
    app = make_app()  # simulated:2
    client = client_factory(app.addresses.grpc)
    gpu0 = SIM_UUID.format(0)
    ids = [f"shared-{runs}-{i}" for i in range(runs)]
    for run_id in ids:  # staggered starts: each run overlaps the next
        client.stub.StartSampling(start_request(run_id, interval_ms=50, gpu_uuids=[gpu0]), timeout=RPC_TIMEOUT_S)
        time.sleep(0.3)
    summaries = []
    for run_id in ids:  # staggered stops, in start order
        time.sleep(0.3)
        summaries.append(client.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S))
    device = _device_energy_over_union(app, ids[0], ids[-1], gpu0)
    total = sum(s.energy_joules for s in summaries)
    ratio = total / device
    record_property(f"ratio_{runs}_runs", ratio)
    print(f"{runs} overlapping runs: sum of run energies {total:.3f} J / device energy {device:.3f} J = {ratio:.9f}")
    assert ratio == pytest.approx(1.0, abs=1e-9)
    for s in summaries:
        (d,) = s.devices
        assert d.uuid == gpu0 and d.split_method == "equal_share"
        assert d.shared_seconds > 0 and d.exclusive_seconds + d.shared_seconds == pytest.approx(d.duration_seconds, abs=1e-6)
    # every run was charged less than the whole device over its own window would be
    whole = [s.devices[0].power_watts.avg * s.duration_seconds for s in summaries]
    assert all(s.energy_joules < w for s, w in zip(summaries, whole, strict=True))


def test_runs_on_different_gpus_are_not_split_and_their_power_follows_them(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]
) -> None:
    app = make_app()  # simulated:2
    client = client_factory(app.addresses.grpc)
    for i in range(2):
        client.stub.StartSampling(start_request(f"own-{i}", interval_ms=50, gpu_uuids=[SIM_UUID.format(i)]), timeout=RPC_TIMEOUT_S)
    time.sleep(0.5)
    for i in range(2):
        summary = client.stub.StopSampling(pb.StopSamplingRequest(run_id=f"own-{i}"), timeout=RPC_TIMEOUT_S)
        (d,) = summary.devices
        assert d.uuid == SIM_UUID.format(i) and d.split_method == "exclusive" and d.shared_seconds == 0.0
        assert d.energy_joules == pytest.approx(d.power_watts.avg * d.duration_seconds, rel=0.05)
    # the simulated GPU draws 50 W more while a run uses it
    backend = app.backend
    before = backend.power_watts(0)
    backend.set_device_users({SIM_UUID.format(0): 1})
    assert backend.power_watts(0) == pytest.approx(before + 50.0, abs=1.0)


def test_unknown_gpu_uuids_are_invalid(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app()  # simulated:2
    client = client_factory(app.addresses.grpc)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(start_request("unknown", gpu_uuids=["GPU-00000000-dead"]), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "GPU-00000000-dead" in err.value.details() and SIM_UUID.format(1) in err.value.details()


# -- MIG ------------------------------------------------------------------------------------------
MIG_BACKEND = "simulated:2,mig=0:2"  # GPU 0 split into two MIG instances, GPU 1 whole


def test_two_runs_on_two_mig_instances_are_each_charged_their_memory_share(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], record_property: Callable[[str, object], None]
) -> None:
    app = make_app(sim_config(backend=MIG_BACKEND))
    client = client_factory(app.addresses.grpc)
    parent = SIM_UUID.format(0)
    probe = client.stub.StartSampling(start_request("probe"), timeout=RPC_TIMEOUT_S)
    migs = [d for d in probe.devices if d.is_mig]
    assert [(d.index, d.parent_uuid, d.mig_index) for d in migs] == [(0, parent, 0), (0, parent, 1)]
    assert all(d.uuid.startswith("MIG-") for d in migs)
    parent_memory = next(d.memory_total_bytes for d in probe.devices if d.uuid == parent)
    client.stub.StopSampling(pb.StopSamplingRequest(run_id="probe"), timeout=RPC_TIMEOUT_S)
    summaries = []
    for i, mig in enumerate(migs):
        reply = client.stub.StartSampling(start_request(f"mig-{i}", interval_ms=50, gpu_uuids=[mig.uuid]), timeout=RPC_TIMEOUT_S)
        (device,) = reply.devices
        assert (device.uuid, device.is_mig, device.parent_uuid) == (mig.uuid, True, parent)
        time.sleep(0.3)
    for i in range(2):
        time.sleep(0.3)
        summaries.append(client.stub.StopSampling(pb.StopSamplingRequest(run_id=f"mig-{i}"), timeout=RPC_TIMEOUT_S))
    start = app.registry.get("mig-0").accounts[migs[0].uuid].energy.counter_first  # the parent's counter
    end = app.registry.get("mig-1").accounts[migs[1].uuid].energy.counter_last
    assert start is not None and end is not None
    parent_energy = end - start
    total = sum(s.energy_joules for s in summaries)
    print(f"2 runs on 2 MIG instances: {total:.3f} J of the parent's {parent_energy:.3f} J ({total / parent_energy:.6f})")
    record_property("mig_ratio", total / parent_energy)
    assert total < parent_energy
    for s, mig in zip(summaries, migs, strict=True):
        (d,) = s.devices
        assert (d.uuid, d.is_mig, d.parent_uuid, d.energy_method, d.split_method) == (
            mig.uuid,
            True,
            parent,
            "mig_memory_share",
            "exclusive",
        )
        own = app.registry.get(s.run_id).accounts[mig.uuid]
        window = (own.energy.counter_last or 0.0) - (own.energy.counter_first or 0.0)
        assert d.energy_joules == pytest.approx(window * mig.memory_total_bytes / parent_memory, rel=1e-9)


def test_an_unknown_mig_uuid_is_invalid(make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client]) -> None:
    app = make_app(sim_config(backend=MIG_BACKEND))
    client = client_factory(app.addresses.grpc)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.StartSampling(
            start_request("unknown-mig", gpu_uuids=["MIG-00000000-0000-0000-0000-00000000dead"]), timeout=RPC_TIMEOUT_S
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MIG-00000000-0000-0000-0000-00000000dead" in err.value.details() and "MIG-5170a7ed-0000" in err.value.details()
