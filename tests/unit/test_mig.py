"""MIG: instances as devices, their readings, and their memory-share of the parent's energy.

A FakeNvml GPU 0 of 80 GiB carries two MIG instances of 20 GiB and 40 GiB (fractions 1/4 and 1/2
of its energy; the remaining 1/4 is the parent's own), GPU 1 is a whole GPU. Energy numbers are
exact: the fake counter only moves when a test says so.
"""

from __future__ import annotations

import pytest

from smoltrace_gpu_exporter.nvml import Field
from smoltrace_gpu_exporter.runs import InvalidRequest, Run, RunParams, RunRegistry
from smoltrace_gpu_exporter.sampler import Sampler
from smoltrace_gpu_exporter.shares import MigTopology, Share, device_shares
from smoltrace_gpu_exporter.simulated import SimulatedBackend
from smoltrace_proto.summary import METHOD_COUNTER, METHOD_MIG_MEMORY_SHARE, SPLIT_EQUAL_SHARE, SPLIT_EXCLUSIVE, SPLIT_IN_PARENT
from tests.fakes.fake_nvml import GIB, FakeClock, FakeNvml


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def nvml(clock: FakeClock) -> FakeNvml:
    nvml = FakeNvml(2, clock=clock)
    nvml.gpu(0).with_mig(20 * GIB, 40 * GIB)
    nvml.gpu(0).mig[0].memory_used = 3 * GIB
    nvml.gpu(0).mig[1].memory_used = 5 * GIB
    return nvml


@pytest.fixture
def sampler(nvml: FakeNvml, clock: FakeClock) -> Sampler:
    return Sampler(nvml, clock=clock)


def start(registry: RunRegistry, run_id: str, uuids: list[str]) -> Run:
    run, already = registry.start(RunParams.create(run_id, gpu_uuids=uuids))
    assert already is False
    return run


# -- discovery and readings -------------------------------------------------------------------
def test_mig_instances_are_devices_listed_after_their_parent(nvml: FakeNvml, sampler: Sampler) -> None:
    g0, g1 = nvml.gpu(0), nvml.gpu(1)
    m0, m1 = g0.mig
    infos = [s.info for s in sampler.devices()]
    assert [i.uuid for i in infos] == [g0.uuid, m0.uuid, m1.uuid, g1.uuid]
    mig = infos[1]
    assert (mig.is_mig, mig.parent_uuid, mig.index, mig.mig_index, mig.memory_total_bytes) == (True, g0.uuid, 0, 0, 20 * GIB)
    assert not infos[0].is_mig and infos[0].parent_uuid == ""


def test_a_mig_reading_is_its_own_memory_and_the_parents_other_gauges(nvml: FakeNvml, sampler: Sampler) -> None:
    parent, m0, m1, whole = sampler.sweep().devices
    assert (m0.memory_used_bytes, m1.memory_used_bytes) == (3 * GIB, 5 * GIB)
    assert parent.memory_used_bytes == 10 * GIB
    for mig in (m0, m1):
        assert mig.is_mig and mig.parent_uuid == parent.uuid
        assert (mig.utilization_percent, mig.temperature_celsius, mig.power_watts) == (40.0, 50.0, 200.0)
        assert mig.energy_counter_joules == parent.energy_counter_joules  # one counter read, the parent's
    assert nvml.calls["total_energy_joules"] == 2  # parent and GPU 1, not once per instance
    assert not whole.is_mig


def test_mig_memory_not_readable_is_omitted_and_not_asked_again(nvml: FakeNvml, sampler: Sampler) -> None:
    nvml.gpu(0).mig[0].memory_used = lambda t: (_ for _ in ()).throw(__import__("pynvml").NVMLError(3))  # NOT_SUPPORTED
    first = sampler.sweep().devices[1]
    second = sampler.sweep().devices[1]
    assert first.memory_used_bytes is None and second.memory_used_bytes is None
    assert Field.MEMORY_USED in sampler.devices()[1].unsupported
    assert nvml.device_calls[("mig_memory_used_bytes", 0)] == 1 + 2  # instance 1 twice, instance 0 once


