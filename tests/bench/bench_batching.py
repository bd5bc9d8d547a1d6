"""Batched local generation: executions per second of `smoltrace-eval --provider transformers` on
the tiny CPU test model (tests/fakes/tiny_model.py) at 1 worker and at 8 workers.

With 8 workers the concurrent agents' `generate` calls are batched (smoltrace.batching); the
target is >= 2.5x the executions per second of one worker. Executions per second are taken over
the active phase the run records (metadata.json timings), so model loading is not counted.

Run: python -m tests.bench.bench_batching [--tasks 8] [--workers 1,8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NAME = "batching"
ROOT = Path(__file__).resolve().parents[2]
TARGET = 2.5


def write_tasks(path: Path, count: int) -> None:
    with path.open("w") as handle:
        for i in range(count):
            row = {"id": f"batch_{i:02d}", "prompt": f"Task {i}: what is {i} + {i}?", "difficulty": "easy", "agent_type": "both"}
            handle.write(json.dumps(row) + "\n")


def run_once(model_dir: Path, tasks: Path, out: Path, workers: int, max_new_tokens: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),  # the same torch threads at 1 and 8 workers
    }
    cmd = [
        sys.executable,
        "-m",
        "smoltrace.cli",
        "--provider",
        "transformers",
        "--model",
        str(model_dir),
        "--dataset-name",
        str(tasks),
        "--parallel-workers",
        str(workers),
        "--max-steps",
        "2",
        "--model-args",
        f"max_new_tokens={max_new_tokens}",
        "--disable-gpu-metrics",
        "--output-format",
        "json",
        "--output-dir",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"smoltrace-eval (transformers, {workers} workers) failed ({proc.returncode}): {proc.stderr[-1500:]}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    meta = json.loads((run_dir / "metadata.json").read_text())
    rows = json.loads((run_dir / "results.json").read_text())
    active = float(meta["timings"]["active_s"])
    return {"workers": workers, "executions": len(rows), "active_s": active, "executions_per_s": len(rows) / active}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8, help="tasks (x tool and code agents = executions / 2)")
    parser.add_argument("--workers", default="1,8")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    from tests.fakes.tiny_model import cached_tiny_model

    model_dir = cached_tiny_model(ROOT / ".cache" / "bench")
    data: dict[str, Any] = {"runs": []}
    with tempfile.TemporaryDirectory(prefix="smoltrace-bench-batching-") as tmp:
        tasks = Path(tmp) / "tasks.jsonl"
        write_tasks(tasks, args.tasks)
        for workers in [int(w) for w in args.workers.split(",")]:
            r = run_once(model_dir, tasks, Path(tmp) / f"out{workers}", workers, args.max_new_tokens)
            data["runs"].append(r)
            print(
                f"  {workers} worker(s): {r['executions']} executions in {r['active_s']:.2f} s active = {r['executions_per_s']:.2f} executions/s",
                flush=True,
            )
    return data


def run() -> Any:
    """For run_all: executions/s at 8 workers over 1 worker (target >= 2.5x)."""
    from ._harness import Metric, Result

    result = Result(NAME, "transformers, tiny CPU model: executions/s at 8 workers (batched) vs 1 worker")
    data = main([])
    by_workers = {r["workers"]: r for r in data["runs"]}
    one, eight = by_workers[1], by_workers[8]
    result.metrics.append(Metric("executions/s @1 worker", one["executions_per_s"], "/s"))
    result.metrics.append(Metric("executions/s @8 workers", eight["executions_per_s"], "/s"))
    speedup = eight["executions_per_s"] / one["executions_per_s"]
    result.metrics.append(Metric("8 workers / 1 worker", speedup, "x", f">= {TARGET:g} x", speedup >= TARGET))
    result.details = data
    return result


if __name__ == "__main__":
    main()
