"""Load scenario: the GPU exporter (a real `smoltrace-gpu-exporter --backend simulated:8` process)
with 16 concurrent runs at 50 ms, for `seconds`. Each of 16 workers keeps one run live at a time
(5-15 s each, heartbeats every 2 s; the even-numbered workers hold a WatchRun stream on it: 8
streams, because 16 streams would occupy all 16 of the exporter's gRPC threads and starve every
unary RPC — see findings in docs/RELIABILITY.md), stops it and checks its summary;
runs churn for the whole duration. The exporter's RSS and thread count are read every 2 s.

Checks per run: sample_count against duration / interval, total energy = sum of the devices,
each device's energy = the last cumulative energy the run's WatchRun stream delivered (to within
one 50 ms sweep of its power), stop_reason "client". Process: threads bounded (idle + the 16-thread gRPC pool + 2),
RSS growth after warm-up under a bound (the exporter keeps up to 256 stopped summaries by design).
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from tests.bench._harness import exporter, pb
from tests.fakes.exporter_client import OwnerStub

RESULTS = Path(__file__).with_name("results")
RUNS = 16
GPUS = 8
INTERVAL_MS = 50
RSS_EVERY_S = 2.0
MB = 1024.0 * 1024.0
RSS_GROWTH_LIMIT_MB = 15.0
THREAD_GROWTH_LIMIT = 2
GRPC_POOL = 16  # the exporter's gRPC thread pool (grows on demand up to this)


def _worker(index: int, address: str, until: float, out: dict[str, Any], lock: threading.Lock) -> None:
    rng = random.Random(index)
    channel = grpc.insecure_channel(address)
    stub = OwnerStub(channel)
    n = 0
    try:
        while time.monotonic() < until - 1.0:
            run_id = f"load-{index}-{n}"
            n += 1
            t_start = time.monotonic()
            stub.StartSampling(pb.StartSamplingRequest(run_id=run_id, interval_ms=INTERVAL_MS, lease_seconds=10), timeout=10)
            with lock:
                out["events"].append(time.monotonic())
            last: dict[str, Any] = {}

            def watch(run_id: str = run_id, last: dict[str, Any] = last) -> None:
                try:
                    for sample in stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=60):
                        last["sample"] = sample
                        last["count"] = last.get("count", 0) + 1
                except grpc.RpcError as err:
                    last["error"] = err.code().name

            watcher = threading.Thread(target=watch, daemon=True)
            if index % 2 == 0:
                watcher.start()
            live = min(rng.uniform(5.0, 15.0), max(0.5, until - time.monotonic()))
            end = time.monotonic() + live
            while time.monotonic() < end:
                time.sleep(min(2.0, max(0.0, end - time.monotonic())))
                if time.monotonic() < end:
                    stub.Heartbeat(pb.HeartbeatRequest(run_id=run_id), timeout=10)
            live_energy = stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=10).energy_joules
            summary = stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=15)
            t_stop = time.monotonic()
            with lock:
                out["events"].append(t_stop)
                # other runs' StartSampling/StopSampling boundary sweeps are dispatched to every live run
                others = sum(1 for t in out["events"] if t_start <= t <= t_stop) - 2
            if index % 2 == 0:
                watcher.join(10)
            problems = []
            expected = summary.duration_seconds * 1000.0 / INTERVAL_MS
            ratio = summary.sample_count / expected if expected else 0.0
            if not (0.5 * expected <= summary.sample_count <= 1.05 * expected + 3 + max(0, others)):
                problems.append(
                    f"{run_id}: {summary.sample_count} samples in {summary.duration_seconds:.2f} s ({others} boundary sweeps of others)"
                )
            ratio = (summary.sample_count - max(0, others) - 2) / expected if expected else 0.0
            device_sum = sum(d.energy_joules for d in summary.devices)
            if abs(device_sum - summary.energy_joules) > 1e-6 * max(1.0, summary.energy_joules):
                problems.append(f"{run_id}: total {summary.energy_joules} != sum of devices {device_sum}")
            if summary.stop_reason != "client" or len(summary.devices) != GPUS:
                problems.append(f"{run_id}: stop_reason {summary.stop_reason}, {len(summary.devices)} devices")
            worst_gap = 0.0
            sample = last.get("sample")
            if summary.energy_joules + 1e-6 < live_energy:
                problems.append(f"{run_id}: summary energy {summary.energy_joules} < live energy {live_energy} before the stop")
            if index % 2:
                pass
            elif sample is None:
                problems.append(f"{run_id}: WatchRun delivered nothing ({last.get('error')})")
            else:
                watched = {d.index: d.energy_joules for d in sample.devices}
                for d in summary.devices:
                    gap = d.energy_joules - watched.get(d.index, 0.0)
                    allowed = (d.power_watts.max or 1000.0) * (INTERVAL_MS / 1000.0) * 2 + 1e-6
                    worst_gap = max(worst_gap, abs(gap))
                    if gap < -1e-6 or gap > allowed:
                        problems.append(
                            f"{run_id}: device {d.index} summary {d.energy_joules:.3f} J vs last cumulative {watched.get(d.index)}"
                        )
            with lock:
                out["runs"] += 1
                out["samples"] += summary.sample_count
                out["watched_samples"] += last.get("count", 0)
                out["ratios"].append(ratio)
                out["energy_gap_max_j"] = max(out["energy_gap_max_j"], worst_gap)
                out["energy_j"] += summary.energy_joules
                out["problems"].extend(problems)
    except Exception as err:  # noqa: BLE001 - reported as a problem
        with lock:
            out["problems"].append(f"worker {index}: {type(err).__name__}: {err}")
    finally:
        channel.close()


def run(seconds: float = 60.0, progress: bool = True) -> dict[str, Any]:
    started = time.monotonic()
    out: dict[str, Any] = {
        "events": [],
        "runs": 0,
        "samples": 0,
        "watched_samples": 0,
        "ratios": [],
        "energy_gap_max_j": 0.0,
        "energy_j": 0.0,
        "problems": [],
    }
    lock = threading.Lock()
    rss: list[tuple[float, int, int]] = []
    with exporter(gpus=GPUS) as exp:
        idle_threads = exp.ps().num_threads()
        until = time.monotonic() + seconds
        workers = [threading.Thread(target=_worker, args=(i, exp.grpc_address, until, out, lock), daemon=True) for i in range(RUNS)]
        for w in workers:
            w.start()
        next_print = time.monotonic() + 60
        while time.monotonic() < until:
            p = exp.ps()
            rss.append((time.monotonic() - started, int(p.memory_info().rss), p.num_threads()))
            if progress and time.monotonic() >= next_print:
                next_print += 60
                print(
                    f"  exporter load: {time.monotonic() - started:.0f}/{seconds:.0f} s, {out['runs']} runs done, RSS {rss[-1][1] / MB:.1f} MB",
                    flush=True,
                )
            time.sleep(RSS_EVERY_S)
        for w in workers:
            w.join(60)
        p = exp.ps()
        rss.append((time.monotonic() - started, int(p.memory_info().rss), p.num_threads()))
        alive = exp.proc.poll() is None
    warm = min(30.0, 0.2 * seconds)
    after = [r for r in rss if r[0] >= warm] or rss
    base_rss, end_rss = after[0][1], rss[-1][1]
    threads = [t for _, _, t in after]
    first_half_max = max([t for when, _, t in rss if when <= seconds / 2] or threads)
    ratios = out.pop("ratios")
    out.pop("events")
    figures = {
        "seconds": seconds,
        "concurrent_runs": RUNS,
        "gpus": GPUS,
        "interval_ms": INTERVAL_MS,
        "runs_completed": out["runs"],
        "samples_total": out["samples"],
        "watched_samples": out["watched_samples"],
        "periodic_sample_ratio_note": "(samples - boundary sweeps) / (duration / interval)",
        "sample_ratio_min": round(min(ratios), 3) if ratios else None,
        "sample_ratio_max": round(max(ratios), 3) if ratios else None,
        "energy_gap_max_j": round(out["energy_gap_max_j"], 4),
        "rss_after_warmup_mb": round(base_rss / MB, 2),
        "rss_end_mb": round(end_rss / MB, 2),
        "rss_peak_mb": round(max(r for _, r, _ in rss) / MB, 2),
        "rss_growth_mb": round((end_rss - base_rss) / MB, 2),
        "threads_idle": idle_threads,
        "threads_after_warmup": threads[0],
        "threads_end": threads[-1],
        "threads_max": max(threads),
        "threads_max_first_half": first_half_max,
        "exporter_alive": alive,
        "problems": out["problems"][:20],
        "problem_count": len(out["problems"]),
    }
    figures["passed"] = bool(
        alive
        and out["runs"] >= RUNS
        and not out["problems"]
        and figures["rss_growth_mb"] < RSS_GROWTH_LIMIT_MB
        and max(threads) <= idle_threads + GRPC_POOL + THREAD_GROWTH_LIMIT
    )
    return figures


def save(figures: dict[str, Any]) -> Path:
    """Keep a run's figures under tests/reliability/results/ (the 600 s figure is quoted in the doc)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"exporter_load_{int(figures['seconds'])}s.json"
    path.write_text(json.dumps(figures, indent=2) + "\n", "utf-8")
    return path


if __name__ == "__main__":
    import sys

    result = run(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
    print(json.dumps(result, indent=2))
    print(save(result))
