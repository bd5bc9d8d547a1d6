"""`python -m smoltrace_gpu_exporter.healthcheck [HOST:PORT]`: exit 0 when the exporter's gRPC
health service answers SERVING (container HEALTHCHECK, Kubernetes exec probe), 1 otherwise.

The address defaults to SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS with 0.0.0.0 read as 127.0.0.1.
TLS and auth are not needed: the health service is open and a plaintext probe of a TLS port
fails, so with TLS on use Kubernetes' native gRPC probe or the metrics port's /healthz instead.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    address = args[0] if args else os.environ.get("SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS", "127.0.0.1:50051")
    address = address.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]")
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
    except grpc.RpcError as err:
        print(f"unhealthy: {err.code().name}", file=sys.stderr)
        return 1
    ok = reply.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if ok else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
