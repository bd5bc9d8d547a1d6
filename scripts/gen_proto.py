"""Generate the gRPC stubs of proto/ into the `smoltrace-proto` distribution (`make proto`).

The stubs live in `smoltrace_proto` (proto/src/smoltrace_proto/), a small distribution of their
own that both the exporter and the runner pin with `==`. protoc writes absolute imports
(`from smoltrace.gpu.v1 import ...`); they are rewritten to relative ones so the generated
package does not claim the `smoltrace` namespace that the runner owns.

Usage: python scripts/gen_proto.py [--out DIR]   (default: proto/src/smoltrace_proto/)
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILE = "smoltrace/gpu/v1/gpu_exporter.proto"
DEFAULT_OUT = ROOT / "proto" / "src" / "smoltrace_proto"
GENERATED = ("gpu_exporter_pb2.py", "gpu_exporter_pb2.pyi", "gpu_exporter_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(PROTO_ROOT / PROTO_FILE),
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        written = []
        for name in GENERATED:
            text = (Path(tmp) / "smoltrace/gpu/v1" / name).read_text()
            text = re.sub(r"^from smoltrace\.gpu\.v1 import ", "from . import ", text, flags=re.M)
            target = out / name
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
