"""The standalone `smoltrace-collector`: its JSON HTTP API over what it received (per run),
spilling, forwarding, SIGTERM exit 0, and a restart on the same port while an OpenTelemetry SDK
keeps exporting to it.

The runner always embeds its own collector (there is no flag to send its spans to a standalone
one), so the restart is tested with the SDK's BatchSpanProcessor + OTLP/gRPC exporter, the same
pieces the runner uses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from smoltrace.collector.receiver import METRICS_METHOD, TRACE_METHOD
from tests.fakes.otlp_payloads import gpu_metrics_request, gpu_sample, nested_model_trace, span, trace_request
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.fakes.telemetry_procs import CollectorProcess, wait_until

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def send(endpoint: str, method: str, payload: bytes) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        channel.unary_unary(method, request_serializer=None, response_deserializer=None)(payload, timeout=5)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    process = CollectorProcess(extra=("--max-memory-mb", "1", "--spill-dir", str(tmp_path / "spill")))
    yield process
    process.close()


def test_http_api_serves_each_runs_documents(collector: CollectorProcess, tmp_path: Path) -> None:
    request, expected = nested_model_trace("run-a")
    send(collector.grpc, TRACE_METHOD, request.SerializeToString())
    send(collector.grpc, TRACE_METHOD, trace_request("run-b", [span(0xB, 1, None, "test_evaluation", T0, T0 + S)]).SerializeToString())
    samples = [gpu_sample(T0 + i * S, {"0": 5.0 * i, "1": 7.0 * i}) for i in range(3)]
    send(collector.grpc, METRICS_METHOD, gpu_metrics_request("run-a", samples).SerializeToString())

    assert collector.get("/healthz") == {"status": "ok"}
    runs = collector.get("/runs")
    assert set(runs) == {"run-a", "run-b"}
    assert runs["run-a"]["spans"] == expected["span_count"] and runs["run-a"]["requests"] == 2
    assert runs["run-a"]["data_points"] == 3 * 2 * 9 and runs["run-b"]["spans"] == 1

    (doc,) = collector.get("/runs/run-a/traces")
    assert doc["run_id"] == "run-a" and doc["test_case_uids"] == ["tool:t1"]
    assert doc["prompt_tokens"] == expected["prompt_tokens"] and doc["total_duration_ms"] == expected["duration_ms"]
    metrics = collector.get("/runs/run-a/metrics")
    assert metrics["run_id"] == "run-a" and len(metrics["resourceMetrics"]) == 1
    assert "process.cpu.time" not in {m["name"] for sm in metrics["resourceMetrics"][0]["scopeMetrics"] for m in sm["metrics"]}
    rows = collector.get("/runs/run-a/metric_rows")
    assert len(rows) == 3 * 2 and {r["gpu_id"] for r in rows} == {"0", "1"} and {r["run_id"] for r in rows} == {"run-a"}
    assert collector.get("/runs/run-b/metrics") == {"run_id": "run-b", "resourceMetrics": []}
    assert collector.get("/runs/run-b/metric_rows") == []

    assert collector.request("/runs/nobody/traces")[0] == 404
    assert collector.request("/runs/run-a/nonsense")[0] == 404
    assert collector.request("/elsewhere")[0] == 404
    assert collector.request("/runs/run-b", method="DELETE") == (200, {"dropped": "run-b"})
    assert set(collector.get("/runs")) == {"run-a"}
    assert collector.request("/runs/run-b/traces")[0] == 404
    assert collector.request("/runs/run-a/traces/extra", method="DELETE")[0] == 404

    assert collector.terminate(timeout=10) == 0


def test_spilled_runs_are_served_whole(collector: CollectorProcess, tmp_path: Path) -> None:
    big = "x" * 200_000
    for i in range(8):  # 1.6 MB of spans for a 1 MB collector
        s = span(0x5, i + 1, None if i == 0 else 1, "test_evaluation" if i == 0 else f"s{i}", T0 + i, T0 + S, {"blob": big})
        send(collector.grpc, TRACE_METHOD, trace_request("run-big", [s]).SerializeToString())
    runs = collector.get("/runs")
    assert runs["run-big"]["spilled_bytes"] > 0 and runs["run-big"]["memory_bytes"] <= 1024 * 1024
    assert list((tmp_path / "spill").glob("*.otlp"))
    (doc,) = collector.get("/runs/run-big/traces")
    assert doc["span_count"] == 8 and [s["name"] for s in doc["spans"]][:2] == ["test_evaluation", "s1"]
    assert collector.terminate(timeout=10) == 0


def test_forwarding_and_sigterm_flush() -> None:
    with OtlpReceiver() as downstream:
        process = CollectorProcess(extra=("--otlp-forward", downstream.url))
        try:
            request, _ = nested_model_trace("run-fwd")
            send(process.grpc, TRACE_METHOD, request.SerializeToString())
            assert process.terminate(timeout=10) == 0
            assert downstream.trace_requests() == [request]
        finally:
            process.close()


def test_bad_flags_exit_2() -> None:
    import subprocess

    from tests.fakes.telemetry_procs import child_env, collector_command

    for args in (["--grpc-address", "nonsense"], ["--max-memory-mb", "0"]):
        result = subprocess.run([*collector_command(), *args], capture_output=True, text=True, timeout=30, env=child_env(), check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert "smoltrace-collector: error" in result.stderr


# -- restart ------------------------------------------------------------------------------------
class RecordingExporter(SpanExporter):
    """What the SDK's exporter said about each batch."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[tuple[tuple[str, ...], SpanExportResult]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append((tuple(s.name for s in spans), result))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def test_collector_restart_on_the_same_port() -> None:
    first = CollectorProcess()
    port = first.grpc_port
    recorder = RecordingExporter(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, timeout=2))
    provider = TracerProvider(resource=Resource.create({"run.id": "run-restart", "service.name": "smoltrace-eval"}))
    provider.add_span_processor(BatchSpanProcessor(recorder, schedule_delay_millis=100, export_timeout_millis=3000))
    tracer = provider.get_tracer("tests")
    second: CollectorProcess | None = None
    try:

        def emit(prefix: str, n: int) -> None:
            for i in range(n):
                with tracer.start_as_current_span(f"{prefix}-root-{i}"):
                    tracer.start_span(f"{prefix}-child-{i}").end()
            assert provider.force_flush(15_000)

        emit("before", 2)
        assert first.get("/runs")["run-restart"]["spans"] == 4
        first.kill()  # SIGKILL: what it held is gone

        emit("during", 2)
        assert recorder.results[-1][1] == SpanExportResult.FAILURE, "the SDK saw the export fail"

        second = CollectorProcess(grpc_port=port)
        assert second.grpc_port == port

        def delivered() -> bool:
            emit("after", 1)
            runs = second.get("/runs")
            return "run-restart" in runs

        wait_until(delivered, 20, interval=0.2, what="the SDK to reach the restarted collector")
        docs = second.get("/runs/run-restart/traces")
        names = {s["name"] for d in docs for s in d["spans"]}
        assert names and all(n.startswith("after-") for n in names), names  # nothing from before the kill, nothing lost in between
        assert recorder.results[-1][1] == SpanExportResult.SUCCESS
        assert all(d["incomplete"] for d in docs), "SDK-only traces have no test_evaluation root"
        emit("after-more", 3)
        assert second.get("/runs")["run-restart"]["spans"] >= 6
        assert second.terminate(timeout=10) == 0
    finally:
        provider.shutdown()
        first.close()
        if second is not None:
            second.close()
