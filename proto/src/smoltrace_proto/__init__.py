"""The smoltrace GPU-exporter contract (`proto/smoltrace/gpu/v1/gpu_exporter.proto`).

`pb` and `pb_grpc` are the generated stubs (`make proto`; do not edit them). `summary` holds the
typed summaries both sides use (frozen dataclasses) and their protobuf and JSON converters.
"""

from . import gpu_exporter_pb2 as pb
from . import gpu_exporter_pb2_grpc as pb_grpc

__version__ = "0.1.0"
__all__ = ["__version__", "pb", "pb_grpc"]
