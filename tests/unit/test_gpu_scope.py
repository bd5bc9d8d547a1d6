"""smoltrace.gpu_scope: which GPUs a run owns, for every variable form, on a 4-GPU host (the
exporter's device list as the simulated backend reports it), plus the embedded child's environment."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from smoltrace.config import ConfigError, build_parser, config_from_args
from smoltrace.gpu import child_environment
from smoltrace.gpu_scope import (
    SOURCE_ALL,
    SOURCE_CUDA,
    SOURCE_FLAG,
    SOURCE_MODEL,
    SOURCE_NVIDIA,
    ExporterDevice,
    GpuScopeError,
    ScopeInputs,
    model_device_uuids,
    remote_host,
    resolve_scope,
)

UUIDS = [f"GPU-5170a7ed-0000-4000-8000-{i:012d}" for i in range(4)]
DEVICES = [ExporterDevice(i, u, "Simulated GPU 80GB") for i, u in enumerate(UUIDS)]


def scope(env: dict[str, str], gpus: str | None = None, **kwargs):
    return resolve_scope(ScopeInputs.read(gpus, env), DEVICES, embedded=kwargs.pop("embedded", False), **kwargs)


def test_nothing_set_is_every_gpu_with_a_warning() -> None:
    got = scope({})
    assert (got.source, got.uuids) == (SOURCE_ALL, tuple(UUIDS))
    assert got.warnings and "all 4 GPUs" in got.warnings[0]
    single = resolve_scope(ScopeInputs.read(None, {}), DEVICES[:1], embedded=True)
    assert single.source == SOURCE_ALL and single.warnings == ()


def test_nvidia_visible_devices_one_uuid_is_that_gpu_only() -> None:
    got = scope({"NVIDIA_VISIBLE_DEVICES": UUIDS[2]})
    assert (got.source, got.uuids) == (SOURCE_NVIDIA, (UUIDS[2],))
    assert got.as_dict() == {"source": SOURCE_NVIDIA, "uuids": [UUIDS[2]], "note": f"NVIDIA_VISIBLE_DEVICES={UUIDS[2]}", "measured": True}


def test_nvidia_visible_devices_indices_and_all() -> None:
    assert scope({"NVIDIA_VISIBLE_DEVICES": "1,3"}).uuids == (UUIDS[1], UUIDS[3])
    everything = scope({"NVIDIA_VISIBLE_DEVICES": "all"})
    assert everything.source == SOURCE_ALL and everything.uuids == tuple(UUIDS)
    assert "NVIDIA_VISIBLE_DEVICES=all" in everything.note


@pytest.mark.parametrize("value", ["none", "void", "", "NONE"])
def test_nvidia_visible_devices_none_means_no_gpu(value: str) -> None:
    got = scope({"NVIDIA_VISIBLE_DEVICES": value})
    assert got.source == SOURCE_NVIDIA and got.uuids == () and not got.measure
    assert ScopeInputs.read(None, {"NVIDIA_VISIBLE_DEVICES": value}).says_no_gpu() is not None


def test_the_container_runtime_already_narrowed_the_embedded_exporter() -> None:
    """Host index 3 in a container that sees one GPU (renumbered 0): that one GPU."""
    got = resolve_scope(ScopeInputs.read(None, {"NVIDIA_VISIBLE_DEVICES": "3"}), DEVICES[:1], embedded=True)
    assert got.uuids == (UUIDS[0],)
    with pytest.raises(GpuScopeError):  # a sidecar that sees one GPU has no index 3
        resolve_scope(ScopeInputs.read(None, {"NVIDIA_VISIBLE_DEVICES": "3"}), DEVICES[:1], embedded=False)


def test_cuda_visible_devices_uuids_and_unique_prefixes() -> None:
    assert scope({"CUDA_VISIBLE_DEVICES": f"{UUIDS[3]},{UUIDS[1]}"}).uuids == (UUIDS[3], UUIDS[1])
    devices = [ExporterDevice(0, "GPU-aaaa1111-x"), ExporterDevice(1, "GPU-bbbb2222-y")]
    got = resolve_scope(ScopeInputs.read(None, {"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}), devices, embedded=True)
    assert (got.source, got.uuids) == (SOURCE_CUDA, ("GPU-bbbb2222-y",))
    with pytest.raises(GpuScopeError, match="matches 4 GPUs"):
        scope({"CUDA_VISIBLE_DEVICES": "GPU-5170a7ed"})


def test_cuda_indices_in_pci_bus_order() -> None:
    got = scope({"CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert got.uuids == (UUIDS[2],) and got.warnings == ()
    assert "PCI" in got.note


def test_cuda_indices_through_torch_when_the_order_is_not_pci() -> None:
    # CUDA's default order put physical GPU 3 first: torch device 0 (CUDA_VISIBLE_DEVICES entry "1") is UUIDS[3]
    got = scope({"CUDA_VISIBLE_DEVICES": "1"}, torch_uuids=lambda: [UUIDS[3]])
    assert got.uuids == (UUIDS[3],) and got.warnings == ()
    assert "torch" in got.note


def test_cuda_indices_without_torch_fall_back_with_a_warning() -> None:
    got = scope({"CUDA_VISIBLE_DEVICES": "1"}, torch_uuids=lambda: None)
    assert got.uuids == (UUIDS[1],)
    assert got.warnings and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in got.warnings[0]


def test_cuda_within_nvidia_visible_devices() -> None:
    """In a container given GPUs 1 and 3, CUDA index 1 is the second of them."""
    got = scope({"NVIDIA_VISIBLE_DEVICES": f"{UUIDS[1]},{UUIDS[3]}", "CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert (got.source, got.uuids) == (SOURCE_CUDA, (UUIDS[3],))


@pytest.mark.parametrize("value", ["", "-1"])
def test_cuda_visible_devices_empty_is_no_gpu(value: str) -> None:
    got = scope({"CUDA_VISIBLE_DEVICES": value})
    assert got.source == SOURCE_CUDA and not got.measure


def test_gpus_flag_wins_over_everything() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": UUIDS[0], "CUDA_VISIBLE_DEVICES": "1"}
    got = scope(env, gpus="2,3")
    assert (got.source, got.uuids, got.note) == (SOURCE_FLAG, (UUIDS[2], UUIDS[3]), "--gpus=2,3")
    from_env = scope({**env, "SMOLTRACE_GPUS": UUIDS[1]})
    assert (from_env.source, from_env.uuids, from_env.note) == (SOURCE_FLAG, (UUIDS[1],), f"SMOLTRACE_GPUS={UUIDS[1]}")
    assert scope({}, gpus="all").uuids == tuple(UUIDS)
    assert not scope({}, gpus="none").measure


def test_mig_uuids_are_devices_like_any_other() -> None:
    mig = "MIG-11111111-2222-3333-4444-555555555555"
    devices = [*DEVICES, ExporterDevice(4, mig, "MIG 1g.18gb")]
    got = resolve_scope(ScopeInputs.read(None, {"NVIDIA_VISIBLE_DEVICES": mig}), devices, embedded=False)
    assert got.uuids == (mig,)


def test_unknown_devices_are_an_error_listing_what_the_exporter_sees() -> None:
    with pytest.raises(GpuScopeError) as info:
        scope({"NVIDIA_VISIBLE_DEVICES": "GPU-deadbeef-0000"})
    message = str(info.value)
    assert "GPU-deadbeef-0000" in message and all(u in message for u in UUIDS) and "\n" not in message
    with pytest.raises(GpuScopeError, match="--gpus names GPU"):
        scope({}, gpus="7")


def test_model_placement_when_nothing_else_says() -> None:
    got = scope({}, model_uuids=[UUIDS[1].upper()])
    assert (got.source, got.uuids) == (SOURCE_MODEL, (UUIDS[1],))
    assert scope({"NVIDIA_VISIBLE_DEVICES": UUIDS[0]}, model_uuids=[UUIDS[1]]).uuids == (UUIDS[0],)


def test_model_device_uuids_reads_hf_device_map(monkeypatch: pytest.MonkeyPatch) -> None:
    class Props:
        def __init__(self, index: int) -> None:
            self.uuid = f"5170a7ed-0000-4000-8000-{index:012d}"

    fake_torch = SimpleNamespace(cuda=SimpleNamespace(get_device_properties=Props))
    monkeypatch.setitem(__import__("sys").modules, "torch", fake_torch)
    model = SimpleNamespace(model=SimpleNamespace(hf_device_map={"embed": 0, "layers.0": "cuda:2", "lm_head": "cpu"}))
    assert model_device_uuids(model) == (UUIDS[0], UUIDS[2])
    assert model_device_uuids(SimpleNamespace(model=SimpleNamespace(device="cpu"))) == ()
    assert model_device_uuids(SimpleNamespace()) == ()


@pytest.mark.parametrize(
    ("api_base", "remote"),
    [
        (None, None),
        ("http://localhost:11434", None),
        ("http://127.0.0.1:11434", None),
        ("http://[::1]:11434", None),
        ("127.0.0.1:11434", None),
        ("http://gpu-box.internal:11434", "gpu-box.internal"),
        ("http://10.1.2.3:11434", "10.1.2.3"),
    ],
)
def test_remote_model_server(api_base: str | None, remote: str | None) -> None:
    assert remote_host(api_base) == remote


def test_gpus_flag_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*flags: str):
        return config_from_args(build_parser().parse_args(["--model", "m", *flags]))

    assert parse("--gpus", " 0, GPU-abc ").gpus == "0,GPU-abc"
    assert parse("--gpus", "ALL").gpus == "all"
    for bad in ("cuda:0", "", "GPU-a b"):
        with pytest.raises(ConfigError, match="--gpus"):
            parse("--gpus", bad)
    monkeypatch.setenv("SMOLTRACE_GPUS", "first")
    with pytest.raises(ConfigError, match="SMOLTRACE_GPUS"):
        parse()
    with pytest.raises(ConfigError, match="--gpu-exporter-token-file"):
        parse("--gpus", "0", "--gpu-exporter-token-file", "/nonexistent/token")
    monkeypatch.delenv("SMOLTRACE_GPUS")
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_TLS_CA", "/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="SMOLTRACE_GPU_EXPORTER_TLS_CA"):
        parse()


def test_the_embedded_child_gets_only_what_it_uses() -> None:
    env = {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "OPENAI_API_KEY": "sk-secret",
        "HF_TOKEN": "hf_secret",
        "AWS_SECRET_ACCESS_KEY": "x",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer y",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=p",
        "SMOLTRACE_GPU_EXPORTER_BACKEND": "simulated:2",
        "SMOLTRACE_GPU_EXPORTER_CARBON_INTENSITY": "100",
        "SMOLTRACE_GPU_EXPORTER_PUE": "1.2",
        "SMOLTRACE_GPU_EXPORTER_AUTH_TOKEN_FILE": "/run/secrets/sidecar-token",
        "SMOLTRACE_GPU_EXPORTER_TLS_CERT": "/c.pem",
        "SMOLTRACE_GPU_EXPORTER_TLS_KEY": "/k.pem",
        "SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS": "0.0.0.0:50051",
        "SMOLTRACE_GPU_EXPORTER": "sidecar:50051",
        "SMOLTRACE_GPU_EXPORTER_TOKEN_FILE": "/t",
    }
    assert child_environment(env) == {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=p",
        "SMOLTRACE_GPU_EXPORTER_BACKEND": "simulated:2",
        "SMOLTRACE_GPU_EXPORTER_CARBON_INTENSITY": "100",
        "SMOLTRACE_GPU_EXPORTER_PUE": "1.2",
    }


def test_the_device_plugins_volume_mounts_strategy(tmp_path) -> None:
    """NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices: the folder's entries are the devices."""
    folder = tmp_path / "nvidia-container-devices"
    folder.mkdir()
    (folder / UUIDS[3]).touch()
    got = scope({"NVIDIA_VISIBLE_DEVICES": str(folder)})
    assert (got.source, got.uuids) == (SOURCE_NVIDIA, (UUIDS[3],))
    assert scope({"NVIDIA_VISIBLE_DEVICES": str(tmp_path / "missing")}).source == SOURCE_ALL


