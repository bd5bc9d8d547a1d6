"""Which GPUs a run owns: the devices its GPU energy, CO2 and utilisation are measured on.

First match wins (docs/DESIGN.md, "Which GPUs a run owns"):
1. `--gpus LIST` / $SMOLTRACE_GPUS: UUIDs, MIG UUIDs, unique UUID prefixes, NVML indices or MIG
   indices `GPU:MIG`; `all`; `none`.
2. $NVIDIA_VISIBLE_DEVICES (what the NVIDIA container toolkit and the Kubernetes device plugin
   set): UUIDs, MIG UUIDs, indices, `GPU:MIG` indices (`0:1`: MIG device 1 of GPU 0, as the
   container toolkit reads it); `none`/`void`/empty = no GPU. `all` narrows nothing (the CUDA
   base images set it by default), so the rules below still apply.
3. $CUDA_VISIBLE_DEVICES, within what rule 2 left: UUIDs (unique `GPU-` prefixes as CUDA accepts
   them) or indices. Indices follow NVML (PCI bus) order only under CUDA_DEVICE_ORDER=PCI_BUS_ID;
   otherwise torch resolves them when the runner has CUDA, else NVML order is assumed, with a
   warning. Empty or `-1` = no GPU.
4. The devices the model was placed on (transformers: `hf_device_map`, torch device UUIDs).
5. Every GPU the exporter sees (`source: all_visible`), with a warning on a multi-GPU host.

An Ollama server on another host is not measured by a local exporter: unless --gpu-exporter names
one (beside that server), the run measures nothing and says why.

Names that match no device (or more than one) are an error before any task runs (exit 2), listing
the devices the exporter sees. Pure functions over the exporter's device list: no NVML here.

MIG: the exporter lists a MIG-enabled GPU and each of its MIG instances (`is_mig`, `parent_uuid`,
`mig_index`; an instance carries its parent's NVML index). A plain index names the whole GPU;
`all` and "every GPU the exporter sees" mean the whole GPUs (an instance is inside its parent),
unless the list was already narrowed to MIG instances, which then stay what the run owns.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ENV_GPUS = "SMOLTRACE_GPUS"
NO_GPU_WORDS = ("none", "void", "")

# gpu_scope.source values
SOURCE_FLAG = "gpus_flag"
SOURCE_NVIDIA = "nvidia_visible_devices"
SOURCE_CUDA = "cuda_visible_devices"
SOURCE_MODEL = "model_placement"
SOURCE_ALL = "all_visible"
SOURCE_REMOTE = "remote_model_server"


class GpuScopeError(ValueError):
    """The run names GPUs the exporter does not see: one line, exit 2 before any task runs."""


@dataclass(frozen=True, slots=True)
class ExporterDevice:
    index: int
    uuid: str
    name: str = ""
    memory_total_bytes: int = 0
    is_mig: bool = False
    parent_uuid: str = ""
    mig_index: int = -1  # a MIG instance's slot under its parent (the `GPU:MIG` form)

    @property
    def position(self) -> str:
        """How an index names it: `3`, or `0:1` for MIG device 1 of GPU 0."""
        return f"{self.index}:{self.mig_index}" if self.is_mig else str(self.index)

    def label(self) -> str:
        return f"{self.position} {self.uuid}" + (f" ({self.name})" if self.name else "")


def whole_units(devices: Sequence[ExporterDevice]) -> list[ExporterDevice]:
    """The devices a run may own as a whole: every device except MIG instances whose parent is in
    the list too (the parent holds them)."""
    present = {d.uuid for d in devices}
    return [d for d in devices if not (d.is_mig and d.parent_uuid in present)]


def _is_index(token: str) -> bool:
    """`3` (an NVML index) or `0:1` (MIG device 1 of GPU 0)."""
    head, sep, tail = token.partition(":")
    return head.isdigit() and (not sep or tail.isdigit())


@dataclass(frozen=True, slots=True)
class GpuScope:
    """The answer, recorded in metadata as `gpu_scope`."""

    source: str
    uuids: tuple[str, ...]  # empty with measure=False: nothing is measured
    note: str = ""
    measure: bool = True
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "uuids": list(self.uuids), "note": self.note, "measured": self.measure}


@dataclass(frozen=True, slots=True)
class ScopeInputs:
    """What this process was told, read once from flags and the environment."""

    gpus: str | None = None  # --gpus / $SMOLTRACE_GPUS
    gpus_from_env: bool = False
    nvidia_visible_devices: str | None = None
    cuda_visible_devices: str | None = None
    cuda_device_order: str | None = None

    @classmethod
    def read(cls, gpus_flag: str | None, environ: Mapping[str, str]) -> ScopeInputs:
        from_env = gpus_flag is None and ENV_GPUS in environ
        return cls(
            gpus=gpus_flag if gpus_flag is not None else environ.get(ENV_GPUS),
            gpus_from_env=from_env,
            nvidia_visible_devices=_device_list(environ.get("NVIDIA_VISIBLE_DEVICES")),
            cuda_visible_devices=environ.get("CUDA_VISIBLE_DEVICES"),
            cuda_device_order=environ.get("CUDA_DEVICE_ORDER"),
        )

    def says_no_gpu(self) -> GpuScope | None:
        """The answer when the environment alone says 'no GPU' (no exporter needed)."""
        if self.gpus is not None and self.gpus.strip().lower() == "none":
            return GpuScope(SOURCE_FLAG, (), f"{self._gpus_name()}=none", measure=False)
        if self.gpus is None and self.nvidia_visible_devices is not None:
            value = self.nvidia_visible_devices.strip().lower()
            if value in NO_GPU_WORDS:
                return GpuScope(SOURCE_NVIDIA, (), f"NVIDIA_VISIBLE_DEVICES={value or '(empty)'}: no GPU given to this run", measure=False)
        return None

    def _gpus_name(self) -> str:
        return ENV_GPUS if self.gpus_from_env else "--gpus"


def _device_list(value: str | None) -> str | None:
    """NVIDIA_VISIBLE_DEVICES as a list. The device plugin's volume-mounts strategy sets it to a
    folder (/var/run/nvidia-container-devices) whose entries are the devices; unreadable or empty,
    it says nothing (None)."""
    if value is None or not value.strip().startswith("/"):
        return value
    try:
        names = sorted(entry.name for entry in os.scandir(value.strip()))
    except OSError:
        return None
    return ",".join(names) or None


def split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def validate_gpus_flag(text: str) -> str:
    """Syntax only (the devices are checked against the exporter later); raises ValueError."""
    value = text.strip()
    if value.lower() in ("all", "none"):
        return value.lower()
    tokens = split_list(value)
    if not tokens:
        raise ValueError(f"--gpus needs UUIDs, indices, 'all' or 'none', got {text!r}")
    for token in tokens:
        if not (_is_index(token) or token.upper().startswith(("GPU-", "MIG-"))) or len(token) > 128 or any(c.isspace() for c in token):
            raise ValueError(f"--gpus: {token!r} is not a GPU UUID (GPU-..., MIG-...), an NVML index or a MIG index GPU:MIG")
    return ",".join(tokens)


def _describe(devices: Sequence[ExporterDevice]) -> str:
    return "; ".join(d.label() for d in devices) or "none"


def match_tokens(
    tokens: Sequence[str], devices: Sequence[ExporterDevice], what: str, index_map: Callable[[int], ExporterDevice | None] | None = None
) -> tuple[ExporterDevice, ...]:
    """Each token -> one device: exact UUID, unique UUID prefix, index (via index_map, else NVML
    index: the whole GPU) or MIG index `GPU:MIG`."""
    by_index = {d.index: d for d in devices if not d.is_mig}
    by_mig_index = {d.position: d for d in devices if d.is_mig}
    chosen: list[ExporterDevice] = []
    unknown: list[str] = []
    for token in tokens:
        device: ExporterDevice | None = None
        if token.isdigit():
            device = index_map(int(token)) if index_map is not None else by_index.get(int(token))
        elif _is_index(token):
            gpu, _, mig = token.partition(":")
            device = by_mig_index.get(f"{int(gpu)}:{int(mig)}")
        else:
            exact = [d for d in devices if d.uuid.lower() == token.lower()]
            prefixed = exact or [d for d in devices if d.uuid.lower().startswith(token.lower())]
            if len(prefixed) > 1:
                raise GpuScopeError(
                    f"{what}: {token!r} matches {len(prefixed)} GPUs; give a longer UUID. The exporter sees: {_describe(devices)}"
                )
            device = prefixed[0] if prefixed else None
        if device is None:
            unknown.append(token)
        elif device not in chosen:
            chosen.append(device)
    if unknown:
        raise GpuScopeError(f"{what} names GPU(s) the exporter does not see: {', '.join(unknown)}. The exporter sees: {_describe(devices)}")
    return tuple(chosen)


def resolve_scope(
    inputs: ScopeInputs,
    devices: Sequence[ExporterDevice],
    *,
    embedded: bool,
    torch_uuids: Callable[[], list[str] | None] | None = None,
    model_uuids: Sequence[str] = (),
) -> GpuScope:
    """The run's devices among those the exporter sees (`devices`, in NVML order)."""
    devices = sorted(devices, key=lambda d: d.index)
    no_gpu = inputs.says_no_gpu()
    if no_gpu is not None:
        return no_gpu
    # 1. --gpus
    if inputs.gpus is not None:
        name = inputs._gpus_name()
        value = inputs.gpus.strip()
        if value.lower() == "all":
            return GpuScope(SOURCE_FLAG, tuple(d.uuid for d in whole_units(devices)), f"{name}=all")
        chosen = match_tokens(split_list(value), devices, name)
        return GpuScope(SOURCE_FLAG, tuple(d.uuid for d in chosen), f"{name}={value}")
    base: Sequence[ExporterDevice] = devices
    notes: list[str] = []
    warnings: list[str] = []
    # 2. NVIDIA_VISIBLE_DEVICES
    nvidia = (inputs.nvidia_visible_devices or "").strip()
    if inputs.nvidia_visible_devices is not None and nvidia.lower() != "all":
        tokens = split_list(nvidia)
        if embedded and all(t.isdigit() for t in tokens) and len(whole_units(devices)) == len(tokens):
            # the container runtime already narrowed what this container (and its exporter) sees;
            # host indices need not be the container's
            base = whole_units(devices)
            notes.append(f"NVIDIA_VISIBLE_DEVICES={nvidia}: the {len(tokens)} GPU(s) this container sees")
        else:
            base = match_tokens(tokens, devices, "NVIDIA_VISIBLE_DEVICES")
            notes.append(f"NVIDIA_VISIBLE_DEVICES={nvidia}")
        source = SOURCE_NVIDIA
    else:
        source = ""
        if nvidia.lower() == "all":
            notes.append("NVIDIA_VISIBLE_DEVICES=all")
    # 3. CUDA_VISIBLE_DEVICES, within base
    cuda = inputs.cuda_visible_devices
    if cuda is not None:
        value = cuda.strip()
        if value in ("", "-1"):
            return GpuScope(SOURCE_CUDA, (), f"CUDA_VISIBLE_DEVICES={value or '(empty)'}: no GPU given to this run", measure=False)
        tokens = split_list(value)
        index_map, how = _cuda_index_map(tokens, base, inputs.cuda_device_order, torch_uuids)
        if how == "assumed":
            warnings.append(
                f"CUDA_VISIBLE_DEVICES={value}: indices are taken in NVML (PCI bus) order, which CUDA follows only under "
                "CUDA_DEVICE_ORDER=PCI_BUS_ID (torch with CUDA is not available to check); use GPU UUIDs to be sure"
            )
        chosen = match_tokens(tokens, base, "CUDA_VISIBLE_DEVICES", index_map)
        notes.append(f"CUDA_VISIBLE_DEVICES={value}" + (f" (indices {how})" if any(t.isdigit() for t in tokens) else ""))
        return GpuScope(SOURCE_CUDA, tuple(d.uuid for d in chosen), "; ".join(notes), warnings=tuple(warnings))
    if source:
        return GpuScope(source, tuple(d.uuid for d in whole_units(base)), "; ".join(notes))
    # 4. where the model was placed
    placed = [d for d in base if d.uuid.lower() in {u.lower() for u in model_uuids}]
    if placed:
        notes.append("the devices the model was placed on")
        return GpuScope(SOURCE_MODEL, tuple(d.uuid for d in placed), "; ".join(notes))
    # 5. everything the exporter sees
    base = whole_units(base)
    if len(base) > 1:
        warnings.append(
            f"the run is measured on all {len(base)} GPUs the exporter sees (nothing narrowed it): another job's load counts "
            "as this run's; pass --gpus or set NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES"
        )
    notes.append("every GPU the exporter sees")
    return GpuScope(SOURCE_ALL, tuple(d.uuid for d in base), "; ".join(notes), warnings=tuple(warnings))


