"""Runner overhead: `smoltrace-eval` against the fake OpenAI server at a fixed latency per reply.

48 task executions (24 tasks x tool and code agents, 2 model calls each) at 1, 4 and 8 workers.
The active phase runs from the first model request the server sees to the last reply it sends;
it is compared with the ideal (model calls x latency / workers). Start-up (imports) and teardown
are reported apart, as is the whole wall time. Also: `smoltrace-eval --help` wall time.

Run: python -m tests.bench.bench_runner [--latency-ms 50] [--workers 1,4,8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fakes.chat_servers import FakeOpenAIServer, Script, call, code, final

ROOT = Path(__file__).resolve().parents[2]
TASKS = 24


CITIES = ["Paris, France", "London, UK", "Tokyo, Japan", "Sydney, Australia", "New York, USA", "Berlin, Germany"]


class BenchScript(Script):
    """Two model calls per execution: a tool call then the answer. Tool-calling agents get OpenAI
    tool calls, code agents (whose system prompt asks for <code> blocks) get code. Records when
    the first request arrived and when the last reply was ready."""

    def __init__(self, latency_s: float) -> None:
        super().__init__(latency_s=latency_s)
        self.first_request: float | None = None
        self.last_reply: float | None = None

    def next_turn(self, messages: list[dict[str, Any]]) -> Any:
        now = time.perf_counter()
        with self._lock:
            if self.first_request is None:
                self.first_request = now
        first_user = next((json.dumps(m.get("content")) for m in messages if m.get("role") == "user"), "")
        is_code = bool(messages) and "<code>" in json.dumps(messages[0].get("content", ""))
        done = sum(1 for m in messages if m.get("role") == "assistant")
        i = next((k for k in range(TASKS) if f"Bench task {k:02d}:" in first_user), 0)
        if is_code:
            turn = code(f'print(calculator(expression="{i}+{i}"))') if done == 0 else code(f"final_answer({2 * i})")
        else:
            turn = call("get_weather", location=CITIES[i % len(CITIES)]) if done == 0 else final(f"done {i}")
        with self._lock:
            self.last_reply = time.perf_counter() + self.latency_s
        return turn


def write_tasks(path: Path) -> None:
    with path.open("w") as handle:
        for i in range(TASKS):
            row = {
                "id": f"bench_{i:02d}",
                "prompt": f"Bench task {i:02d}: weather in {CITIES[i % len(CITIES)]} and {i} + {i}?",
                "difficulty": "easy",
                "agent_type": "both",
                "expected_tool": "multiple",
                "expected_tool_calls": 1,
            }
            handle.write(json.dumps(row) + "\n")


def run_once(workers: int, latency_s: float, tasks: Path, out: Path, extra_args: tuple[str, ...] = ()) -> dict[str, float]:
    script = BenchScript(latency_s)
    server = FakeOpenAIServer(script).start()
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-fake",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "smoltrace.cli",
        "--model",
        "openai/fake",
        "--api-base",
        server.api_base,
        "--dataset-name",
        str(tasks),
        "--parallel-workers",
        str(workers),
        "--output-dir",
        str(out),
        "--quiet",
        *extra_args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    server.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"smoltrace-eval failed ({proc.returncode}): {proc.stderr[-2000:]}")
    run_dir = Path(proc.stdout.strip().splitlines()[-1].split("Results: ", 1)[1].split(" (")[0])
    rows = json.loads((run_dir / "results.json").read_text())
    calls = script.requests
    active = (script.last_reply or t0) - (script.first_request or t0)
    ideal = calls * latency_s / workers
    return {
        "workers": workers,
        "executions": len(rows),
        "passed": sum(1 for r in rows if r["success"]),
        "model_calls": calls,
        "wall_s": wall,
        "startup_s": (script.first_request or t0) - t0,
        "active_s": active,
        "teardown_s": t0 + wall - (script.last_reply or t0),
        "ideal_s": ideal,
        "active_over_ideal": active / ideal if ideal else float("nan"),
        "tokens_reported": sum(r["total_tokens"] for r in rows),
        "tokens_served": script.prompt_tokens_served + script.completion_tokens_served,
    }


def help_time() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "smoltrace.cli", "--help"], capture_output=True, check=True, timeout=60)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("--otel", action=argparse.BooleanOptionalAction, default=True, help="also measure --enable-otel against without")
    args = parser.parse_args(argv)
    latency = args.latency_ms / 1000.0
    results: dict[str, Any] = {"latency_ms": args.latency_ms, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tasks = Path(tmp) / "bench_tasks.jsonl"
        write_tasks(tasks)
        for workers in [int(w) for w in args.workers.split(",")]:
            r = run_once(workers, latency, tasks, Path(tmp) / f"out{workers}")
            results["runs"].append(r)
            print(
                f"  workers {workers}: {r['executions']} executions ({r['passed']} passed), {r['model_calls']} model calls; "
                f"active {r['active_s']:.2f} s vs ideal {r['ideal_s']:.2f} s = {r['active_over_ideal']:.2f}x; "
                f"start-up {r['startup_s']:.2f} s, teardown {r['teardown_s']:.2f} s, wall {r['wall_s']:.2f} s; "
                f"tokens reported/served {r['tokens_reported']}/{r['tokens_served']}",
                flush=True,
            )
        if args.otel:
            base = run_once(8, latency, tasks, Path(tmp) / "otel-base")
            traced = run_once(8, latency, tasks, Path(tmp) / "otel-on", ("--enable-otel",))
            results["otel"] = {"without": base, "with": traced}
            print(
                f"  tracing overhead @8 workers: active {traced['active_s']:.2f} s vs {base['active_s']:.2f} s = "
                f"{traced['active_s'] / base['active_s']:.2f}x; whole process {traced['wall_s']:.2f} s vs {base['wall_s']:.2f} s = "
                f"{traced['wall_s'] / base['wall_s']:.2f}x (start-up {traced['startup_s']:.2f} s vs {base['startup_s']:.2f} s)",
                flush=True,
            )
    results["help_s"] = min(help_time() for _ in range(3))
    print(f"  smoltrace-eval --help: {results['help_s'] * 1000:.0f} ms (best of 3)")
    return results


if __name__ == "__main__":
    main()


NAME = "runner"


def run(latency_ms: float = 50.0, workers: tuple[int, ...] = (1, 4, 8)) -> Any:
    """For run_all: the same measurements as a harness Result (target: active <= 1.15 x ideal at 8 workers)."""
    from ._harness import Result

    result = Result(NAME, f"smoltrace-eval vs fake OpenAI server at {latency_ms:g} ms/reply, 48 executions")
    data = main(["--latency-ms", str(latency_ms), "--workers", ",".join(map(str, workers))])
    for r in data["runs"]:
        w = r["workers"]
        if w == max(workers):
            result.add(f"active / ideal @{w} workers", r["active_over_ideal"], "x", below=1.15 + 1e-9)
        else:
            result.add(f"active / ideal @{w} workers", r["active_over_ideal"], "x")
        result.add(f"start-up @{w} workers", r["startup_s"], "s")
        result.add(f"teardown @{w} workers", r["teardown_s"], "s")
        result.add(f"tokens reported / served @{w}", r["tokens_reported"] / max(1, r["tokens_served"]), "x")
    if "otel" in data:
        on, off = data["otel"]["with"], data["otel"]["without"]
        result.add("tracing: active with / without @8", on["active_s"] / off["active_s"], "x", below=1.10 + 1e-9)
        result.add("tracing: whole process with / without @8", on["wall_s"] / off["wall_s"], "x")
    result.add("smoltrace-eval --help", data["help_s"] * 1000, "ms", below=1000)
    result.details = data
    return result