def test_a_lost_parent_fails_its_instances(nvml: FakeNvml, sampler: Sampler) -> None:
    nvml.gpu(0).lose_now()
    parent, m0, m1, whole = sampler.sweep().devices
    assert parent.failed and m0.failed and m1.failed
    assert not whole.failed


# -- shares (pure) ----------------------------------------------------------------------------
TOPOLOGY = MigTopology(parent_of={"m0": "p", "m1": "p"}, fraction={"m0": 0.25, "m1": 0.5}, children={"p": ("m0", "m1")})


def charged(holdings: list[set[str]]) -> list[float]:
    """Each run's fraction of the parent's energy."""
    return [sum(s.fraction for s in shares.values()) for shares in device_shares(holdings, TOPOLOGY)]


def test_shares_two_runs_on_two_instances_get_their_memory_fractions() -> None:
    assert device_shares([{"m0"}, {"m1"}], TOPOLOGY) == [{"m0": Share(0.25, False)}, {"m1": Share(0.5, False)}]


def test_shares_a_run_on_the_parent_and_one_on_an_instance_split_that_slice() -> None:
    (parent_run, mig_run) = device_shares([{"p"}, {"m1"}], TOPOLOGY)
    assert parent_run == {"p": Share(0.25 + 0.25 + 0.5 / 2, True)}  # remainder + idle m0 + half of m1
    assert mig_run == {"m1": Share(0.25, True)}
    assert sum(charged([{"p"}, {"m1"}])) == 1.0


def test_shares_two_runs_on_one_instance_split_it_and_a_plain_gpu_is_one_over_k() -> None:
    assert charged([{"m0"}, {"m0"}]) == [0.125, 0.125]
    assert device_shares([{"g"}, {"g"}, {"g"}], MigTopology()) == [{"g": Share(1 / 3, True)}] * 3


def test_shares_a_run_on_a_parent_and_its_instance_counts_once() -> None:
    both, other = device_shares([{"p", "m0", "m1"}, {"m0"}], TOPOLOGY)
    assert both["m0"] == Share(0.0, True, in_parent=True) and both["m1"] == Share(0.0, False, in_parent=True)
    assert both["p"].fraction == 0.25 + 0.125 + 0.5
    assert other == {"m0": Share(0.125, True)}
    assert sum(charged([{"p", "m0", "m1"}, {"m0"}])) == 1.0


@pytest.mark.parametrize(
    "holdings",
    [[{"m0"}], [{"m0"}, {"m1"}], [{"p"}, {"m0"}, {"m1"}], [{"m0", "m1"}, {"m1"}], [{"p"}, {"p", "m0"}, {"m0"}, {"m1"}, {"m1"}]],
)
def test_shares_never_add_up_to_more_than_the_parent(holdings: list[set[str]]) -> None:
    total = sum(charged(holdings))
    assert total <= 1.0 + 1e-12
    if any("p" in h for h in holdings):
        assert total == pytest.approx(1.0)


def test_topology_fractions_are_memory_fractions_scaled_to_at_most_one(sampler: Sampler, nvml: FakeNvml) -> None:
    topology = MigTopology.from_devices(s.info for s in sampler.devices())
    m0, m1 = nvml.gpu(0).mig
    assert topology.fraction == {m0.uuid: 20 / 80, m1.uuid: 40 / 80}
    assert topology.children == {nvml.gpu(0).uuid: (m0.uuid, m1.uuid)}
    nvml.gpu(0).with_mig(60 * GIB, 60 * GIB)  # impossible on a real GPU: still never more than the parent
    fresh = Sampler(nvml, clock=lambda: 0.0)
    assert sum(MigTopology.from_devices(s.info for s in fresh.devices()).fraction.values()) == 1.0


