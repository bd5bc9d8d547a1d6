"""Load scenario: `smoltrace-eval` (the real CLI, a subprocess) at 32 workers over `tasks` task
executions against the fake OpenAI server, each a tiny scripted conversation (a tool call, then
the final answer: 2 model calls), with 1 % of model requests answered 500 or 429 (Retry-After 0),
chosen by a seeded RNG. Every execution is accounted for: as many rows as tasks, unique uids,
error_types counted, and the retries the rows report equal the errors the server injected."""

from __future__ import annotations

import collections
import json
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.fakes.chat_servers import PREFLIGHT_MARKER, FakeOpenAIServer, Script, Turn, call, error, final
from tests.fakes.runner_fixtures import run_subprocess, subprocess_env, task, write_jsonl

WORKERS = 32
ERROR_RATE = 0.01


class FlakyScript(Script):
    """Every task "L<n>:" is a get_weather call then a final answer; 1 % of requests fail."""

    def __init__(self, seed: int, latency_s: float) -> None:
        super().__init__(latency_s=latency_s)
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()
        self.injected: collections.Counter[int] = collections.Counter()
        self.tool_turn = call("get_weather", location="Paris, France")
        self.final_turn = final("It is 20°C and Partly Cloudy in Paris")

    def next_turn(self, messages: list[dict[str, Any]]) -> Turn:
        if any(PREFLIGHT_MARKER in str(m.get("content")) for m in messages):
            return self.final_turn  # the runner's preflight probe: no error injected (it is not an execution)
        with self.rng_lock:
            roll = self.rng.random()
            status = self.rng.choice([500, 429]) if roll < ERROR_RATE else 200
            if status != 200:
                self.injected[status] += 1
        if status == 500:
            return error(500)
        if status == 429:
            return error(429, retry_after=0)
        assistant_turns = sum(1 for m in messages if m.get("role") == "assistant")
        return self.tool_turn if assistant_turns == 0 else self.final_turn


def run(tasks: int = 2000, seed: int = 7, latency_s: float = 0.005) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="smoltrace-load-") as tmp:
        root = Path(tmp)
        rows = [task(f"L{i:05d}", f"L{i:05d}: what's the weather in Paris, France?", expected_tool="get_weather") for i in range(tasks)]
        dataset = write_jsonl(root / "load.jsonl", rows)
        script = FlakyScript(seed, latency_s)
        with FakeOpenAIServer(script) as server:
            started = time.perf_counter()
            result = run_subprocess(
                [
                    "--model",
                    "openai/fake",
                    "--api-base",
                    server.api_base,  # type: ignore[attr-defined]
                    "--dataset-name",
                    str(dataset),
                    "--agent-type",
                    "tool",
                    "--parallel-workers",
                    str(WORKERS),
                    "--max-retries",
                    "3",
                    "--output-format",
                    "json",
                    "--quiet",
                    "--output-dir",
                    str(root / "out"),
                    "--run-id",
                    "load-2000",
                ],
                timeout=1800,
                env=subprocess_env(),
            )
            wall_s = time.perf_counter() - started
        run_dirs = list((root / "out").iterdir()) if (root / "out").exists() else []
        figures: dict[str, Any] = {
            "tasks": tasks,
            "workers": WORKERS,
            "error_rate": ERROR_RATE,
            "seed": seed,
            "latency_ms": latency_s * 1000,
        }
        figures["exit_code"] = result.returncode
        figures["wall_s"] = round(wall_s, 1)
        if result.returncode != 0 or len(run_dirs) != 1:
            figures["passed"] = False
            figures["problems"] = [result.stderr[-2000:]]
            return figures
        run_dir = run_dirs[0]
        results = json.loads((run_dir / "results.json").read_text("utf-8"))
        meta = json.loads((run_dir / "metadata.json").read_text("utf-8"))
        board = json.loads((run_dir / "leaderboard_row.json").read_text("utf-8"))
        checkpoint = [ln for ln in (run_dir / "checkpoint.jsonl").read_text("utf-8").splitlines() if ln.strip()]
    uids = [r["test_case_uid"] for r in results]
    error_types = collections.Counter(str(r.get("error_type")) for r in results)
    retries = sum(int(r.get("retries") or 0) for r in results)
    attempts = sum(int(r.get("attempts") or 0) for r in results)
    injected = sum(script.injected.values())
    problems = []
    if len(results) != tasks:
        problems.append(f"{len(results)} rows for {tasks} tasks")
    if len(set(uids)) != len(uids) or set(uids) != {f"tool:L{i:05d}" for i in range(tasks)}:
        problems.append("uids are not exactly the planned ones, once each")
    if len(checkpoint) != tasks:
        problems.append(f"{len(checkpoint)} checkpoint lines")
    if retries != injected:
        problems.append(f"rows report {retries} retries, the server injected {injected} errors")
    if attempts != script.requests:
        problems.append(f"rows report {attempts} model requests, the server saw {script.requests}")
    if board.get("total_tests") != tasks or meta.get("num_results") != tasks or meta.get("status") != "completed":
        problems.append(f"leaderboard total_tests {board.get('total_tests')}, metadata {meta.get('num_results')} {meta.get('status')}")
    active_s = meta["timings"]["active_s"]
    figures.update(
        rows=len(results),
        unique_uids=len(set(uids)),
        passed_tasks=sum(1 for r in results if r["success"]),
        error_types=dict(error_types),
        model_requests=script.requests,
        injected_500=script.injected[500],
        injected_429=script.injected[429],
        retries_in_rows=retries,
        attempts_in_rows=attempts,
        active_s=active_s,
        startup_s=meta["timings"]["startup_s"],
        executions_per_s=round(tasks / active_s, 1) if active_s else None,
        ideal_active_s=round(script.requests * latency_s / WORKERS, 2),
        problems=problems,
    )
    figures["passed"] = not problems
    return figures


if __name__ == "__main__":
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200), indent=2))
