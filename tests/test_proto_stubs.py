"""The contract's distribution: committed stubs match proto/, both packages pin it, converters are exact."""

from __future__ import annotations

import importlib.util
import re
from importlib.metadata import requires
from pathlib import Path

import pytest

from smoltrace_proto import pb
from smoltrace_proto.summary import (
    DeviceSummary,
    RunSummary,
    StatsSummary,
    run_summary_from_dict,
    run_summary_from_proto,
    run_summary_to_proto,
)

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "proto" / "src" / "smoltrace_proto"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generator = _load_generator()
    assert generator.DEFAULT_OUT == COMMITTED
    written = generator.generate(tmp_path)
    assert {p.name for p in written} == set(generator.GENERATED)
    stale = [p.name for p in written if p.read_text() != (COMMITTED / p.name).read_text()]
    assert not stale, f"stubs out of date with proto/: {stale}; run `make proto` and commit the result"


def test_stubs_import_relatively_and_name_the_service() -> None:
    from smoltrace_proto import pb_grpc

    service = pb.DESCRIPTOR.services_by_name["GpuExporter"]
    assert service.full_name == "smoltrace.gpu.v1.GpuExporter"
    assert {m.name for m in service.methods} == {"StartSampling", "Heartbeat", "StopSampling", "GetRun", "ListRuns", "WatchRun"}
    assert hasattr(pb_grpc, "GpuExporterStub")
    text = (COMMITTED / "gpu_exporter_pb2_grpc.py").read_text()
    assert "from smoltrace.gpu" not in text
    assert not (ROOT / "gpu_exporter" / "src" / "smoltrace_gpu_exporter" / "api").exists(), "one copy of the stubs only"


def _deps(dist: str) -> dict[str, str]:
    out = {}
    for req in requires(dist) or []:
        if ";" in req:
            continue
        name = re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()
        out[name] = req[len(name) :].strip()
    return out


def test_the_contract_is_its_own_small_distribution_pinned_by_both_sides() -> None:
    assert set(_deps("smoltrace-proto")) == {"grpcio", "protobuf"}
    from smoltrace_proto import __version__

    for dist in ("smoltrace-gpu-exporter", "smoltrace"):
        assert _deps(dist).get("smoltrace-proto") == f"=={__version__}", dist


def test_the_contract_carries_the_run_secret_headers_and_sharing_fields() -> None:
    def names(message: type) -> set[str]:
        return set(message.DESCRIPTOR.fields_by_name)

    assert "run_secret" in names(pb.StartSamplingResponse)
    for request in (pb.HeartbeatRequest, pb.StopSamplingRequest, pb.GetRunRequest, pb.WatchRunRequest):
        assert "run_secret" in names(request), request
    assert {"otlp_headers", "run_secret"} <= names(pb.StartSamplingRequest)
    assert "otlp_headers" not in names(pb.RunState)
    assert {"exclusive_seconds", "shared_seconds", "split_method", "is_mig", "parent_uuid"} <= names(pb.DeviceSummary)
    assert {"is_mig", "parent_uuid"} <= names(pb.Device)


def _summary() -> RunSummary:
    stats = StatsSummary(avg=41.5, min=3.0, max=99.0, count=2**40)
    device = DeviceSummary(
        index=1,
        uuid="MIG-1234",
        name="H200 MIG 1g.18gb",
        memory_total_bytes=18 * 2**30,
        energy_joules=12.5,
        co2_grams=0.001,
        power_cost_usd=0.0002,
        duration_seconds=3.0,
        sample_count=7,
        utilization_percent=stats,
        memory_used_bytes=None,
        temperature_celsius=stats,
        power_watts=None,
        energy_method="mig_memory_share",
        counter_reset=False,
        failed=False,
        error="",
        exclusive_seconds=1.0,
        shared_seconds=2.0,
        split_method="equal_share",
        is_mig=True,
        parent_uuid="GPU-abc",
    )
    return RunSummary(
        run_id="r1",
        gpu_available=True,
        start_unix_ms=1_700_000_000_000,
        end_unix_ms=1_700_000_003_000,
        duration_seconds=3.0,
        sample_count=7,
        energy_joules=12.5,
        co2_grams=0.001,
        power_cost_usd=0.0002,
        utilization_percent=stats,
        memory_used_bytes=None,
        temperature_celsius=None,
        power_watts=stats,
        energy_method="mig_memory_share",
        carbon_intensity_g_per_kwh=475.0,
        pue=1.2,
        power_cost_per_kwh=0.12,
        devices=(device,),
        stop_reason="client",
        simulated=True,
        message="",
        otlp_dropped_samples=0,
        otlp_exported_samples=5,
    )


def test_run_summary_round_trips_through_protobuf_and_dicts_with_integers_as_integers() -> None:
    summary = _summary()
    wire = pb.RunSummary.FromString(run_summary_to_proto(summary).SerializeToString())
    back = run_summary_from_proto(wire)
    assert back == summary
    as_dict = back.as_dict()
    assert as_dict["start_unix_ms"] == 1_700_000_000_000 and isinstance(as_dict["start_unix_ms"], int)
    assert as_dict["utilization_percent"]["count"] == 2**40
    assert "memory_used_bytes" not in as_dict  # absent statistics are left out, never zeros
    assert as_dict["devices"][0]["split_method"] == "equal_share"
    assert run_summary_from_dict(as_dict) == summary


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("energy_joules",), "12", "summary.energy_joules: expected float"),
        (("sample_count",), 1.5, "summary.sample_count: expected int"),
        (("devices",), {}, "summary.devices: expected a list"),
        (("devices", 0, "is_mig"), "yes", "summary.devices[0].is_mig: expected bool"),
        (("utilization_percent", "avg"), float("nan"), "summary.utilization_percent.avg: expected float"),
    ],
)
def test_a_summary_read_back_from_a_file_is_type_checked(path: tuple, value: object, message: str) -> None:
    data = _summary().as_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        run_summary_from_dict(data)
