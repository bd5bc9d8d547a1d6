"""The collector's OTLP/gRPC receiver (raw bytes in, stored per run.id), the `Collector` facade
and the `--otlp-forward` tee, against real gRPC clients and servers on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

from smoltrace.collector import Collector, Forwarder
from smoltrace.collector.receiver import METRICS_METHOD, TRACE_METHOD
from tests.fakes.otlp_payloads import (
    gpu_metrics_request,
    gpu_sample,
    mixed_trace_request,
    nested_model_trace,
    resource_metrics,
    span,
    trace_request,
)
from tests.fakes.otlp_receiver import OtlpReceiver

T0 = 1_700_000_000_000_000_000


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector("127.0.0.1:0").start()
    yield c
    c.stop(grace=0.2)


@pytest.fixture
def channel(collector: Collector) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(collector.endpoint)
    yield ch
    ch.close()


def export(channel: grpc.Channel, method: str, payload: bytes) -> bytes:
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)(payload, timeout=5)


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


# -- receiving --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [TRACE_METHOD, METRICS_METHOD])
def test_garbage_is_invalid_argument_and_the_receiver_keeps_serving(collector: Collector, channel: grpc.Channel, method: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        export(channel, method, b"\xff\xff\xff\xffnot a protobuf at all\x00")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid OTLP request" in (err.value.details() or "")
    assert collector.ingest.stats.bad_requests == 1
    request, expected = nested_model_trace("run-ok")
    assert ExportTraceServiceResponse.FromString(export(channel, TRACE_METHOD, request.SerializeToString())) is not None
    telemetry = collector.run_telemetry("run-ok")
    assert telemetry.spans == expected["span_count"]
    assert telemetry.traces[0]["prompt_tokens"] == expected["prompt_tokens"]


def test_a_request_from_the_official_sdk_stub_is_stored_per_run(collector: Collector) -> None:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    request, _ = nested_model_trace("run-sdk")
    with grpc.insecure_channel(collector.endpoint) as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(request, timeout=5)
    assert collector.store.payloads("run-sdk", "traces") == [request.SerializeToString()]
    assert collector.store.runs()["run-sdk"]["spans"] == 10


def test_a_mixed_run_trace_request_is_split_by_run_id(collector: Collector, channel: grpc.Channel) -> None:
    a = [span(0xA, 1, None, "test_evaluation", T0, T0 + 10), span(0xA, 2, 1, "child", T0 + 1, T0 + 2)]
    b = [span(0xB, 3, None, "test_evaluation", T0, T0 + 10)]
    request = mixed_trace_request([("run-a", a), ("run-b", b), ("run-a", [span(0xC, 4, None, "test_evaluation", T0, T0 + 5)])])
    export(channel, TRACE_METHOD, request.SerializeToString())
    runs = collector.store.runs()
    assert runs["run-a"]["spans"] == 3 and runs["run-b"]["spans"] == 1
    for run_id, trace_ids in (("run-a", {format(0xA, "032x"), format(0xC, "032x")}), ("run-b", {format(0xB, "032x")})):
        (stored,) = collector.store.payloads(run_id, "traces")
        part = ExportTraceServiceRequest.FromString(stored)
        assert {kv.value.string_value for rs in part.resource_spans for kv in rs.resource.attributes if kv.key == "run.id"} == {run_id}
        assert {d["trace_id"] for d in collector.run_telemetry(run_id).traces} == trace_ids


def test_a_mixed_run_metrics_request_is_split_by_run_id(collector: Collector, channel: grpc.Channel) -> None:
    samples_a = [gpu_sample(T0, {"0": 1.0, "1": 2.0})]
    samples_b = [gpu_sample(T0, {"0": 5.0}), gpu_sample(T0 + 10, {"0": 6.0})]
    request = ExportMetricsServiceRequest(resource_metrics=[resource_metrics("run-a", samples_a), resource_metrics("run-b", samples_b)])
    export(channel, METRICS_METHOD, request.SerializeToString())
    a, b = collector.run_telemetry("run-a"), collector.run_telemetry("run-b")
    assert {r["run_id"] for r in a.metric_rows} == {"run-a"} and len(a.metric_rows) == 2
    assert {r["run_id"] for r in b.metric_rows} == {"run-b"} and len(b.metric_rows) == 2
    assert a.energy_series == [(T0, 3.0)] and b.energy_series == [(T0, 5.0), (T0 + 10, 6.0)]
    assert len(a.metrics_json["resourceMetrics"]) == 1 and len(b.metrics_json["resourceMetrics"]) == 1
    # 9 metrics per GPU per sample, the non-GPU one included in the count of what arrived
    assert collector.store.runs()["run-a"]["data_points"] == 2 * 9 and collector.store.runs()["run-b"]["data_points"] == 2 * 9


def test_spans_without_a_run_id_are_kept_apart(collector: Collector, channel: grpc.Channel) -> None:
    export(channel, TRACE_METHOD, trace_request(None, [span(0x1, 1, None, "test_evaluation", T0, T0 + 1)]).SerializeToString())
    export(channel, TRACE_METHOD, trace_request("run-z", [span(0x2, 2, None, "test_evaluation", T0, T0 + 1)]).SerializeToString())
    assert set(collector.store.runs()) == {"", "run-z"}
    assert len(collector.run_telemetry("run-z").traces) == 1


def test_an_unknown_run_has_empty_documents(collector: Collector) -> None:
    telemetry = collector.run_telemetry("nobody")
    assert telemetry.traces == [] and telemetry.metric_rows == [] and telemetry.energy_series == []
    assert telemetry.metrics_json == {"run_id": "nobody", "resourceMetrics": []}


def test_run_telemetry_merges_spilled_and_fresh_payloads(tmp_path) -> None:
    collector = Collector("127.0.0.1:0", max_memory_bytes=300, spill_dir=tmp_path).start()
    try:
        request, expected = nested_model_trace("run-s")
        spans = list(request.resource_spans[0].scope_spans[0].spans)
        for s in spans:  # one span per request, far past 300 bytes in all
            collector.ingest.traces(trace_request("run-s", [s]).SerializeToString())
        assert collector.store.stats.spills > 0
        (doc,) = collector.run_telemetry("run-s").traces
        assert (
            doc["span_count"] == expected["span_count"] and doc["total_tokens"] == expected["prompt_tokens"] + expected["completion_tokens"]
        )
    finally:
        collector.stop(grace=0.2)


def test_the_receiver_refuses_an_address_it_cannot_bind() -> None:
    first = Collector("127.0.0.1:0").start()
    try:
        with pytest.raises((OSError, RuntimeError)):
            Collector(first.endpoint)
    finally:
        first.stop(grace=0.2)


# -- forwarding -------------------------------------------------------------------------------
def test_everything_received_is_forwarded_unchanged_over_grpc() -> None:
    with OtlpReceiver() as downstream:
        collector = Collector("127.0.0.1:0", forward_url=f"http://{downstream.endpoint}").start()
        try:
            with grpc.insecure_channel(collector.endpoint) as ch:
                request, _ = nested_model_trace("run-f")
                mixed = mixed_trace_request(
                    [("run-x", [span(0x7, 1, None, "a", T0, T0 + 1)]), ("run-y", [span(0x8, 2, None, "b", T0, T0 + 1)])]
                )
                metrics = gpu_metrics_request("run-f", [gpu_sample(T0, {"0": 1.0})])
                export(ch, TRACE_METHOD, request.SerializeToString())
                export(ch, TRACE_METHOD, mixed.SerializeToString())
                export(ch, METRICS_METHOD, metrics.SerializeToString())
            assert collector.forwarder is not None and collector.forwarder.flush(5)
            wait_until(lambda: len(downstream.trace_requests()) == 2 and len(downstream.metrics_requests()) == 1)
            assert downstream.trace_requests() == [request, mixed], "the mixed request is forwarded whole, not split"
            assert downstream.metrics_requests() == [metrics]
            assert collector.forwarder.stats.sent == 3 and collector.forwarder.stats.failed == 0
        finally:
            collector.stop(grace=0.2)


class _HttpSink(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_forwarding_over_otlp_http_protobuf() -> None:
    _HttpSink.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HttpSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        forwarder = Forwarder(f"http://127.0.0.1:{server.server_address[1]}/", "http/protobuf")
        forwarder.submit("traces", b"trace-bytes")
        forwarder.submit("metrics", b"metric-bytes")
        assert forwarder.flush(5)
        forwarder.close()
        assert sorted(_HttpSink.received) == [
            ("/v1/metrics", "application/x-protobuf", b"metric-bytes"),
            ("/v1/traces", "application/x-protobuf", b"trace-bytes"),
        ]
        assert forwarder.stats.sent == 2
    finally:
        server.shutdown()
        server.server_close()


def test_a_dead_downstream_never_slows_ingestion() -> None:
    with OtlpReceiver() as downstream:
        dead = downstream.endpoint
    collector = Collector("127.0.0.1:0", forward_url=dead).start()
    try:
        assert collector.forwarder is not None
        collector.forwarder.timeout_s = 0.5
        request, _ = nested_model_trace("run-d")
        started = time.monotonic()
        for _ in range(20):
            collector.ingest.traces(request.SerializeToString())
        assert time.monotonic() - started < 1.0
        assert collector.store.runs()["run-d"]["requests"] == 20
        assert collector.forwarder.flush(20)
        assert collector.forwarder.stats.failed == 20 and collector.forwarder.stats.sent == 0
    finally:
        collector.stop(grace=0.2)


def test_a_full_forward_queue_drops_and_counts() -> None:
    release = threading.Event()

    class Stuck(Forwarder):
        def _send(self, kind: str, payload: bytes) -> None:
            release.wait(5)

    forwarder = Stuck("127.0.0.1:9", max_queue=2)
    try:
        for _ in range(6):
            forwarder.submit("traces", b"x")
        assert forwarder.stats.dropped >= 3
    finally:
        release.set()
        forwarder.close()


def test_the_forward_protocol_is_checked() -> None:
    with pytest.raises(ValueError, match="grpc or http/protobuf"):
        Forwarder("127.0.0.1:4317", "http/json")
