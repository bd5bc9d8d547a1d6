"""Generated gRPC stubs of `proto/smoltrace/gpu/v1/gpu_exporter.proto` (`make proto`; do not edit)."""

from . import gpu_exporter_pb2 as pb
from . import gpu_exporter_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
