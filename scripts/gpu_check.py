"""`make gpu-check`: GPU attribution checked on a machine with a real NVIDIA GPU (issue 10).

Parts (each in its own process, under its own time limit; one failing never stops the others):
  shared   two, then three processes load GPU 0 at once, each with its own run against one exporter:
           the sum of the runs' energies against the device's own energy over the union of their
           windows (NVML energy counter polled at 20 Hz by this script).
  scoped   a run scoped with CUDA_VISIBLE_DEVICES (an index, resolved through torch; then a UUID
           prefix) through the runner's GpuSession and its embedded exporter: gpu_scope, the UUIDs
           sent, the devices in the summary, torch's UUIDs against NVML's.
  energy   one run sampled at 100 ms around a bf16 matmul load: the NVML energy counter against the
           trapezoid integral of the power samples WatchRun streamed.
  seed     the seed example end to end: `smoltrace-eval --provider transformers --model DIR
           --agent-type both --enable-otel` with the embedded exporter on real NVML: "GPU metrics:
           True", metrics.json with the four seed metrics and non-zero readings, per-task energy
           summing to the run's, GPU charts in report.html (copied to --out).
  parity   (not run by default) our NVML readings against nvidia-smi, and the cost of a sweep.
  batching (not run by default) batched local generation (issue 15): the same 16 executions of SmolLM2
           on CUDA with --parallel-workers 1, then 8: executions per second of the active phase,
           every row free of errors in both.

Usage:
  python scripts/gpu_check.py --model-dir PATH/SmolLM2-135M-Instruct --out DIR [--parts shared,scoped,energy,seed]
Writes DIR/gpu_check.json (one object: parts -> {ok, seconds, checks, figures, error}) and
DIR/report.html (the seed run's report). Whole script < 6 minutes: limits per part are below.
Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = [ROOT / "runner" / "src", ROOT / "gpu_exporter" / "src", ROOT / "proto" / "src"]
MIB = 1024 * 1024
SEED_METRICS = ("gen_ai.gpu.utilization", "gen_ai.gpu.memory.used", "gen_ai.gpu.temperature", "gen_ai.co2.emissions")
# seconds per part; the sum (+ a few seconds of start-up each) stays under 6 minutes
LIMITS = {"shared": 95.0, "scoped": 50.0, "energy": 40.0, "seed": 150.0, "parity": 40.0, "batching": 170.0}
DEFAULT_PARTS = ("shared", "scoped", "energy", "seed")


def child_env(**extra: str) -> dict[str, str]:
    """This tree's sources first on PYTHONPATH (the lead's wheels stay after them)."""
    paths = [str(p) for p in SOURCE_DIRS if p.is_dir()]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    for key in ("SMOLTRACE_GPU_EXPORTER", "SMOLTRACE_GPUS", "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        env.pop(key, None)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_OFFLINE_MODE="true",
        TOKENIZERS_PARALLELISM="false",
        GENAI_ENABLE_GPU_METRICS="false",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
    )
    env.update(extra)
    return env


# -- the orchestrator ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    name: str
    command: list[str]
    limit_s: float
    env: dict[str, str] | None = None


def run_parts(parts: Sequence[Part], out: Path) -> dict[str, Any]:
    """Each part in its own process under its own limit; it writes out/part-NAME.json. A part that
    fails, crashes or runs out of time is recorded as such, and the next one runs."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for part in parts:
        target = out / f"part-{part.name}.json"
        target.unlink(missing_ok=True)
        print(f"== {part.name} (limit {part.limit_s:.0f} s)", flush=True)
        t0 = time.monotonic()
        entry: dict[str, Any]
        try:
            proc = subprocess.run(
                part.command, env=part.env, timeout=part.limit_s, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
            )
            tail = (proc.stdout + proc.stderr)[-3000:]
            if target.exists():
                entry = json.loads(target.read_text("utf-8"))
            else:
                entry = {"ok": False, "error": f"exited {proc.returncode} without a result", "log_tail": tail}
            entry.setdefault("log_tail", tail if not entry.get("ok") else "")
        except subprocess.TimeoutExpired as err:
            partial = json.loads(target.read_text("utf-8")) if target.exists() else {}
            entry = {**partial, "ok": False, "error": f"ran past its limit of {part.limit_s:.0f} s", "log_tail": _text(err.stdout)[-2000:]}
        except Exception as err:  # noqa: BLE001 - recorded; the next part runs
            entry = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        entry["seconds"] = round(time.monotonic() - t0, 1)
        results[part.name] = entry
        print(f"   {'PASS' if entry.get('ok') else 'FAIL'} in {entry['seconds']} s {entry.get('error') or ''}", flush=True)
        for check in entry.get("checks", []):
            print(f"   [{'PASS' if check['ok'] else 'FAIL'}] {check['name']}: {check['detail']}", flush=True)
    return results


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


