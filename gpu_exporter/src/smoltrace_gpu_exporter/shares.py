"""How a device's energy is split among the runs that sample it (pure; no I/O).

Whole GPU without MIG: while k runs sample it, each is charged 1/k of every interval's energy
(`equal_share`), so the runs' energies add up to the device's over the union of their windows.

MIG: NVML has no per-instance power, so a MIG-enabled GPU's energy is divided into slices: each
MIG instance's slice is its memory fraction of the parent (instance memory / parent memory,
energy_method `mig_memory_share`; compute instances of one GPU instance split its fraction
equally), and the rest (memory in no instance) is the parent's remainder.
A slice's users are the runs sampling that instance plus the runs sampling the parent itself (a
run on the whole GPU uses every slice); each user is charged an equal part of the slice, counted
once per run. So:
- two runs on two instances of one parent are charged their own fractions, never the whole parent;
- a run on the parent and a run on an instance split that instance's slice, and the run on the
  parent alone carries the remainder and the idle instances;
- the charges of every run on a GPU and its instances add up to at most the GPU's energy (exactly
  when a run samples the parent), never more;
- a run that samples a parent and one of its instances is charged the slices through the parent's
  account; the instance's account of that run is charged nothing (`split_method` `in_parent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .nvml import DeviceInfo


@dataclass(frozen=True, slots=True)
class Share:
    fraction: float  # of the device's (for a MIG instance: its parent's) energy over the interval
    shared: bool  # another run had a claim on this energy over the interval
    in_parent: bool = False  # a MIG instance whose energy this run is charged through the parent


EXCLUSIVE = Share(1.0, False)


@dataclass(frozen=True, slots=True)
class MigTopology:
    """MIG instances by parent, with their memory fractions of the parent."""

    parent_of: Mapping[str, str] = field(default_factory=dict)  # MIG uuid -> parent uuid
    fraction: Mapping[str, float] = field(default_factory=dict)  # MIG uuid -> share of the parent's energy
    children: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # parent uuid -> MIG uuids

    @classmethod
    def from_devices(cls, devices: Iterable[DeviceInfo]) -> MigTopology:
        """Fractions from memory: a GPU instance's memory / the parent's. NVML lists one MIG device
        per compute instance, and the compute instances of one GPU instance share its memory (each
        MIG handle reports the whole GPU instance's), so a GPU instance's fraction is split equally
        among its compute instances; fractions are scaled down if they ever add up to more than 1."""
        infos = list(devices)
        memory = {d.uuid: d.memory_total_bytes for d in infos if not d.is_mig}
        children: dict[str, list[str]] = {}
        groups: dict[tuple[str, str], list[DeviceInfo]] = {}  # (parent, GPU instance) -> its MIG devices
        for d in infos:
            if not d.is_mig or not d.parent_uuid:
                continue
            children.setdefault(d.parent_uuid, []).append(d.uuid)
            key = str(d.gpu_instance_id) if d.gpu_instance_id >= 0 else d.uuid
            groups.setdefault((d.parent_uuid, key), []).append(d)
        raw: dict[str, float] = {}
        for (parent, _gi), members in groups.items():
            total = memory.get(parent, 0)
            share = max(m.memory_total_bytes for m in members) / total if total > 0 else 0.0
            for m in members:
                raw[m.uuid] = share / len(members)
        fraction: dict[str, float] = {}
        for kids in children.values():
            scale = max(1.0, sum(raw[k] for k in kids))  # fractions never add up to more than the parent
            for k in kids:
                fraction[k] = raw[k] / scale
        return cls(
            parent_of={k: p for p, kids in children.items() for k in kids},
            fraction=fraction,
            children={p: tuple(kids) for p, kids in children.items()},
        )


def device_shares(holdings: Sequence[Iterable[str]], topology: MigTopology) -> list[dict[str, Share]]:
    """For each run (the device uuids it samples), each device's `Share` of the interval's energy."""
    held = [frozenset(h) for h in holdings]
    users: dict[str, int] = {}
    for devices in held:
        for uuid in devices:
            users[uuid] = users.get(uuid, 0) + 1
    # runs that use each slice of a MIG-enabled parent: a run counts once per slice
    slice_users: dict[str, int] = {}
    for parent, kids in topology.children.items():
        for kid in kids:
            slice_users[kid] = sum(1 for devices in held if kid in devices or parent in devices)
    out: list[dict[str, Share]] = []
    for devices in held:
        shares: dict[str, Share] = {}
        for uuid in devices:
            parent = topology.parent_of.get(uuid)
            kids = topology.children.get(uuid)
            if parent is not None:  # a MIG instance
                if parent in devices:
                    shares[uuid] = Share(0.0, slice_users[uuid] > 1, in_parent=True)
                else:
                    shares[uuid] = Share(topology.fraction[uuid] / slice_users[uuid], slice_users[uuid] > 1)
            elif kids:  # a MIG-enabled parent: the remainder among the parent's runs, each slice among its users
                k = users[uuid]
                remainder = max(0.0, 1.0 - sum(topology.fraction[c] for c in kids))
                fraction = remainder / k + sum(topology.fraction[c] / slice_users[c] for c in kids)
                shares[uuid] = Share(fraction, k > 1 or any(slice_users[c] > k for c in kids))
            else:
                k = users[uuid]
                shares[uuid] = Share(1.0 / k, k > 1)
        out.append(shares)
    return out