# -- runs on MIG instances ---------------------------------------------------------------------
def test_two_runs_on_two_instances_of_one_parent_are_each_charged_their_memory_share(
    nvml: FakeNvml, sampler: Sampler, clock: FakeClock
) -> None:
    registry = RunRegistry(sampler, clock=clock)
    g0 = nvml.gpu(0)
    m0, m1 = g0.mig
    a = start(registry, "run-a", [m0.uuid])
    clock.advance(1.0)
    g0.advance_energy(100.0)  # a alone: 1/4 of it
    b = start(registry, "run-b", [m1.uuid])
    clock.advance(1.0)
    g0.advance_energy(40.0)
    sampler.sweep()
    clock.advance(1.0)
    g0.advance_energy(60.0)  # both: a 1/4, b 1/2 of 40 + 60
    summary_a = registry.stop("run-a")
    clock.advance(1.0)
    g0.advance_energy(20.0)  # b alone: 1/2
    summary_b = registry.stop("run-b")
    assert a.accounts and b.accounts

    (dev_a,) = summary_a.devices
    (dev_b,) = summary_b.devices
    assert dev_a.energy_joules == pytest.approx(0.25 * 200.0)
    assert dev_b.energy_joules == pytest.approx(0.5 * 120.0)
    parent_energy = 220.0  # over the union of the two windows
    assert summary_a.energy_joules + summary_b.energy_joules <= parent_energy
    for dev, mig in ((dev_a, m0), (dev_b, m1)):
        assert (dev.uuid, dev.is_mig, dev.parent_uuid, dev.memory_total_bytes) == (mig.uuid, True, g0.uuid, mig.memory_total_bytes)
        assert dev.energy_method == METHOD_MIG_MEMORY_SHARE
        assert dev.split_method == SPLIT_EXCLUSIVE  # different slices: nobody else claimed its share
        assert dev.power_watts is not None and dev.power_watts.avg == 200.0  # the parent's, documented
    assert summary_a.energy_method == METHOD_MIG_MEMORY_SHARE
    assert dev_a.memory_used_bytes is not None and dev_a.memory_used_bytes.max == 3 * GIB


def test_a_run_on_the_parent_and_a_run_on_an_instance_add_up_to_the_parent(nvml: FakeNvml, sampler: Sampler, clock: FakeClock) -> None:
    registry = RunRegistry(sampler, clock=clock)
    g0 = nvml.gpu(0)
    m1 = g0.mig[1]
    start(registry, "whole", [g0.uuid])
    start(registry, "slice", [m1.uuid])
    clock.advance(1.0)
    g0.advance_energy(80.0)
    whole = registry.stop("whole")
    part = registry.stop("slice")
    assert part.energy_joules == pytest.approx(80.0 * 0.5 / 2)
    assert whole.energy_joules == pytest.approx(80.0 * (0.25 + 0.25 + 0.5 / 2))
    assert whole.energy_joules + part.energy_joules == pytest.approx(80.0)
    assert whole.devices[0].energy_method == METHOD_COUNTER and not whole.devices[0].is_mig
    assert (whole.devices[0].split_method, part.devices[0].split_method) == (SPLIT_EQUAL_SHARE, SPLIT_EQUAL_SHARE)


def test_a_run_on_every_device_is_charged_each_gpu_once(nvml: FakeNvml, sampler: Sampler, clock: FakeClock) -> None:
    registry = RunRegistry(sampler, clock=clock)
    run = start(registry, "all", [])  # empty = every device the exporter sees, MIG instances included
    assert len(run.accounts) == 4
    clock.advance(1.0)
    nvml.gpu(0).advance_energy(80.0)
    nvml.gpu(1).advance_energy(30.0)
    summary = registry.stop("all")
    assert summary.energy_joules == pytest.approx(110.0)
    parent, m0, m1, _whole = summary.devices
    assert parent.energy_joules == pytest.approx(80.0)
    assert (m0.energy_joules, m0.split_method, m1.split_method) == (0.0, SPLIT_IN_PARENT, SPLIT_IN_PARENT)
    assert summary.power_watts is not None and summary.power_watts.max == 200.0 + 250.0  # each GPU's power once


def test_an_unknown_mig_uuid_is_invalid(nvml: FakeNvml, sampler: Sampler, clock: FakeClock) -> None:
    registry = RunRegistry(sampler, clock=clock)
    with pytest.raises(InvalidRequest, match=r"unknown GPU UUID.*MIG-00000000-dead") as info:
        registry.start(RunParams.create("r", gpu_uuids=["MIG-00000000-dead-beef-0000-000000000000"]))
    assert nvml.gpu(0).mig[0].uuid in str(info.value)  # the visible devices, MIG instances included


