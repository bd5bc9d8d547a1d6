"""Benchmark 1: CPU of the sampler at 100 ms with 8 simulated GPUs, against an idle exporter.

Two exporters run side by side over the same wall-clock window: one with a live run at
interval_ms=100, one with no run (it sweeps at its idle interval, 15 s by default). CPU time
(user + system, all threads) of each process is read before and after the window; nothing talks
to either exporter inside the window. Target: the run's exporter below 2 % of one core; the
excess over idle is reported beside it (same target) so the cost of sampling itself is clear.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from ._harness import GPUS, Result, exporter, grpc_stub, metric_value, scrape, settle, start_run, stop_run

NAME = "cpu"
TARGET_PCT = 2.0
INTERVAL_MS = 100
SETTLE_S = 3.0  # after start-up (imports, first sweeps) and after StartSampling


def run(window_s: float = 20.0) -> Result:
    result = Result(NAME, f"sampler CPU, {GPUS} GPUs, run at {INTERVAL_MS} ms vs idle exporter, {window_s:g} s window")
    with ExitStack() as stack:
        busy = stack.enter_context(exporter())
        idle = stack.enter_context(exporter())
        stub = stack.enter_context(grpc_stub(busy.grpc_address))
        run_id = "bench-cpu"
        start_run(stub, run_id, INTERVAL_MS, lease_seconds=int(window_s + 120))
        settle(SETTLE_S)
        sweeps_before = metric_value(scrape(*busy.metrics_host_port), "smoltrace_gpu_exporter_sweeps_total")
        scraped0 = time.monotonic()
        settle(0.5)  # let the scrape's own CPU land before the window opens

        wall0 = time.monotonic()
        busy0, idle0 = busy.cpu_seconds(), idle.cpu_seconds()
        busy_t0, idle_t0 = busy.thread_cpu_seconds(), idle.thread_cpu_seconds()
        time.sleep(window_s)
        busy_t1, idle_t1 = busy.thread_cpu_seconds(), idle.thread_cpu_seconds()
        busy1, idle1 = busy.cpu_seconds(), idle.cpu_seconds()
        wall = time.monotonic() - wall0

        body = scrape(*busy.metrics_host_port)
        scraped_wall = time.monotonic() - scraped0
        sweeps_after = metric_value(body, "smoltrace_gpu_exporter_sweeps_total")
        last_sweep_s = metric_value(body, "smoltrace_gpu_exporter_last_collect_duration_seconds")
        summary = stop_run(stub, run_id)

    busy_threads, idle_threads = _delta(busy_t0, busy_t1), _delta(idle_t0, idle_t1)
    precise = busy_threads is not None and idle_threads is not None
    if busy_threads is not None and idle_threads is not None:
        busy_cpu, idle_cpu = sum(busy_threads.values()), sum(idle_threads.values())
        result.notes.append("CPU from /proc/<pid>/task/*/sched (ns resolution); clock-tick figures in the JSON details")
    else:
        busy_cpu, idle_cpu = busy1 - busy0, idle1 - idle0
        result.notes.append("CPU from clock ticks (10 ms resolution)")
    busy_pct = 100.0 * busy_cpu / wall
    idle_pct = 100.0 * idle_cpu / wall
    result.add("exporter with run @100ms", busy_pct, "% of one core", below=TARGET_PCT)
    result.add("excess over idle exporter", busy_pct - idle_pct, "% of one core", below=TARGET_PCT)
    result.add("idle exporter (no run)", idle_pct, "% of one core")
    if idle_pct > 0:
        result.add("ratio run / idle", busy_pct / idle_pct, "x")
    sweeps = (sweeps_after or 0) - (sweeps_before or 0)
    result.add("sweeps/s during window", sweeps / scraped_wall, "/s")
    if last_sweep_s is not None:
        result.add("last sweep duration", last_sweep_s * 1000.0, "ms")
    result.details.update(
        window_s=wall,
        busy_cpu_s=busy_cpu,
        idle_cpu_s=idle_cpu,
        cpu_source="proc-sched" if precise else "clock-ticks",
        busy_cpu_ticks_s=busy1 - busy0,
        idle_cpu_ticks_s=idle1 - idle0,
        busy_top_threads_s=_top(busy_threads),
        idle_top_threads_s=_top(idle_threads),
        sweeps_in_window=sweeps,
        run_sample_count=summary.sample_count,
    )
    return result


def _delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def _top(threads: dict[str, float] | None, n: int = 5) -> dict[str, float]:
    if not threads:
        return {}
    return {k: round(v, 6) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])[:n]}
