"""The committed gRPC stubs must be what `make proto` generates from proto/ today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "gpu_exporter" / "src" / "smoltrace_gpu_exporter" / "api"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generator = _load_generator()
    written = generator.generate(tmp_path)
    assert {p.name for p in written} == set(generator.GENERATED)
    stale = [p.name for p in written if p.read_text() != (COMMITTED / p.name).read_text()]
    assert not stale, f"stubs out of date with proto/: {stale}; run `make proto` and commit the result"


def test_stubs_import_relatively_and_name_the_service() -> None:
    from smoltrace_gpu_exporter.api import pb, pb_grpc

    service = pb.DESCRIPTOR.services_by_name["GpuExporter"]
    assert service.full_name == "smoltrace.gpu.v1.GpuExporter"
    assert {m.name for m in service.methods} == {"StartSampling", "Heartbeat", "StopSampling", "GetRun", "ListRuns", "WatchRun"}
    assert hasattr(pb_grpc, "GpuExporterStub")
    text = (COMMITTED / "gpu_exporter_pb2_grpc.py").read_text()
    assert "from smoltrace.gpu" not in text