# -- MIG: a 2-GPU host whose GPU 0 is split into two MIG instances (as the exporter lists it) -------
MIG_UUIDS = [f"MIG-5170a7ed-0000-4000-8000-{slot:012d}" for slot in range(2)]
MIG_HOST = [
    DEVICES[0],
    *(
        ExporterDevice(0, u, "Simulated GPU 80GB MIG 3g.40gb", is_mig=True, parent_uuid=UUIDS[0], mig_index=s)
        for s, u in enumerate(MIG_UUIDS)
    ),
    DEVICES[1],
]


def mig_scope(env: dict[str, str], gpus: str | None = None, embedded: bool = False):
    return resolve_scope(ScopeInputs.read(gpus, env), MIG_HOST, embedded=embedded)


def test_mig_index_form_names_one_instance() -> None:
    got = mig_scope({"NVIDIA_VISIBLE_DEVICES": "0:1"})
    assert (got.source, got.uuids) == (SOURCE_NVIDIA, (MIG_UUIDS[1],))
    assert mig_scope({}, gpus="0:0,1").uuids == (MIG_UUIDS[0], UUIDS[1])
    assert mig_scope({"NVIDIA_VISIBLE_DEVICES": MIG_UUIDS[0]}).uuids == (MIG_UUIDS[0],)


