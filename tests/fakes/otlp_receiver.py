"""A real OTLP/gRPC receiver for tests: metrics and traces services on 127.0.0.1, port 0.

It implements the official `opentelemetry-proto` collector services, so any OTLP/gRPC exporter
talks to it unchanged. Every request is stored as received (thread-safe); helpers flatten the
metric requests into data points and wait for them to arrive.

    with OtlpReceiver() as receiver:
        exporter_endpoint = receiver.endpoint          # "127.0.0.1:PORT"
        ...
        points = receiver.wait_for_points("gen_ai.gpu.utilization", 10, timeout=5)
        receiver.resource_attributes()                 # [{"run.id": "...", ...}, ...]

Set `receiver.fail_with = grpc.StatusCode.UNAVAILABLE` to make it refuse exports (the requests
are then not stored).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

AttributeValue = str | bool | int | float | bytes | list[Any] | dict[str, Any] | None


def any_value(value: AnyValue) -> AttributeValue:
    """An OTLP AnyValue as the Python value it holds."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, AttributeValue]:
    return {kv.key: any_value(kv.value) for kv in attributes}


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One number data point of a received metric, with where it came from."""

    metric: str
    unit: str
    kind: str  # "gauge" or "sum"
    value: float
    attributes: dict[str, AttributeValue]
    resource: dict[str, AttributeValue]
    scope: str
    time_unix_nano: int
    start_time_unix_nano: int
    is_monotonic: bool = False
    temporality: int = 0  # AggregationTemporality enum value for sums


def _number(point: Any) -> float:
    return float(point.as_double if point.WhichOneof("value") == "as_double" else point.as_int)


def points_of(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[DataPoint]:
    """Flatten one export request into its gauge and sum data points."""
    out: list[DataPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = attributes_dict(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind == "gauge":
                    raw, monotonic, temporality = metric.gauge.data_points, False, 0
                elif kind == "sum":
                    raw, monotonic, temporality = metric.sum.data_points, metric.sum.is_monotonic, metric.sum.aggregation_temporality
                else:  # histograms and summaries are not flattened
                    continue
                for point in raw:
                    out.append(
                        DataPoint(
                            metric=metric.name,
                            unit=metric.unit,
                            kind=kind,
                            value=_number(point),
                            attributes=attributes_dict(point.attributes),
                            resource=resource,
                            scope=scope_metrics.scope.name,
                            time_unix_nano=point.time_unix_nano,
                            start_time_unix_nano=point.start_time_unix_nano,
                            is_monotonic=monotonic,
                            temporality=temporality,
                        )
                    )
    return out


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._receiver._accept(context, metrics=request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._receiver._accept(context, traces=request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """OTLP/gRPC metrics + trace receiver that keeps everything it is sent."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_workers: int = 8) -> None:
        self._host = host
        self._requested_port = port
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._port = 0
        self._cond = threading.Condition()
        self._metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._points: list[DataPoint] = []
        self.fail_with: grpc.StatusCode | None = None
        self.rejected = 0
        self.request_headers: list[dict[str, str]] = []  # invocation metadata of every accepted request

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> OtlpReceiver:
        if self._server is not None:
            return self
        server = grpc.server(ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="otlp-receiver"))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        port = server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if port == 0:
            raise OSError(f"cannot bind OTLP receiver on {self._host}:{self._requested_port}")
        server.start()
        self._server, self._port = server, port
        return self

    def stop(self, grace: float = 0.2) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(timeout=grace + 1.0)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("OtlpReceiver is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        """host:port, what OTLP/gRPC exporters take (insecure)."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    # -- receiving ----------------------------------------------------------------------------
    def _accept(self, context: grpc.ServicerContext, *, metrics: Any = None, traces: Any = None) -> None:
        status = self.fail_with
        if status is not None:
            with self._cond:
                self.rejected += 1
            context.abort(status, "OtlpReceiver told to fail")
        with self._cond:
            self.request_headers.append({k: str(v) for k, v in context.invocation_metadata() or ()})
            if metrics is not None:
                self._metrics.append(metrics)
                self._points.extend(points_of(metrics))
            if traces is not None:
                self._traces.append(traces)
            self._cond.notify_all()

    # -- reading ------------------------------------------------------------------------------
    def metrics_requests(self) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        with self._cond:
            return list(self._metrics)

    def trace_requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        with self._cond:
            return list(self._traces)

    def spans(self) -> list[Any]:
        """Every received span (opentelemetry.proto.trace.v1.Span)."""
        with self._cond:
            return [span for req in self._traces for rs in req.resource_spans for ss in rs.scope_spans for span in ss.spans]

    def metric_names(self) -> set[str]:
        with self._cond:
            return {p.metric for p in self._points}

    def points(self, metric: str | None = None, where: Callable[[DataPoint], bool] | None = None) -> list[DataPoint]:
        """Data points received so far, in arrival order; optionally of one metric and filtered."""
        with self._cond:
            return [p for p in self._points if (metric is None or p.metric == metric) and (where is None or where(p))]

    def points_by_metric(self) -> dict[str, list[DataPoint]]:
        out: dict[str, list[DataPoint]] = {}
        for point in self.points():
            out.setdefault(point.metric, []).append(point)
        return out

    def resource_attributes(self) -> list[dict[str, AttributeValue]]:
        """The resource attributes of every received ResourceMetrics, in arrival order (duplicates kept)."""
        with self._cond:
            return [attributes_dict(rm.resource.attributes) for req in self._metrics for rm in req.resource_metrics]

    def wait_for_points(
        self,
        metric: str,
        count: int,
        timeout: float = 5.0,
        where: Callable[[DataPoint], bool] | None = None,
    ) -> list[DataPoint]:
        """Block until at least `count` points of `metric` (matching `where`) arrived; TimeoutError else."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [p for p in self._points if p.metric == metric and (where is None or where(p))]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} points of {metric!r} arrived within {timeout} s")
                self._cond.wait(left)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._metrics) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._metrics)} of {count} metrics requests arrived within {timeout} s")
                self._cond.wait(left)
            return list(self._metrics)

    def clear(self) -> None:
        with self._cond:
            self._metrics.clear()
            self._traces.clear()
            self._points.clear()
