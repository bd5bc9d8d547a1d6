"""Side by side with SMOLTRACE 0.2.12: the same fake OpenAI-compatible server, tasks and settings.

Both harnesses run as processes against one `FakeOpenAIServer` (50 ms per reply) on the bench
tasks (24 tasks x tool and code agents = 48 executions, 2 model calls each), 8 workers,
`--enable-otel`, the litellm provider. SMOLTRACE lives in its own virtual environment, built
once under `.cache/bench/` (`smoltrace==0.2.12 smolagents==1.26.0 litellm==1.110.2`, with
`torch==2.13.0` as a constraint so nothing can pull a CUDA build); when it cannot be built the
comparison is skipped with the reason and our own figures are still measured.

Measured from outside each process:
- whole process: spawn to exit;
- start-up: spawn to the first model request the server sees;
- active phase: first request to last reply, against the ideal (calls x latency / workers);
- teardown: last reply to exit;
- CPU per model call: CPU time of the process tree during the active phase / model calls
  (sampled every 20 ms);
- peak RSS: the process's own high-water mark (VmHWM in /proc/PID/status, read every 20 ms; it
  only grows, so the last read holds the peak up to ~20 ms before exit). Not wait4's ru_maxrss:
  Linux carries the parent's high-water mark into a child across fork/vfork + exec, so once the
  bench process had grown to ~380 MB every child it spawned "peaked" at ~380 MB;
- torch: whether libtorch was ever mapped into the process (/proc/PID/maps).

Ours also runs once without --enable-otel: its CPU per call, RSS and teardown are printed next to
the targets (no target of their own) to show what tracing costs and what is left without it.

Run: python -m tests.bench.bench_vs_smoltrace [--repeat N] [--no-smoltrace]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.fakes.chat_servers import FakeOpenAIServer

from .bench_runner import BenchScript, write_tasks

NAME = "smoltrace"
ROOT = Path(__file__).resolve().parents[2]
SMOLTRACE_PINS = ("smoltrace==0.2.12", "smolagents==1.26.0", "litellm==1.110.2")
TORCH_CONSTRAINT = "torch==2.13.0"
VENV = ROOT / ".cache" / "bench" / "smoltrace-0.2.12"
STAMP = VENV / ".smoltrace-bench-installed"
WORKERS = 8
LATENCY_S = 0.05

# targets (issue 15)
WALL_RATIO = 0.6
STARTUP_RATIO = 0.8
ACTIVE_OVER_IDEAL = 1.2
CPU_PER_CALL_MS = 10.0
PEAK_RSS_MB = 250.0
TEARDOWN_S = 0.3


# -- SMOLTRACE's virtual environment ----------------------------------------------------------
def smoltrace_python(build: bool = True, log: Any = print) -> tuple[Path | None, str]:
    """The interpreter of the SMOLTRACE venv (built on first use), or None and why not."""
    python = VENV / "bin" / "python"
    wanted = "\n".join((*SMOLTRACE_PINS, TORCH_CONSTRAINT))
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python, ""
    if not build:
        return None, f"no SMOLTRACE venv at {VENV}"
    log(f"   building the SMOLTRACE venv at {VENV} ({' '.join(SMOLTRACE_PINS)}, -c {TORCH_CONSTRAINT}); once, a few minutes")
    try:
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys._base_executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True, timeout=300)  # type: ignore[attr-defined]
        constraints = VENV / "constraints.txt"
        constraints.write_text(TORCH_CONSTRAINT + "\n")
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *SMOLTRACE_PINS],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            tail = [line for line in proc.stderr.splitlines() if line.strip() and "is ignored" not in line][-3:]
            return None, f"pip install failed ({proc.returncode}): {' | '.join(tail)}"
        check = subprocess.run(
            [str(python), "-c", "import smoltrace.cli, smolagents, litellm"], capture_output=True, text=True, timeout=300
        )
        if check.returncode != 0:
            return None, f"SMOLTRACE does not import: {check.stderr.strip().splitlines()[-1:]}"
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"could not build the SMOLTRACE venv: {type(err).__name__}: {err}"
    STAMP.write_text(wanted)
    return python, ""


# -- measuring one process --------------------------------------------------------------------
@dataclass
class Measured:
    harness: str
    executions: int
    model_calls: int
    wall_s: float
    startup_s: float
    active_s: float
    ideal_s: float
    teardown_s: float
    cpu_active_s: float
    peak_rss_mb: float
    torch_loaded: bool
    exit_code: int

    @property
    def active_over_ideal(self) -> float:
        return self.active_s / self.ideal_s if self.ideal_s else float("nan")

    @property
    def cpu_per_call_ms(self) -> float:
        return 1000.0 * self.cpu_active_s / self.model_calls if self.model_calls else float("nan")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"active_over_ideal": self.active_over_ideal, "cpu_per_call_ms": self.cpu_per_call_ms}


class _Sampler(threading.Thread):
    """CPU time of a process and its children and its peak RSS every 20 ms; whether libtorch is mapped."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.torch_loaded = False
        self.peak_rss_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        n = 0
        while not self.stop.is_set():
            now = time.perf_counter()
            try:
                cpu = _tree_cpu(proc)
            except psutil.Error:
                return
            self.samples.append((now, cpu))
            self.peak_rss_kb = max(self.peak_rss_kb, _hwm_kb(self.pid))
            if n % 10 == 0 and not self.torch_loaded:
                self.torch_loaded = _maps_torch(self.pid)
            n += 1
            self.stop.wait(0.02)

    def cpu_between(self, start: float, end: float) -> float:
        before = [c for t, c in self.samples if t <= start]
        after = [c for t, c in self.samples if t >= end]
        first = before[-1] if before else (self.samples[0][1] if self.samples else 0.0)
        last = after[0] if after else (self.samples[-1][1] if self.samples else 0.0)
        return max(0.0, last - first)