def test_a_plain_index_all_and_all_visible_are_whole_gpus_on_a_mig_host() -> None:
    assert mig_scope({"NVIDIA_VISIBLE_DEVICES": "0"}).uuids == (UUIDS[0],)  # not the last MIG instance of GPU 0
    assert mig_scope({}, gpus="all").uuids == (UUIDS[0], UUIDS[1])
    everything = mig_scope({})
    assert (everything.source, everything.uuids) == (SOURCE_ALL, (UUIDS[0], UUIDS[1]))
    assert "all 2 GPUs" in everything.warnings[0]
    # a list naming a GPU and one of its instances owns the GPU (the instance is inside it)
    assert mig_scope({"NVIDIA_VISIBLE_DEVICES": f"{UUIDS[0]},{MIG_UUIDS[1]}"}).uuids == (UUIDS[0],)
    # CUDA indices within a list narrowed to MIG instances are those instances
    narrowed = mig_scope({"NVIDIA_VISIBLE_DEVICES": "0:0,0:1", "CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert narrowed.uuids == (MIG_UUIDS[1],)


def test_unknown_mig_devices_are_an_error_listing_the_instances() -> None:
    for env, gpus in (({"NVIDIA_VISIBLE_DEVICES": "0:2"}, None), ({}, "MIG-deadbeef-0000"), ({}, "1:0")):
        with pytest.raises(GpuScopeError) as info:
            mig_scope(env, gpus)
        message = str(info.value)
        assert "does not see" in message and "0:1 " + MIG_UUIDS[1] in message and "\n" not in message


def test_gpus_flag_accepts_the_mig_index_form(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["--model", "m", "--gpus", "0:1, MIG-abc"])
    assert config_from_args(args).gpus == "0:1,MIG-abc"
    for bad in ("0:", ":1", "0:1:2", "a:1"):
        with pytest.raises(ConfigError, match="--gpus"):
            config_from_args(build_parser().parse_args(["--model", "m", "--gpus", bad]))
