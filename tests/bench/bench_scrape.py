"""Benchmark 2: /metrics scrape latency with 8 simulated GPUs and a live run at 100 ms.

Same exporter set-up as the CPU benchmark (8 GPUs, one run sampling every 100 ms). 500 sequential
GETs, each on a fresh TCP connection (no keep-alive: connect + request + full body + close), timed
end to end on the client. Target: p99 < 5 ms.
"""

from __future__ import annotations

import time

from ._harness import GPUS, Result, exporter, grpc_stub, latency_summary, scrape, settle, start_run, stop_run

NAME = "scrape"
TARGET_P99_MS = 5.0
INTERVAL_MS = 100
WARMUP = 20


def run(scrapes: int = 500) -> Result:
    result = Result(NAME, f"/metrics scrape latency, {GPUS} GPUs, run at {INTERVAL_MS} ms, {scrapes} scrapes without keep-alive")
    with exporter() as exp, grpc_stub(exp.grpc_address) as stub:
        run_id = "bench-scrape"
        start_run(stub, run_id, INTERVAL_MS, lease_seconds=600)
        settle(1.0)
        host, port = exp.metrics_host_port
        body = scrape(host, port)
        gpu_series = body.count(b"smoltrace_gpu_up{")
        if gpu_series != GPUS:
            raise RuntimeError(f"/metrics shows {gpu_series} GPUs, expected {GPUS}")
        for _ in range(WARMUP):
            scrape(host, port)
        timings: list[float] = []
        sizes: list[int] = []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            body = scrape(host, port)
            timings.append(time.perf_counter() - t0)
            sizes.append(len(body))
        stop_run(stub, run_id)
    stats = latency_summary(timings)
    result.add("p50", stats["p50_ms"], "ms")
    result.add("p99", stats["p99_ms"], "ms", below=TARGET_P99_MS)
    result.add("max", stats["max_ms"], "ms")
    result.details.update(stats, body_bytes=sum(sizes) / len(sizes), warmup_scrapes=WARMUP)
    return result