# -- the simulated backend --------------------------------------------------------------------
def test_simulated_mig_topology(clock: FakeClock) -> None:
    sim = SimulatedBackend(2, clock=clock, mig={0: 3})
    sampler = Sampler(sim, clock=clock)
    infos = [s.info for s in sampler.devices()]
    assert [(i.index, i.is_mig, i.mig_index) for i in infos] == [(0, False, -1), (0, True, 0), (0, True, 1), (0, True, 2), (1, False, -1)]
    mig = infos[1]
    assert mig.uuid.startswith("MIG-") and mig.parent_uuid == infos[0].uuid
    assert mig.name.endswith("MIG 2g.20gb")
    assert mig.memory_total_bytes == infos[0].memory_total_bytes * 2 // 8
    topology = MigTopology.from_devices(infos)
    assert topology.fraction[mig.uuid] == pytest.approx(2 / 8, rel=1e-6)
    reading = sampler.sweep().devices[1]
    assert reading.memory_used_bytes is not None and 0 < reading.memory_used_bytes < mig.memory_total_bytes
    with pytest.raises(ValueError, match=r"1\.\.7"):
        SimulatedBackend(1, mig={0: 8})
    with pytest.raises(ValueError, match="does not exist"):
        SimulatedBackend(1, mig={1: 2})


def test_simulated_runs_on_two_instances_sum_to_at_most_the_parent(clock: FakeClock) -> None:
    sim = SimulatedBackend(1, clock=clock, mig={0: 2})
    sampler = Sampler(sim, clock=clock)
    registry = RunRegistry(sampler, clock=clock)
    parent, m0, m1 = (s.info for s in sampler.devices())
    counter_start = sim.total_energy_joules(0)
    start(registry, "a", [m0.uuid])
    start(registry, "b", [m1.uuid])
    for _ in range(5):
        clock.advance(0.5)
        sampler.sweep(read_energy=sampler.energy_due())
    a = registry.stop("a")
    b = registry.stop("b")
    parent_energy = sim.total_energy_joules(0) - counter_start
    fraction = m0.memory_total_bytes / parent.memory_total_bytes
    assert a.energy_joules == pytest.approx(fraction * parent_energy, rel=1e-9)
    assert b.energy_joules == pytest.approx(fraction * parent_energy, rel=1e-9)
    assert a.energy_joules + b.energy_joules <= parent_energy


def test_compute_instances_of_one_gpu_instance_split_its_fraction(clock: FakeClock) -> None:
    """NVML lists a MIG device per compute instance; each MIG handle reports its GPU instance's
    memory. Two compute instances of one 40 GiB GPU instance share its 1/2, never 1/2 each."""
    nvml = FakeNvml(1, clock=clock)
    nvml.gpu(0).with_mig(40 * GIB, 40 * GIB, 20 * GIB)
    ci_a, ci_b, other = nvml.gpu(0).mig
    ci_a.gpu_instance_id = ci_b.gpu_instance_id = 1  # one GPU instance, two compute instances
    sampler = Sampler(nvml, clock=clock)
    topology = MigTopology.from_devices(s.info for s in sampler.devices())
    assert topology.fraction == {ci_a.uuid: 0.25, ci_b.uuid: 0.25, other.uuid: 0.25}
    registry = RunRegistry(sampler, clock=clock)
    start(registry, "a", [ci_a.uuid])
    start(registry, "b", [ci_b.uuid])
    clock.advance(1.0)
    nvml.gpu(0).advance_energy(100.0)
    assert registry.stop("a").energy_joules + registry.stop("b").energy_joules == pytest.approx(50.0)


def test_sweeps_between_counter_reads_do_not_read_the_counter_for_mig_either(nvml: FakeNvml, sampler: Sampler) -> None:
    before = nvml.calls["total_energy_joules"]
    parent, m0, m1, _whole = sampler.sweep(read_energy=False).devices
    assert nvml.calls["total_energy_joules"] == before
    assert parent.energy_counter_joules is None and m0.energy_counter_joules is None and m1.energy_counter_joules is None
    assert m0.power_watts == parent.power_watts  # the gauges still come every sweep
