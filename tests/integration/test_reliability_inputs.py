"""Bad input the older suites did not try (issue #7): a 100 MB prompt generated at test time,
binary junk, deeply nested JSON, and more bad flags. Each is one clear error (exit 2) before any
task runs, in bounded time, with no traceback."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.fakes.runner_fixtures import assert_no_traceback, closed_port, run_subprocess, task

BASE = ["--model", "openai/fake", "--api-base", f"http://127.0.0.1:{closed_port()}/v1"]


def huge_prompt(path: Path) -> Path:
    """One task whose prompt is 100 MB, written in chunks (never held as one string here)."""
    with path.open("w", encoding="utf-8") as f:
        f.write('{"id": "huge", "difficulty": "easy", "agent_type": "tool", "prompt": "')
        chunk = "A" * (1 << 20)
        for _ in range(100):
            f.write(chunk)
        f.write('"}\n')
        f.write(json.dumps(task("ok", "fine")) + "\n")
    return path


CASES = {
    "100MB-prompt": (huge_prompt, "prompt"),
    "binary-junk": (lambda p: (p.write_bytes(os.urandom(1 << 20)), p)[1], "dataset"),
    "deep-nesting": (lambda p: (p.write_text("[" * 100_000 + "]" * 100_000, "utf-8"), p)[1], "dataset"),
    "nul-and-control": (lambda p: (p.write_text(json.dumps(task("a\x00b", "x\x1b[31m")) + "\n", "utf-8"), p)[1], "row 1: id"),
    "wrong-top-level": (lambda p: (p.write_text('"just a string"\n42\nnull\n', "utf-8"), p)[1], "row"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_huge_and_hostile_task_files(case: str, tmp_path: Path) -> None:
    make, needle = CASES[case]
    path = make(tmp_path / f"{case}.jsonl")
    started = time.monotonic()
    result = run_subprocess([*BASE, "--dataset-name", str(path), "--output-dir", str(tmp_path / "out")], timeout=120)
    elapsed = time.monotonic() - started
    assert_no_traceback(result.stdout + result.stderr)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    if case == "deep-nesting":
        assert "nested too deeply" in result.stderr, result.stderr
        assert result.stderr.startswith("smoltrace-eval: error:"), result.stderr[:500]
        assert needle in result.stderr.lower(), result.stderr[:1000]
        assert len(result.stderr) < 20_000, "the error does not echo the input"
    assert not (tmp_path / "out").exists(), "nothing ran"
    assert elapsed < 90, f"{case} took {elapsed:.1f} s"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--working-directory", "/definitely/not/here"], "--working-directory"),
        (["--shard", "3/2"], "--shard"),
        (["--shard", "a/b"], "--shard"),
        (["--run-id", "../../etc/passwd"], "--run-id"),
        (["--limit", "-1"], "--limit"),
        (["--task-timeout", "-5"], "--task-timeout"),
        (["--max-retries", "-1"], "--max-retries"),
        (["--max-steps", "0"], "--max-steps"),
        (["--hf-token-file", "/definitely/not/here"], "--hf-token-file"),
        (["--collector-address", "not an address"], "--collector-address"),
    ],
)
def test_more_bad_flags(argv: list[str], message: str, tmp_path: Path) -> None:
    result = run_subprocess([*BASE, *argv, "--output-dir", str(tmp_path / "out")], timeout=30)
    assert result.returncode == 2, (argv, result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smoltrace-eval: error: "), result.stderr
    assert message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