def _cuda_index_map(
    tokens: Sequence[str],
    base: Sequence[ExporterDevice],
    order: str | None,
    torch_uuids: Callable[[], list[str] | None] | None,
) -> tuple[Callable[[int], ExporterDevice | None] | None, str]:
    """How CUDA_VISIBLE_DEVICES indices map to devices: positions in `base` (PCI bus order), or torch."""
    if not any(t.isdigit() for t in tokens):
        return None, "unused"
    ordered = whole_units(base)  # CUDA's devices: whole GPUs, or the MIG instances the list was narrowed to

    def by_position(i: int) -> ExporterDevice | None:
        return ordered[i] if 0 <= i < len(ordered) else None

    if (order or "").strip().upper() == "PCI_BUS_ID":
        return by_position, "in PCI bus order (CUDA_DEVICE_ORDER=PCI_BUS_ID)"
    visible = torch_uuids() if torch_uuids is not None else None
    if visible:
        # torch device p is the p-th entry of CUDA_VISIBLE_DEVICES
        positions = {tok: visible[p] for p, tok in enumerate(tokens) if p < len(visible)}
        by_uuid = {d.uuid.lower(): d for d in base}

        def by_torch(i: int) -> ExporterDevice | None:
            uuid = positions.get(str(i))
            return by_uuid.get(uuid.lower()) if uuid else None

        return by_torch, "resolved through torch"
    return by_position, "assumed"


