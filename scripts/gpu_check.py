"""`make gpu-check`: the exporter's real-NVML path checked on a machine with an NVIDIA GPU.

1. Parity: every device's identity and readings through our NVML backend against
   `nvidia-smi --query-gpu` taken at the same moment.
2. Energy: a run sampled at 100 ms around a GPU load (bf16 matrix products through PyTorch when it
   is installed, else idle): the run's counter-based energy (NVML total-energy counter deltas at
   the run's boundaries) against the trapezoid integral of the power samples WatchRun streamed.
3. Cost of a sweep of all devices with the real library, and the fields each device supports.
4. The CLI with the real backend: /metrics says NVML is up and has every GPU's series.

Prints a readable report and writes the figures as JSON (--out, default gpu_check.json).
Exit code 0 when every check passes, 1 otherwise, 2 when there is no GPU to check.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "gpu_exporter" / "src"))

import grpc  # noqa: E402
import pynvml  # noqa: E402

from smoltrace_gpu_exporter.api import pb, pb_grpc  # noqa: E402
from smoltrace_gpu_exporter.app import ExporterApp  # noqa: E402
from smoltrace_gpu_exporter.config import ExporterConfig  # noqa: E402
from smoltrace_gpu_exporter.nvml import Field, PynvmlBackend, describe_error  # noqa: E402
from smoltrace_gpu_exporter.sampler import Sampler  # noqa: E402

MIB = 1024 * 1024
results: dict[str, object] = {}
failures: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    if not ok:
        failures.append(f"{name}: {detail}")


def nvidia_smi() -> list[dict[str, str]]:
    fields = "index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,power.draw.instant,driver_version"
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    rows = []
    for line in out.strip().splitlines():
        rows.append(dict(zip(fields.split(","), [v.strip() for v in line.split(",")], strict=False)))
    return rows


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parity() -> None:
    print("1. NVML backend vs nvidia-smi")
    backend = PynvmlBackend()
    sampler = Sampler(backend)
    snap = sampler.sweep()
    smi = {row["uuid"]: row for row in nvidia_smi()}
    devices = []
    for reading in snap.devices:
        row = smi.get(reading.uuid)
        check(f"gpu{reading.index} uuid known to nvidia-smi", row is not None, reading.uuid)
        if row is None:
            continue
        state = sampler.device(reading.uuid)
        unsupported = sorted(f.value for f in state.unsupported) if state else []
        entry = {
            "index": reading.index,
            "uuid": reading.uuid,
            "name": reading.name,
            "unsupported_fields": unsupported,
            "ours": {
                "memory_total_mib": reading.memory_total_bytes / MIB,
                "memory_used_mib": None if reading.memory_used_bytes is None else reading.memory_used_bytes / MIB,
                "utilization_percent": reading.utilization_percent,
                "temperature_celsius": reading.temperature_celsius,
                "power_watts": reading.power_watts,
                "energy_counter_joules": reading.energy_counter_joules,
            },
            "nvidia_smi": row,
        }
        devices.append(entry)
        check(f"gpu{reading.index} name", reading.name == row["name"], f"{reading.name!r} vs {row['name']!r}")
        total = number(row["memory.total"])
        check(
            f"gpu{reading.index} memory.total",
            total is not None and abs(reading.memory_total_bytes / MIB - total) <= 1,
            f"{reading.memory_total_bytes / MIB:.0f} MiB vs {row['memory.total']} MiB",
        )
        used = number(row["memory.used"])
        if reading.memory_used_bytes is not None and used is not None:
            check(
                f"gpu{reading.index} memory.used",
                abs(reading.memory_used_bytes / MIB - used) <= max(64, 0.02 * used),
                f"{reading.memory_used_bytes / MIB:.0f} MiB vs {used:.0f} MiB",
            )
        temp = number(row["temperature.gpu"])
        if reading.temperature_celsius is not None and temp is not None:
            check(
                f"gpu{reading.index} temperature",
                abs(reading.temperature_celsius - temp) <= 3,
                f"{reading.temperature_celsius} vs {temp} C",
            )
        power = number(row["power.draw"])
        if reading.power_watts is not None and power is not None:
            check(
                f"gpu{reading.index} power",
                abs(reading.power_watts - power) <= max(15.0, 0.15 * power),
                f"{reading.power_watts:.1f} W vs {power:.1f} W (power.draw.instant {row.get('power.draw.instant')})",
            )
        check(f"gpu{reading.index} energy counter readable", Field.ENERGY not in (state.unsupported if state else set()), str(unsupported))
    results["parity"] = {"driver": sampler.health.driver_version, "devices": devices}
    # cost of one sweep of all devices with the real library
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        sampler.sweep()
        times.append(time.perf_counter() - t0)
    times.sort()
    results["sweep_ms"] = {"p50": times[100] * 1e3, "p99": times[197] * 1e3, "gpus": len(snap.devices)}
    print(f"  sweep of {len(snap.devices)} GPU(s): p50 {times[100] * 1e3:.3f} ms, p99 {times[197] * 1e3:.3f} ms")
    # cost of each NVML read, to see where a sweep's time goes
    per_field = {}
    for method in ("utilization_percent", "memory_used_bytes", "temperature_celsius", "power_watts", "total_energy_joules"):
        calls = []
        for _ in range(100):
            t0 = time.perf_counter()
            getattr(backend, method)(0)
            calls.append(time.perf_counter() - t0)
        calls.sort()
        per_field[method] = {"p50_ms": calls[50] * 1e3, "p99_ms": calls[98] * 1e3}
    results["field_ms"] = per_field
    print("  per read (p50 ms): " + ", ".join(f"{k} {v['p50_ms']:.3f}" for k, v in per_field.items()))
    sampler.stop()


def burn(seconds: float, stop: threading.Event) -> str:
    try:
        import torch
    except ImportError:
        time.sleep(seconds)
        return "idle (no torch)"
    if not torch.cuda.is_available():
        time.sleep(seconds)
        return "idle (torch without CUDA)"
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end and not stop.is_set():
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        n += 20
    del a, b
    torch.cuda.empty_cache()
    return f"{n} bf16 8192^3 matrix products"


def energy(load_seconds: float) -> None:
    print(f"2. run energy: counter vs integrated power ({load_seconds:.0f} s load, 100 ms samples)")
    app = ExporterApp(ExporterConfig(grpc_address="127.0.0.1:0", metrics_address="127.0.0.1:0", backend="nvml"))
    addresses = app.start()
    stub = pb_grpc.GpuExporterStub(grpc.insecure_channel(addresses.grpc))
    start = stub.StartSampling(pb.StartSamplingRequest(run_id="gpu-check", interval_ms=100))
    check("StartSampling gpu_available", start.gpu_available, f"{len(start.devices)} device(s), method {start.energy_method}")
    samples: list[pb.Sample] = []

    def watch() -> None:
        for sample in stub.WatchRun(pb.WatchRunRequest(run_id="gpu-check")):
            samples.append(sample)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(2.0)  # idle baseline inside the run
    what = burn(load_seconds, threading.Event())
    time.sleep(2.0)  # cool-down tail inside the run
    summary = stub.StopSampling(pb.StopSamplingRequest(run_id="gpu-check"))
    watcher.join(timeout=5)
    app.stop()
    print(f"  load: {what}")
    per_device = []
    for dev in summary.devices:
        points = [
            (s.timestamp_unix_nano / 1e9, d.power_watts)
            for s in samples
            for d in s.devices
            if d.uuid == dev.uuid and d.HasField("power_watts")
        ]
        integrated = sum((p0 + p1) / 2 * (t1 - t0) for (t0, p0), (t1, p1) in itertools.pairwise(points))
        span = points[-1][0] - points[0][0] if len(points) > 1 else 0.0
        ratio = dev.energy_joules / integrated if integrated else float("nan")
        entry = {
            "uuid": dev.uuid,
            "energy_method": dev.energy_method,
            "counter_energy_j": dev.energy_joules,
            "integrated_power_j": integrated,
            "ratio_counter_over_integrated": ratio,
            "duration_s": dev.duration_seconds,
            "watch_span_s": span,
            "samples": dev.sample_count,
            "watch_samples": len(points),
            "power_avg_w": dev.power_watts.avg,
            "power_max_w": dev.power_watts.max,
            "utilization_max": dev.utilization_percent.max,
            "memory_used_max_mib": dev.memory_used_bytes.max / MIB,
            "co2_g": dev.co2_grams,
        }
        per_device.append(entry)
        print(
            f"  gpu{dev.index}: counter {dev.energy_joules:.1f} J, integrated power {integrated:.1f} J (ratio {ratio:.3f}), "
            f"{dev.sample_count} samples over {dev.duration_seconds:.2f} s, power avg {dev.power_watts.avg:.0f} W max "
            f"{dev.power_watts.max:.0f} W, util max {dev.utilization_percent.max:.0f} %, CO2 {dev.co2_grams:.3f} g"
        )
        check(f"gpu{dev.index} energy method", dev.energy_method == "counter", dev.energy_method)
        check(f"gpu{dev.index} counter vs integrated power", 0.85 <= ratio <= 1.15, f"ratio {ratio:.3f} (tolerance ±15 %)")
        expected_samples = dev.duration_seconds / 0.1 + 1
        check(
            f"gpu{dev.index} sample count",
            abs(dev.sample_count - expected_samples) <= 0.1 * expected_samples + 2,
            f"{dev.sample_count} vs ~{expected_samples:.0f}",
        )
    results["energy"] = {"load": what, "devices": per_device, "run_energy_j": summary.energy_joules, "run_co2_g": summary.co2_grams}


def cli_metrics() -> None:
    print("3. CLI with the real backend: /metrics")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smoltrace_gpu_exporter.cli",
            "--grpc-address",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
            "--idle-interval-ms",
            "500",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "gpu_exporter" / "src"), os.environ.get("PYTHONPATH", "")])},
    )
    try:
        ready = json.loads(proc.stdout.readline())
        time.sleep(1.0)
        text = urllib.request.urlopen(f"http://{ready['metrics']}/metrics", timeout=5).read().decode()
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        nvml_up = any(line.startswith("smoltrace_gpu_exporter_nvml_up 1") for line in lines)
        check("nvml_up", nvml_up and ready["nvml_up"], f"ready line {ready}")
        for name in (
            "smoltrace_gpu_utilization_ratio",
            "smoltrace_gpu_power_watts",
            "smoltrace_gpu_energy_joules_total",
            "smoltrace_gpu_temperature_celsius",
        ):
            count = sum(1 for line in lines if line.startswith(name + "{"))
            check(f"/metrics {name}", count == ready["gpus"] and count > 0, f"{count} series for {ready['gpus']} GPU(s)")
        results["metrics_sample"] = [line for line in lines if line.startswith("smoltrace_gpu_")][:40]
        t0 = time.monotonic()
        proc.terminate()
        rc = proc.wait(timeout=10)
        check("SIGTERM exit", rc == 0 and time.monotonic() - t0 < 5, f"rc {rc} in {time.monotonic() - t0:.2f} s")
    finally:
        if proc.poll() is None:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--load-seconds", type=float, default=20.0)
    args = parser.parse_args()
    if shutil.which("nvidia-smi") is None:
        print("no nvidia-smi here: nothing to check (run this on a GPU host)")
        return 2
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as err:
        print(f"NVML does not initialise here ({describe_error(err)}): nothing to check")
        return 2
    results["nvidia_smi_version"] = subprocess.run(["nvidia-smi", "--version"], capture_output=True, text=True).stdout.strip()
    for step in (parity, lambda: energy(args.load_seconds), cli_metrics):
        try:
            step()
        except Exception as err:  # noqa: BLE001 - report and go on to the next check
            check("step", False, f"{type(err).__name__}: {err}")
    results["failures"] = failures
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{'all checks passed' if not failures else f'{len(failures)} check(s) failed'}; figures in {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
