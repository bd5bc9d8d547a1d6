"""Benchmark 3: StartSampling + StopSampling round trip over loopback gRPC, 8 simulated GPUs.

One channel, 500 iterations, each with a fresh run id: StartSampling (boundary sweep, default
1000 ms interval) then StopSampling (boundary sweep + summary), timed on the client. No other run
is live. 500 + warm-up runs stay under the exporter's 1000 retained stopped runs. Target: p99 < 5 ms.
"""

from __future__ import annotations

import time

from ._harness import GPUS, Result, exporter, grpc_stub, latency_summary, start_run, stop_run

NAME = "roundtrip"
TARGET_P99_MS = 5.0
WARMUP = 20


def run(iterations: int = 500) -> Result:
    result = Result(NAME, f"StartSampling+StopSampling round trip, {GPUS} GPUs, loopback, {iterations} iterations, one channel")
    with exporter() as exp, grpc_stub(exp.grpc_address) as stub:
        for i in range(WARMUP):
            start_run(stub, f"bench-warmup-{i:04d}", 0)
            stop_run(stub, f"bench-warmup-{i:04d}")
        pairs: list[float] = []
        starts: list[float] = []
        stops: list[float] = []
        for i in range(iterations):
            run_id = f"bench-rt-{i:05d}"
            t0 = time.perf_counter()
            start_run(stub, run_id, 0)
            t1 = time.perf_counter()
            summary = stop_run(stub, run_id)
            t2 = time.perf_counter()
            if summary.run_id != run_id or len(summary.devices) != GPUS:
                raise RuntimeError(f"unexpected summary for {run_id}: {summary.run_id} with {len(summary.devices)} devices")
            starts.append(t1 - t0)
            stops.append(t2 - t1)
            pairs.append(t2 - t0)
    pair, start, stop = latency_summary(pairs), latency_summary(starts), latency_summary(stops)
    result.add("round trip p50", pair["p50_ms"], "ms")
    result.add("round trip p99", pair["p99_ms"], "ms", below=TARGET_P99_MS)
    result.add("StartSampling p50", start["p50_ms"], "ms")
    result.add("StartSampling p99", start["p99_ms"], "ms")
    result.add("StopSampling p50", stop["p50_ms"], "ms")
    result.add("StopSampling p99", stop["p99_ms"], "ms")
    result.details.update(round_trip=pair, start=start, stop=stop, warmup_iterations=WARMUP)
    return result