# -- what the process itself can tell ---------------------------------------------------------
def torch_visible_uuids() -> list[str] | None:
    """UUIDs of the CUDA devices torch sees, in torch order; None without torch+CUDA (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return [_torch_uuid(torch, i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a driver problem only costs the better answer
        return None


def _torch_uuid(torch: Any, index: int) -> str:
    text = str(torch.cuda.get_device_properties(index).uuid)
    return text if text.upper().startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def model_device_uuids(model: Any) -> tuple[str, ...]:
    """The CUDA devices a transformers model was placed on (hf_device_map, else its device)."""
    inner = getattr(model, "model", None)
    if inner is None:
        return ()
    indices: set[int] = set()
    device_map = getattr(inner, "hf_device_map", None)
    places: list[Any] = list(device_map.values()) if isinstance(device_map, dict) else [getattr(inner, "device", None)]
    for place in places:
        index = _cuda_index(place)
        if index is not None:
            indices.add(index)
    if not indices:
        return ()
    torch = sys.modules.get("torch")
    if torch is None:
        return ()
    try:
        return tuple(_torch_uuid(torch, i) for i in sorted(indices))
    except Exception:  # noqa: BLE001
        return ()


def _cuda_index(place: Any) -> int | None:
    if isinstance(place, int) and not isinstance(place, bool):
        return place
    text = str(place) if place is not None else ""
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    return None


def remote_host(api_base: str | None) -> str | None:
    """The host of a model server URL when it is not this machine (loopback, this host name)."""
    if not api_base:
        return None
    host = urlsplit(api_base if "://" in api_base else f"http://{api_base}").hostname or ""
    if not host or host in ("localhost", "host.docker.internal") or host == socket.gethostname():
        return None
    try:
        if ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_unspecified:
            return None
    except ValueError:
        if host.endswith(".localhost"):
            return None
    return host
