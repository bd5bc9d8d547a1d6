"""Collector ingest rate: spans per second in batches of 512 (target >= 20,000 spans/s on one core).

Two measurements side by side: the ingest path alone (parse, group by run.id, store) called
in-process, and end to end over OTLP/gRPC on loopback from one client thread (what a runner's
BatchSpanProcessor does). Then the merge of everything received into trace documents.

Run: python -m tests.bench.bench_collector [--batches 200]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from smoltrace.collector import Collector
from smoltrace.collector.documents import spans_from_requests, trace_documents

NAME = "collector"
BATCH = 512
TARGET_SPANS_PER_S = 20_000


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def make_batch(run_id: str, batch_index: int, size: int = BATCH) -> bytes:
    """A realistic batch: traces of 8 spans (root, agent, steps, model calls with token counts)."""
    rs = ResourceSpans()
    rs.resource.attributes.extend([_kv("service.name", "smoltrace-eval"), _kv("run.id", run_id)])
    ss = rs.scope_spans.add()
    ss.scope.name = "openinference.instrumentation.smolagents"
    t0 = time.time_ns()
    for i in range(size):
        trace_no = batch_index * size + i // 8
        span = Span(
            trace_id=trace_no.to_bytes(16, "big"),
            span_id=(batch_index * size + i + 1).to_bytes(8, "big"),
            parent_span_id=b"" if i % 8 == 0 else (batch_index * size + (i // 8) * 8 + 1).to_bytes(8, "big"),
            name="test_evaluation" if i % 8 == 0 else ("completion" if i % 2 else "Step"),
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=t0 + i * 1000,
            end_time_unix_nano=t0 + i * 1000 + 50_000_000,
        )
        attrs = [_kv("openinference.span.kind", "LLM" if i % 2 else "CHAIN"), _kv("llm.model_name", "openai/gpt-4.1-nano")]
        if i % 2:
            attrs += [_kv("llm.token_count.prompt", 812), _kv("llm.token_count.completion", 64), _kv("llm.token_count.total", 876)]
            attrs += [_kv("llm.input_messages.0.message.content", "What's the weather in Paris, France? " * 8)]
        if i % 8 == 0:
            attrs += [_kv("test.id", f"task_{trace_no}"), _kv("test.case_uid", f"tool:task_{trace_no}"), _kv("agent.type", "tool")]
        span.attributes.extend(attrs)
        ss.spans.append(span)
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def run(batches: int = 200) -> Any:
    from ._harness import Result

    result = Result(NAME, f"collector ingest, {batches} batches of {BATCH} spans")
    payloads = [make_batch("bench-run", b) for b in range(batches)]
    spans = batches * BATCH
    collector = Collector().start()
    try:
        # in-process ingest path
        t0 = time.process_time()
        w0 = time.perf_counter()
        for payload in payloads:
            collector.ingest.traces(payload)
        cpu = time.process_time() - t0
        wall = time.perf_counter() - w0
        result.add("ingest path, spans/s per CPU second", spans / cpu, "spans/s")
        result.add("ingest path, spans/s wall", spans / wall, "spans/s")
        collector.store.drop("bench-run")
        # over gRPC from one client
        channel = grpc.insecure_channel(collector.endpoint)
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export", request_serializer=None, response_deserializer=None
        )
        export(payloads[0], timeout=10)
        collector.store.drop("bench-run")
        cpu0 = os.times()
        w0 = time.perf_counter()
        for payload in payloads:
            export(payload, timeout=10)
        wall = time.perf_counter() - w0
        cpu1 = os.times()
        process_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        result.add("OTLP/gRPC end to end, spans/s", spans / wall, "spans/s", below=None)
        result.metrics[-1].target = f">= {TARGET_SPANS_PER_S} spans/s"
        result.metrics[-1].passed = spans / wall >= TARGET_SPANS_PER_S
        result.add("client+server CPU per 1000 spans", process_cpu / spans * 1000 * 1000, "ms")
        channel.close()
        # merge
        w0 = time.perf_counter()
        docs = trace_documents(spans_from_requests(collector.store.payloads("bench-run", "traces")), "bench-run")
        merge = time.perf_counter() - w0
        result.add("merge into trace documents, spans/s", spans / merge, "spans/s")
        result.details = {"spans": spans, "traces": len(docs), "payload_bytes": sum(map(len, payloads))}
    finally:
        collector.stop()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args(argv)
    res = run(args.batches)
    for m in res.metrics:
        print(f"  {m.label}: {m.value:,.1f} {m.unit} {m.target}")


if __name__ == "__main__":
    main()