def _tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _hwm_kb(pid: int) -> int:
    """The process's resident-set high-water mark (kB), 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _maps_torch(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as handle:
            return any("libtorch" in line for line in handle)
    except OSError:
        return False


def measure(harness: str, cmd: list[str], env: dict[str, str], script: BenchScript, cwd: Path, workers: int) -> Measured:
    log = cwd / f"{harness}.log"
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        sampler = _Sampler(proc.pid)
        sampler.start()
        try:
            _, status = os.waitpid(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        end = time.perf_counter()
        proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop.set()
    sampler.join(timeout=2)
    if proc.returncode != 0 or script.first_request is None or script.last_reply is None:
        tail = log.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{harness} failed (exit {proc.returncode}, {script.requests} model requests):\n{tail}")
    first, last = script.first_request, script.last_reply
    return Measured(
        harness=harness,
        executions=script.executions,
        model_calls=script.requests,
        wall_s=end - t0,
        startup_s=first - t0,
        active_s=last - first,
        ideal_s=script.requests * script.latency_s / workers,
        teardown_s=end - last,
        cpu_active_s=sampler.cpu_between(first, last),
        peak_rss_mb=sampler.peak_rss_kb / 1024.0,
        torch_loaded=sampler.torch_loaded,
        exit_code=proc.returncode,
    )


class CountingScript(BenchScript):
    """BenchScript that also counts executions (conversations that reached their last turn)."""

    def __init__(self, latency_s: float) -> None:
        super().__init__(latency_s)
        self.executions = 0

    def next_turn(self, messages: list[dict[str, Any]]) -> Any:
        if any(m.get("role") == "assistant" for m in messages):
            with self._lock:
                self.executions += 1
        return super().next_turn(messages)


def _env(api_base: str) -> dict[str, str]:
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-fake",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GENAI_ENABLE_GPU_METRICS": "false",
        "OTEL_EXPORTER_OTLP_TIMEOUT": os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "2"),
    }
    env.pop("PYTHONPATH", None)
    # as a user's install runs: bytecode cached after the first run (SMOLTRACE's pip install compiled
    # its own; an environment that forbids writing it would make ours compile its sources every run)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_ours(tasks: Path, tmp: Path, workers: int = WORKERS, latency_s: float = LATENCY_S, otel: bool = True) -> Measured:
    script = CountingScript(latency_s)
    server = FakeOpenAIServer(script).start()
    try:
        cmd = [
            sys.executable,
            "-m",
            "smoltrace.cli",
            "--model",
            "openai/fake",
            "--provider",
            "litellm",
            "--api-base",
            server.api_base,
            "--dataset-name",
            str(tasks),
            "--parallel-workers",
            str(workers),
            "--output-format",
            "json",
            "--output-dir",
            str(tmp / "ours-out"),
            *(["--enable-otel"] if otel else []),
            "--quiet",
        ]
        return measure("smoltrace (ours)" if otel else "smoltrace (ours, no otel)", cmd, _env(server.api_base), script, tmp, workers)
    finally:
        server.stop()


def run_smoltrace(python: Path, tasks: Path, tmp: Path, workers: int = WORKERS, latency_s: float = LATENCY_S) -> Measured:
    script = CountingScript(latency_s)
    server = FakeOpenAIServer(script).start()
    try:
        env = _env(server.api_base) | {"OPENAI_API_BASE": server.api_base, "OPENAI_BASE_URL": server.api_base}
        cmd = [
            str(python),
            "-c",
            "import sys; from smoltrace.cli import main; sys.exit(main())",
            "--model",
            "openai/fake",
            "--provider",
            "litellm",
            "--dataset-name",
            str(tasks),
            "--parallel-workers",
            str(workers),
            "--output-format",
            "json",
            "--output-dir",
            str(tmp / "smoltrace-out"),
            "--enable-otel",
            "--quiet",
        ]
        return measure("SMOLTRACE 0.2.12", cmd, env, script, tmp, workers)
    finally:
        server.stop()


def _median(runs: list[Measured]) -> Measured:
    """The run with the median whole-process time (a real run, not a mix of runs)."""
    ordered = sorted(runs, key=lambda m: m.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def compare(repeat: int = 1, with_smoltrace: bool = True, log: Any = print) -> dict[str, Any]:
    data: dict[str, Any] = {"workers": WORKERS, "latency_ms": LATENCY_S * 1000, "repeat": repeat}
    python, why = smoltrace_python(log=log) if with_smoltrace else (None, "skipped (--no-smoltrace)")
    if python is None:
        log(f"   SMOLTRACE comparison skipped: {why}")
        data["smoltrace_skipped"] = why
    ours: list[Measured] = []
    theirs: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="smoltrace-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tasks = tmp / "bench_tasks.jsonl"
        write_tasks(tasks)
        for i in range(repeat):  # alternate, so machine load drifts hit both alike
            if python is not None:
                theirs.append(run_smoltrace(python, tasks, tmp))
                log(f"   SMOLTRACE run {i + 1}: {_line(theirs[-1])}")
            ours.append(run_ours(tasks, tmp))
            log(f"   ours      run {i + 1}: {_line(ours[-1])}")
        # what tracing costs: the same run of ours without --enable-otel (for reference, no target)
        untraced = run_ours(tasks, tmp, otel=False)
        log(f"   ours without --enable-otel: {_line(untraced)}")
    data["ours_without_otel"] = untraced.to_json()
    data["ours"] = _median(ours).to_json()
    data["ours_runs"] = [m.to_json() for m in ours]
    if theirs:
        data["smoltrace"] = _median(theirs).to_json()
        data["smoltrace_runs"] = [m.to_json() for m in theirs]
    return data


def _line(m: Measured) -> str:
    return (
        f"{m.executions} executions, {m.model_calls} calls; wall {m.wall_s:.2f} s, start-up {m.startup_s:.2f} s, "
        f"active {m.active_s:.2f} s ({m.active_over_ideal:.2f}x ideal), teardown {m.teardown_s:.2f} s, "
        f"CPU/call {m.cpu_per_call_ms:.1f} ms, peak RSS {m.peak_rss_mb:.0f} MB, torch {'loaded' if m.torch_loaded else 'not loaded'}"
    )


def run(repeat: int = 1, with_smoltrace: bool = True) -> Any:
    """For run_all: every target with its measured value and ratio."""
    from ._harness import Metric, Result

    result = Result(NAME, f"ours vs SMOLTRACE 0.2.12: {WORKERS} workers, {LATENCY_S * 1000:g} ms/reply, --enable-otel, litellm")
    data = compare(repeat, with_smoltrace)
    ours = data["ours"]
    theirs = data.get("smoltrace")

    def ratio(label: str, key: str, limit: float) -> None:
        if theirs is None:
            result.metrics.append(Metric(f"{label} ours (SMOLTRACE skipped)", ours[key], "s"))
            return
        r = ours[key] / theirs[key]
        result.metrics.append(
            Metric(f"{label} ours {ours[key]:.2f} s / SMOLTRACE {theirs[key]:.2f} s", r, "x", f"<= {limit:g} x", r <= limit)
        )

    ratio("whole process", "wall_s", WALL_RATIO)
    ratio("start-up", "startup_s", STARTUP_RATIO)
    torch = 1.0 if ours["torch_loaded"] else 0.0
    result.metrics.append(Metric("torch imported by an API-model run (1 = yes)", torch, "", "= 0", not ours["torch_loaded"]))
    result.metrics.append(
        Metric(
            f"active {ours['active_s']:.2f} s / ideal {ours['ideal_s']:.2f} s",
            ours["active_over_ideal"],
            "x",
            f"<= {ACTIVE_OVER_IDEAL:g} x",
            ours["active_over_ideal"] <= ACTIVE_OVER_IDEAL,
        )
    )
    result.metrics.append(
        Metric(
            "CPU per model call", ours["cpu_per_call_ms"], "ms", f"<= {CPU_PER_CALL_MS:g} ms", ours["cpu_per_call_ms"] <= CPU_PER_CALL_MS
        )
    )
    result.metrics.append(Metric("peak RSS", ours["peak_rss_mb"], "MB", f"<= {PEAK_RSS_MB:g} MB", ours["peak_rss_mb"] <= PEAK_RSS_MB))
    result.metrics.append(Metric("teardown", ours["teardown_s"], "s", f"<= {TEARDOWN_S:g} s", ours["teardown_s"] <= TEARDOWN_S))
    if theirs is not None:
        for key, label, unit in (
            ("active_over_ideal", "active / ideal", "x"),
            ("cpu_per_call_ms", "CPU per model call", "ms"),
            ("peak_rss_mb", "peak RSS", "MB"),
            ("teardown_s", "teardown", "s"),
        ):
            result.metrics.append(Metric(f"{label}: SMOLTRACE (ours / SMOLTRACE = {ours[key] / theirs[key]:.2f}x)", theirs[key], unit))
        result.notes.append(f"SMOLTRACE torch loaded: {theirs['torch_loaded']} (its venv has no torch)")
    else:
        result.notes.append(f"SMOLTRACE comparison skipped: {data['smoltrace_skipped']}")
    untraced = data["ours_without_otel"]
    for key, label, unit in (
        ("cpu_per_call_ms", "CPU per model call", "ms"),
        ("peak_rss_mb", "peak RSS", "MB"),
        ("teardown_s", "teardown", "s"),
    ):
        result.metrics.append(Metric(f"{label}: ours without --enable-otel (what tracing costs)", untraced[key], unit))
    result.details = data
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each harness; the median run is reported")
    parser.add_argument("--no-smoltrace", action="store_true", help="measure ours only")
    args = parser.parse_args(argv)
    res = run(args.repeat, not args.no_smoltrace)
    for m in res.metrics:
        verdict = "" if m.passed is None else f"  [{m.target}: {'PASS' if m.passed else 'FAIL'}]"
        print(f"   {m.label}: {m.value:.3f} {m.unit}{verdict}")
    for note in res.notes:
        print(f"   note: {note}")


if __name__ == "__main__":
    main()
