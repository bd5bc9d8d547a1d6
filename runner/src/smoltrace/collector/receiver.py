"""The OTLP/gRPC receiver: TraceService and MetricsService of `opentelemetry-proto`, on grpcio.

Requests are taken as bytes (a generic handler, no protobuf round trip in grpcio), parsed once
to find each resource's `run.id`, and stored as they came when they hold one run (the usual case:
one SDK per run); a request mixing runs is split. Everything received can be teed to another
OpenTelemetry Collector (`Forwarder`).

Trust: with a `token`, every call must carry `authorization: Bearer <token>` (else
UNAUTHENTICATED, counted); with `accept_run_ids` (the embedded collector: its own run), resources
of any other `run.id` are dropped and counted, never stored nor forwarded.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest, ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

from .documents import relabel_run, resource_run_id
from .forward import Forwarder
from .store import RunStore

log = logging.getLogger(__name__)

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_TRACE_OK = ExportTraceServiceResponse().SerializeToString()
_METRICS_OK = ExportMetricsServiceResponse().SerializeToString()


def _count_spans(resource_spans: Any) -> int:
    return sum(len(ss.spans) for ss in resource_spans.scope_spans)


def _count_points(resource_metrics: Any) -> int:
    n = 0
    for sm in resource_metrics.scope_metrics:
        for m in sm.metrics:
            data = m.WhichOneof("data")
            if data:
                n += len(getattr(m, data).data_points)
    return n


@dataclass(slots=True)
class ReceiverStats:
    bad_requests: int = 0
    unauthenticated: int = 0
    foreign_requests: int = 0  # resources of a run.id this collector does not collect
    foreign_spans: int = 0
    foreign_data_points: int = 0
    dropped_requests: int = 0  # memory and spill full


class OtlpIngest:
    """Parse, group by run.id, store, forward. Used by the gRPC receiver (and tests directly)."""

    def __init__(
        self,
        store: RunStore,
        forwarder: Forwarder | None = None,
        accept_run_ids: Collection[str] | None = None,
        forward_as: Mapping[str, str] | None = None,
    ) -> None:
        """`forward_as`: run.id -> the run.id to forward it under (a GPU sampling segment of the
        run goes on as the run itself, its own id kept as smoltrace.sampling_run_id)."""
        self.store = store
        self.forwarder = forwarder
        self.accept_run_ids = None if accept_run_ids is None else frozenset(accept_run_ids)
        self.forward_as = {k: v for k, v in (forward_as or {}).items() if k != v}
        self.stats = ReceiverStats()

    def traces(self, payload: bytes) -> bytes:
        request = ExportTraceServiceRequest.FromString(payload)
        self._store("traces", payload, request.resource_spans, ExportTraceServiceRequest, "resource_spans", _count_spans)
        return _TRACE_OK

    def metrics(self, payload: bytes) -> bytes:
        request = ExportMetricsServiceRequest.FromString(payload)
        self._store("metrics", payload, request.resource_metrics, ExportMetricsServiceRequest, "resource_metrics", _count_points)
        return _METRICS_OK

    def _store(self, kind: str, payload: bytes, resources: Any, request_type: Any, field: str, count: Callable[[Any], int]) -> None:
        """Group the request's resources by run.id; one run: keep the bytes as received, else split."""
        groups: dict[str, list[Any]] = {}
        counts: dict[str, int] = {}
        foreign = 0
        for resource in resources:
            run_id = resource_run_id(resource.resource.attributes)
            if self.accept_run_ids is not None and run_id not in self.accept_run_ids:
                foreign += count(resource)
                continue
            groups.setdefault(run_id, []).append(resource)
            counts[run_id] = counts.get(run_id, 0) + count(resource)
        if foreign or (self.accept_run_ids is not None and not groups and len(resources)):
            self.stats.foreign_requests += 1
            if kind == "traces":
                self.stats.foreign_spans += foreign
            else:
                self.stats.foreign_data_points += foreign
        unit = "spans" if kind == "traces" else "data_points"
        whole = len(groups) == 1 and not foreign
        for run_id, items in groups.items():
            part = payload if whole else request_type(**{field: items}).SerializeToString()
            if not self.store.add(kind, run_id, part, **{unit: counts[run_id]}):
                self.stats.dropped_requests += 1
        if self.forwarder is not None and groups:
            relabel = self.forward_as.keys() & groups.keys()
            if whole and not relabel:
                kept = payload
            else:
                items = [
                    r
                    for run_id, group in groups.items()
                    for r in (relabel_run(group, self.forward_as[run_id], run_id) if run_id in relabel else group)
                ]
                kept = request_type(**{field: items}).SerializeToString()
            self.forwarder.submit(kind, kept)


def _authorized(context: grpc.ServicerContext, token: str) -> bool:
    expected = f"Bearer {token}".encode()
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            given = value.encode() if isinstance(value, str) else bytes(value)
            return hmac.compare_digest(given, expected)
    return False


def _unary(handler: Callable[[bytes], bytes], stats: ReceiverStats, token: str | None = None) -> grpc.RpcMethodHandler:
    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        if token is not None and not _authorized(context, token):
            stats.unauthenticated += 1
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this collector needs its bearer token")
        try:
            return handler(request)
        except Exception as err:
            stats.bad_requests += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a valid OTLP request: {type(err).__name__}")
            raise  # unreachable: abort raises

    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=None, response_serializer=None)


class OtlpGrpcReceiver:
    def __init__(self, ingest: OtlpIngest, address: str = "127.0.0.1:0", max_workers: int = 8, token: str | None = None) -> None:
        self.ingest = ingest
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="smoltrace-collector"),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)],
        )
        handlers = {
            "opentelemetry.proto.collector.trace.v1.TraceService": {"Export": _unary(ingest.traces, ingest.stats, token)},
            "opentelemetry.proto.collector.metrics.v1.MetricsService": {"Export": _unary(ingest.metrics, ingest.stats, token)},
        }
        for service, methods in handlers.items():
            self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind the OTLP receiver to {address}")
        host = address.rsplit(":", 1)[0].strip("[]")
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else host

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait(grace + 1)