class Result:
    """What one part reports: checks, figures, an error; written after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"ok": False, "checks": [], "figures": {}, "error": None}
        self.save()

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.data["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        self.save()
        return ok

    def figure(self, key: str, value: Any) -> None:
        self.data["figures"][key] = value
        self.save()

    def finish(self, error: str | None = None) -> None:
        self.data["error"] = error
        self.data["ok"] = error is None and bool(self.data["checks"]) and all(c["ok"] for c in self.data["checks"])
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str), "utf-8")
        tmp.replace(self.path)


# -- GPU load ------------------------------------------------------------------------------------
def burn(seconds: float, device: int = 0) -> str:
    try:
        import torch
    except ImportError:
        time.sleep(seconds)
        return "idle (no torch)"
    if not torch.cuda.is_available():
        time.sleep(seconds)
        return "idle (torch without CUDA)"
    a = torch.randn(8192, 8192, device=f"cuda:{device}", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=f"cuda:{device}", dtype=torch.bfloat16)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        n += 10
    del a, b
    torch.cuda.empty_cache()
    return f"{n} bf16 8192^3 matrix products"


def nvml_uuid(handle: Any) -> str:
    import pynvml

    value = pynvml.nvmlDeviceGetUUID(handle)
    return value.decode() if isinstance(value, bytes) else str(value)


class CounterPoller:
    """The device's NVML energy counter (mJ) read at ~20 Hz with wall-clock times."""

    def __init__(self, handle: Any, period_s: float = 0.05) -> None:
        self.handle = handle
        self.points: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._period = period_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import pynvml

        while not self._stop.is_set():
            t = time.time()
            joules = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0
            self.points.append(((t + time.time()) / 2, joules))
            self._stop.wait(self._period)

    def __enter__(self) -> CounterPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def at(self, t: float) -> float:
        """Counter at wall time t, interpolated linearly."""
        pts = self.points
        if not pts:
            return float("nan")
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, e0), (t1, e1) in itertools.pairwise(pts):
            if t0 <= t <= t1:
                return e0 + (e1 - e0) * (t - t0) / (t1 - t0) if t1 > t0 else e0
        return pts[-1][1]


# -- part: shared --------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> int:
    """One of the overlapping processes: CUDA up, wait for 'go', then its own run around a load."""
    import grpc
    import torch

    from smoltrace_proto import pb, pb_grpc

    torch.ones(1, device="cuda")  # CUDA context before the run starts
    Path(args.ready_file).write_text("ready")
    deadline = time.monotonic() + 60
    while not Path(args.go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(args.delay)
    stub = pb_grpc.GpuExporterStub(grpc.insecure_channel(args.address))
    reply = stub.StartSampling(pb.StartSamplingRequest(run_id=args.run_id, interval_ms=100, gpu_uuids=[args.uuid]), timeout=10)
    request = pb.StopSamplingRequest(run_id=args.run_id)
    if "run_secret" in pb.StopSamplingRequest.DESCRIPTOR.fields_by_name and getattr(reply, "run_secret", ""):
        request = pb.StopSamplingRequest(run_id=args.run_id, run_secret=reply.run_secret)
    burn(args.seconds)
    summary = stub.StopSampling(request, timeout=15)
    devices = [
        {f: getattr(d, f) for f in ("uuid", "energy_joules", "energy_method", "duration_seconds")}
        | {k: getattr(d, k) for k in ("exclusive_seconds", "shared_seconds", "split_method") if hasattr(d, k)}
        for d in summary.devices
    ]
    print(
        json.dumps(
            {
                "run_id": args.run_id,
                "energy_joules": summary.energy_joules,
                "start_unix_ms": summary.start_unix_ms,
                "end_unix_ms": summary.end_unix_ms,
                "devices": devices,
            }
        ),
        flush=True,
    )
    return 0


def part_shared(result: Result, args: argparse.Namespace) -> None:
    import pynvml

    from smoltrace_gpu_exporter.app import ExporterApp
    from smoltrace_gpu_exporter.config import ExporterConfig

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    uuid = nvml_uuid(handle)
    app = ExporterApp(ExporterConfig(grpc_address="127.0.0.1:0", metrics_address="127.0.0.1:0", backend="nvml", log_level="WARNING"))
    address = app.start().grpc
    try:
        for k in (2, 3):
            with tempfile.TemporaryDirectory() as tmp, CounterPoller(handle) as poller:
                go = Path(tmp) / "go"
                procs = []
                for i in range(k):
                    command = [
                        sys.executable, __file__, "--worker", "--address", address, "--run-id", f"gpu-check-shared-{k}-{i}",
                        "--uuid", uuid, "--delay", str(1.5 * i), "--seconds", str(args.shared_seconds),
                        "--ready-file", str(Path(tmp) / f"ready-{i}"), "--go-file", str(go),
                    ]  # fmt: skip
                    procs.append(subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline and not all((Path(tmp) / f"ready-{i}").exists() for i in range(k)):
                    time.sleep(0.05)
                go.write_text("go")
                runs = []
                for proc in procs:
                    stdout, stderr = proc.communicate(timeout=60)
                    lines = [line for line in stdout.splitlines() if line.startswith("{")]
                    if proc.returncode != 0 or not lines:
                        raise RuntimeError(f"worker failed ({proc.returncode}): {stderr[-800:]}")
                    runs.append(json.loads(lines[-1]))
                time.sleep(0.2)
            start = min(r["start_unix_ms"] for r in runs) / 1000
            end = max(r["end_unix_ms"] for r in runs) / 1000
            device_j = poller.at(end) - poller.at(start)
            runs_j = sum(r["energy_joules"] for r in runs)
            ratio = runs_j / device_j if device_j else float("nan")
            result.figure(
                f"overlap_{k}",
                {"runs": runs, "union_s": end - start, "device_energy_j": device_j, "sum_run_energy_j": runs_j, "ratio": ratio},
            )
            result.check(
                f"{k} overlapping runs: sum of run energies / device energy",
                0.9 <= ratio <= 1.1,
                f"{ratio:.3f} ({runs_j:.1f} J / {device_j:.1f} J)",
            )
    finally:
        app.stop()
        pynvml.nvmlShutdown()


# -- part: scoped --------------------------------------------------------------------------------
def part_scoped(result: Result, args: argparse.Namespace) -> None:
    import pynvml

    pynvml.nvmlInit()
    count = pynvml.nvmlDeviceGetCount()
    nvml = [nvml_uuid(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    pynvml.nvmlShutdown()
    target = count - 1  # the last GPU: on a multi-GPU host, not the default one
    os.environ["CUDA_VISIBLE_DEVICES"] = str(target)  # before torch sees CUDA
    os.environ.pop("CUDA_DEVICE_ORDER", None)
    import torch

    from smoltrace.gpu import GpuDecision, GpuSession
    from smoltrace.gpu_scope import ScopeInputs, torch_visible_uuids

    torch.ones(1, device="cuda")
    seen = torch_visible_uuids()
    result.figure("nvml_uuids", nvml)
    result.figure("torch_uuids", seen)
    result.check("torch's UUID is NVML's", seen == [nvml[target]], f"torch {seen} vs NVML {nvml[target]}")
    session = GpuSession(
        GpuDecision(True, "gpu-check"), "gpu-check-scoped", scope_inputs=ScopeInputs.read(None, os.environ), interval_ms=200
    )
    session.open()
    session.start(otlp_endpoint="")
    load = burn(args.load_seconds / 2)
    report = session.stop()
    result.figure("scope", report.scope)
    result.figure("summary_devices", [(d.get("uuid"), d.get("energy_joules")) for d in (report.summary or {}).get("devices", [])])
    result.figure("load", load)
    result.check("scope source", bool(report.scope) and report.scope["source"] == "cuda_visible_devices", str(report.scope))
    result.check("scope UUIDs", bool(report.scope) and report.scope["uuids"] == [nvml[target]], str(report.scope))
    devices = [d["uuid"] for d in (report.summary or {}).get("devices", [])]
    result.check("summary measures that GPU only", devices == [nvml[target]], f"{devices} ({report.warning})")
    energy = float((report.summary or {}).get("energy_joules", 0.0))
    result.check("run energy > 0", energy > 0, f"{energy:.1f} J")
    prefix = nvml[target][:12]
    second = GpuSession(
        GpuDecision(True, "gpu-check"), "gpu-check-prefix", scope_inputs=ScopeInputs.read(None, {"CUDA_VISIBLE_DEVICES": prefix})
    )
    second.open()
    second.stop()
    result.check(
        f"CUDA_VISIBLE_DEVICES={prefix} (a UUID prefix)",
        bool(second.report.scope) and second.report.scope["uuids"] == [nvml[target]],
        str(second.report.scope),
    )


# -- part: energy --------------------------------------------------------------------------------
def part_energy(result: Result, args: argparse.Namespace) -> None:
    import grpc

    from smoltrace_gpu_exporter.app import ExporterApp
    from smoltrace_gpu_exporter.config import ExporterConfig
    from smoltrace_proto import pb, pb_grpc

    app = ExporterApp(ExporterConfig(grpc_address="127.0.0.1:0", metrics_address="127.0.0.1:0", backend="nvml", log_level="WARNING"))
    stub = pb_grpc.GpuExporterStub(grpc.insecure_channel(app.start().grpc))
    try:
        start = stub.StartSampling(pb.StartSamplingRequest(run_id="gpu-check-energy", interval_ms=100), timeout=10)
        result.check("StartSampling gpu_available", start.gpu_available, f"{len(start.devices)} device(s), method {start.energy_method}")
        samples: list[Any] = []

        def watch() -> None:
            request = pb.WatchRunRequest(run_id="gpu-check-energy")
            if "run_secret" in pb.WatchRunRequest.DESCRIPTOR.fields_by_name and getattr(start, "run_secret", ""):
                request = pb.WatchRunRequest(run_id="gpu-check-energy", run_secret=start.run_secret)
            samples.extend(stub.WatchRun(request))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        time.sleep(1.0)
        what = burn(args.load_seconds)
        time.sleep(1.0)
        stop = pb.StopSamplingRequest(run_id="gpu-check-energy")
        if "run_secret" in pb.StopSamplingRequest.DESCRIPTOR.fields_by_name and getattr(start, "run_secret", ""):
            stop = pb.StopSamplingRequest(run_id="gpu-check-energy", run_secret=start.run_secret)
        summary = stub.StopSampling(stop, timeout=15)
        watcher.join(timeout=5)
    finally:
        app.stop()
    result.figure("load", what)
    for dev in summary.devices:
        points = [
            (s.timestamp_unix_nano / 1e9, d.power_watts)
            for s in samples
            for d in s.devices
            if d.uuid == dev.uuid and d.HasField("power_watts")
        ]
        integrated = sum((p0 + p1) / 2 * (t1 - t0) for (t0, p0), (t1, p1) in itertools.pairwise(points))
        ratio = dev.energy_joules / integrated if integrated else float("nan")
        result.figure(
            f"gpu{dev.index}",
            {
                "uuid": dev.uuid,
                "energy_method": dev.energy_method,
                "counter_energy_j": dev.energy_joules,
                "integrated_power_j": integrated,
                "ratio_counter_over_integrated": ratio,
                "duration_s": dev.duration_seconds,
                "samples": dev.sample_count,
                "watch_samples": len(points),
                "power_avg_w": dev.power_watts.avg,
                "power_max_w": dev.power_watts.max,
                "utilization_max": dev.utilization_percent.max,
            },
        )
        result.check(f"gpu{dev.index} energy method", dev.energy_method == "counter", dev.energy_method)
        result.check(f"gpu{dev.index} counter vs integrated power", 0.85 <= ratio <= 1.15, f"ratio {ratio:.3f} (±15 %)")


# -- part: seed ----------------------------------------------------------------------------------
def part_seed(result: Result, args: argparse.Namespace) -> None:
    if not args.model_dir or not (Path(args.model_dir) / "config.json").is_file():
        raise RuntimeError(f"--model-dir {args.model_dir!r} is not a transformers model folder (no config.json)")
    out = Path(args.out) / "seed-run"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, "-m", "smoltrace.cli", "--provider", "transformers", "--model", str(args.model_dir), "--agent-type", "both",
        "--enable-otel", "--limit", "2", "--max-steps", "2", "--model-args", f"max_new_tokens={args.max_new_tokens}", "--output-dir", str(out),
        "--output-format", "json", "--quiet",
    ]  # fmt: skip
    result.figure("command", " ".join(command))
    t0 = time.monotonic()
    proc = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=LIMITS["seed"] - 15, check=False)
    result.figure("wall_s", round(time.monotonic() - t0, 1))
    result.figure("stdout_tail", proc.stdout[-2500:])
    result.figure("stderr_tail", proc.stderr[-2500:])
    result.check("exit code 0", proc.returncode == 0, str(proc.returncode))
    result.check('"GPU metrics: True"', "[OK] genai_otel_instrument enabled (GPU metrics: True)" in proc.stdout, "console line")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    meta = json.loads((run_dir / "metadata.json").read_text("utf-8"))
    gpu = meta.get("gpu_metrics") or {}
    summary = gpu.get("summary") or {}
    result.figure("gpu_scope", meta.get("gpu_scope"))
    result.figure(
        "gpu_summary",
        {k: summary.get(k) for k in ("energy_joules", "co2_grams", "duration_seconds", "sample_count", "energy_method", "simulated")},
    )
    result.check(
        "embedded exporter on real NVML",
        bool(gpu.get("embedded_exporter")) and summary.get("gpu_available") and not summary.get("simulated"),
        str(gpu.get("warning")),
    )
    result.check(
        "scoped to where the model was placed", (meta.get("gpu_scope") or {}).get("source") == "model_placement", str(meta.get("gpu_scope"))
    )
    metrics = json.loads((run_dir / "metrics.json").read_text("utf-8"))
    found: dict[str, float] = {}
    for rm in metrics.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                points = (metric.get("gauge") or metric.get("sum") or {}).get("dataPoints", [])
                values = [float(p.get("asDouble", p.get("asInt", 0)) or 0) for p in points]
                if values:
                    found[metric["name"]] = max(found.get(metric["name"], 0.0), max(values))
    result.figure("metrics_max", found)
    for name in SEED_METRICS:
        result.check(f"metrics.json {name} non-zero", found.get(name, 0.0) > 0, str(found.get(name)))
    rows = json.loads((run_dir / "results.json").read_text("utf-8"))
    per_task = sum(float(r.get("energy_j") or 0.0) for r in rows)
    total = float(summary.get("energy_joules") or 0.0)
    ratio = per_task / total if total else float("nan")
    result.figure("per_task_energy", {"sum_j": per_task, "run_j": total, "ratio": ratio, "rows": len(rows)})
    result.check(
        "per-task energy sums to the run's", total > 0 and abs(ratio - 1) <= 0.02, f"{per_task:.1f} J / {total:.1f} J = {ratio:.3f}"
    )
    report = run_dir / "report.html"
    html = report.read_text("utf-8") if report.exists() else ""
    result.check("report has GPU charts", '<div class="gpu">' in html and "<svg" in html, f"{len(html)} bytes")
    if report.exists():
        shutil.copyfile(report, Path(args.out) / "report.html")


# -- part: parity (optional) ---------------------------------------------------------------------
def part_parity(result: Result, args: argparse.Namespace) -> None:
    from smoltrace_gpu_exporter.nvml import PynvmlBackend
    from smoltrace_gpu_exporter.sampler import Sampler

    fields = "index,uuid,name,memory.total,power.draw"
    smi = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    rows = {r[1]: r for r in (list(map(str.strip, line.split(","))) for line in smi.strip().splitlines())}
    sampler = Sampler(PynvmlBackend())
    snap = sampler.sweep()
    for reading in snap.devices:
        row = rows.get(reading.uuid)
        result.check(f"gpu{reading.index} known to nvidia-smi", row is not None, reading.uuid)
        if row:
            result.check(f"gpu{reading.index} name", reading.name == row[2], f"{reading.name!r} vs {row[2]!r}")
    times = []
    for _ in range(100):
        t0 = time.perf_counter()
        sampler.sweep()
        times.append(time.perf_counter() - t0)
    times.sort()
    result.figure("sweep_ms_p50", times[50] * 1e3)
    sampler.stop()


# -- part: batching (optional) -------------------------------------------------------------------
def part_batching(result: Result, args: argparse.Namespace) -> None:
    if not args.model_dir or not (Path(args.model_dir) / "config.json").is_file():
        raise RuntimeError(f"--model-dir {args.model_dir!r} is not a transformers model folder (no config.json)")
    speeds: dict[int, float] = {}
    for workers in (1, 8):
        out = Path(args.out) / f"batching-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        command = [
            sys.executable, "-m", "smoltrace.cli", "--provider", "transformers", "--model", str(args.model_dir), "--agent-type", "both",
            "--limit", "8", "--max-steps", "2", "--model-args", "max_new_tokens=48", "--parallel-workers", str(workers),
            "--disable-gpu-metrics", "--output-dir", str(out), "--output-format", "json", "--quiet",
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=75, check=False)
        wall = round(time.monotonic() - t0, 1)
        result.check(f"{workers} worker(s): exit code 0", proc.returncode == 0, f"{proc.returncode} {proc.stderr[-800:]}")
        (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
        meta = json.loads((run_dir / "metadata.json").read_text("utf-8"))
        rows = json.loads((run_dir / "results.json").read_text("utf-8"))
        errors = [r.get("error") for r in rows if r.get("error")]
        active = float((meta.get("timings") or {}).get("active_s") or 0.0)
        speeds[workers] = len(rows) / active if active else 0.0
        result.figure(
            f"workers_{workers}",
            {"executions": len(rows), "errors": len(errors), "passed": sum(bool(r.get("success")) for r in rows), "active_s": active,
             "wall_s": wall, "executions_per_s": round(speeds[workers], 3), "first_errors": errors[:3]},
        )  # fmt: skip
        result.check(f"{workers} worker(s): 16 executions, none failed", len(rows) == 16 and not errors, f"{len(rows)} rows, {errors[:2]}")
    if speeds.get(1):
        result.figure("speedup_8_vs_1", round(speeds[8] / speeds[1], 2))


PARTS: dict[str, Callable[[Result, argparse.Namespace], None]] = {
    "shared": part_shared,
    "scoped": part_scoped,
    "energy": part_energy,
    "seed": part_seed,
    "parity": part_parity,
    "batching": part_batching,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_check.py", description="GPU attribution on a real NVIDIA GPU (issue 10): shared, scoped, energy, seed."
    )
    parser.add_argument("--model-dir", help="the demo model folder (scripts/prepare_demo_model.py) for the seed part")
    parser.add_argument("--out", default="gpu-check-out", help="folder for gpu_check.json and report.html (default ./gpu-check-out)")
    parser.add_argument(
        "--parts", default=",".join(DEFAULT_PARTS), help=f"comma-separated, from {', '.join(PARTS)} (default {','.join(DEFAULT_PARTS)})"
    )
    parser.add_argument("--load-seconds", type=float, default=10.0, help="GPU load of the energy part (default 10)")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="generation length of the seed run (default 160, as make demo)")
    parser.add_argument("--shared-seconds", type=float, default=8.0, help="each overlapping run's load (default 8)")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # internal: run one part here
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--address", "--run-id", "--uuid", "--ready-file", "--go-file"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=8.0, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        parser.error(f"--parts: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(PARTS)}")
    args.part_names = names
    if sum(LIMITS[n] for n in names) > 340:
        parser.error("these parts would run past 6 minutes together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.part:
        result = Result(out / f"part-{args.part}.json")
        try:
            PARTS[args.part](result, args)
            result.finish()
        except Exception as err:  # noqa: BLE001 - recorded in the JSON
            result.finish(f"{type(err).__name__}: {err}")
        return 0
    passthrough = ["--out", str(out), "--load-seconds", str(args.load_seconds), "--shared-seconds", str(args.shared_seconds)]
    passthrough += ["--max-new-tokens", str(args.max_new_tokens)]
    if args.model_dir:
        passthrough += ["--model-dir", str(Path(args.model_dir).resolve())]
    parts = [Part(n, [sys.executable, __file__, "--part", n, *passthrough], LIMITS[n], child_env()) for n in args.part_names]
    t0 = time.monotonic()
    results = run_parts(parts, out)
    summary = {
        "ok": all(r.get("ok") for r in results.values()),
        "seconds": round(time.monotonic() - t0, 1),
        "host": os.uname().nodename,
        "nvidia_smi": _nvidia_smi(),
        "parts": results,
    }
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str), "utf-8")
    print(f"{'all parts passed' if summary['ok'] else 'some parts failed'} in {summary['seconds']} s; {out / 'gpu_check.json'}")
    return 0 if summary["ok"] else 1


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
