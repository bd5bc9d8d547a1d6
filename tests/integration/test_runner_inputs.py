"""Bad input stops `smoltrace-eval` before anything runs: exit 2, a clear message (every bad row of a
dataset, one line for a flag), no traceback, no run folder, no model call. And `--help` is quick."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fakes.chat_servers import Script
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    openai_server_fixture,
    run_main,
    run_subprocess,
    runner_env_fixture,
    standard_script,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")


# -- datasets -----------------------------------------------------------------------------------
def test_bad_dataset_lists_every_bad_row_and_runs_nothing(openai_server, tmp_path: Path) -> None:
    script = Script()
    server = openai_server(script)
    dataset = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            task("ok-1", "fine"),
            task("bad-difficulty", "p", difficulty="impossible"),
            "{this is not json",
            task("ok-1", "duplicate id"),
            {"id": "missing-fields"},
            task("bad-agent", "p", agent_type="robot", expected_tool_calls=-2),
            task("huge", "x" * 100_001),
            task("ok-2", "fine too"),
        ],
    )
    run = run_main(["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset)], tmp_path / "out")
    assert run.rc == 2
    err = run.stderr
    assert err.startswith(f"smoltrace-eval: error: invalid dataset {dataset}")
    for expected in [
        "row 2: difficulty:",
        "row 3: <json>: not valid JSON",
        "row 4: id: duplicate id 'ok-1' (first at row 1)",
        "row 5: prompt:",
        "row 5: difficulty:",
        "row 5: agent_type:",
        "row 6: agent_type:",
        "row 6: expected_tool_calls:",
        "row 7: prompt: longer than 100000 characters",
    ]:
        assert expected in err, f"{expected!r} missing from:\n{err}"
    assert "row 1:" not in err and "row 8:" not in err
    assert_no_traceback(err)
    assert script.requests == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (b'{"id": "a", "prompt": "caf\xe9", "difficulty": "easy", "agent_type": "tool"}\n', ".jsonl", "not valid UTF-8"),
        (b"[1, 2", ".json", "not valid JSON"),
        (b'{"validation": []}', ".json", "must hold the tasks as a list under 'train'"),
        (b"\n\n", ".jsonl", "no tasks"),
    ],
    ids=["latin1", "broken-json", "no-split", "empty"],
)
def test_unreadable_datasets(content: bytes, suffix: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / f"tasks{suffix}"
    path.write_bytes(content)
    run = run_main(["--model", "openai/fake", "--api-base", "http://127.0.0.1:9/v1", "--dataset-name", str(path)], tmp_path / "out")
    assert run.rc == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_dataset_file(tmp_path: Path) -> None:
    run = run_main(["--model", "openai/fake", "--dataset-name", str(tmp_path / "nope.jsonl")], tmp_path / "out")
    assert run.rc == 2
    assert run.stderr.strip() == f"smoltrace-eval: error: invalid dataset {tmp_path / 'nope.jsonl'}: no such file"


def test_json_dataset_with_splits_and_difficulty_filter(openai_server, tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(
        json.dumps(
            {
                "train": [task("never", "not this split")],
                "test": [
                    task("weather", "What's the weather in Paris, France?", expected_tool="get_weather"),
                    task("hard-one", "skipped by --difficulty", difficulty="hard"),
                ],
            }
        ),
        "utf-8",
    )
    server = openai_server(standard_script())
    run = run_main(
        [
            "--model",
            "openai/fake",
            "--api-base",
            server.api_base,
            "--dataset-name",
            str(path),
            "--split",
            "test",
            "--difficulty",
            "easy",
            "--quiet",
        ],
        tmp_path / "out",
    )
    assert run.rc == 0, run.stderr
    assert [r["test_case_uid"] for r in run.results] == ["tool:weather"]
    assert run.results[0]["success"]


# -- flags --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "x", "--provider", "bogus"], "argument --provider: invalid choice: 'bogus'"),
        (["--model", "x", "--parallel-workers", "0"], "--parallel-workers must be 1..256"),
        (["--model", "x", "--parallel-workers", "many"], "argument --parallel-workers: invalid int value"),
        (["--model", "x", "--model-args", "foo"], "--model-args expects KEY=VALUE, got 'foo'"),
        (["--model", "x", "--enable-tools", "bogus"], "--enable-tools: unknown tool(s) bogus"),
        (["--model", "x", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--provider", "litellm"], "--model is required"),
        (["--model", "x", "--output-format", "hub"], "--output-format hub needs a Hugging Face token"),
        (["--model", "x", "--gpu-exporter", "localhost"], "--gpu-exporter must be HOST:PORT"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str, tmp_path: Path) -> None:
    result = run_subprocess([*argv, "--output-dir", str(tmp_path / "out")], timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("smoltrace-eval: error: ")
    assert message in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (None, "no such file"),
        ("!!python/object/apply:os.system ['touch {marker}']\n", "not valid YAML"),
        ("max_steps: !!python/object/new:os.system ['touch {marker}']\n", "not valid YAML"),
        ("max_steps: 3\nsurprise: true\n", "unknown key 'surprise'"),
        ("max_steps: many\n", "max_steps must be a int"),
        ("max_steps: 1000\n", "max_steps must be 1..100"),
        ("additional_authorized_imports: ['*']\n", "'*' is not allowed"),
        ("- a list\n- of things\n", "must be a mapping"),
    ],
    ids=["missing", "python-object-apply", "python-object-new", "unknown-key", "wrong-type", "too-many-steps", "star-import", "list"],
)
def test_bad_prompt_yml(yaml_text: str | None, message: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "prompt.yml"
    if yaml_text is not None:
        path.write_text(yaml_text.format(marker=marker), "utf-8")
    run = run_main(["--model", "openai/fake", "--api-base", "http://127.0.0.1:9/v1", "--prompt-yml", str(path)], tmp_path / "out")
    assert run.rc == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"smoltrace-eval: error: --prompt-yml {path}: ")
    assert message in lines[0]
    assert not marker.exists(), "YAML must never construct Python objects"
    assert not (tmp_path / "out").exists()


def test_a_good_prompt_yml_is_used(openai_server, tmp_path: Path) -> None:
    script = standard_script()
    server = openai_server(script)
    path = tmp_path / "prompt.yml"
    path.write_text("max_steps: 1\ninstructions: Always answer in French.\n", "utf-8")
    run = run_main(
        [
            "--model",
            "openai/fake",
            "--api-base",
            server.api_base,
            "--prompt-yml",
            str(path),
            "--limit",
            "1",
            "--agent-type",
            "tool",
            "--quiet",
        ],
        tmp_path / "out",
    )
    assert run.rc == 0
    (row,) = run.results
    # one step only: the tool call, then no budget left for the final answer
    assert row["final_answer_called"] is False
    assert row["tools_used"] == ["get_weather"]
    assert row["error_type"] == "max_steps"


def test_help_is_quick() -> None:
    started = time.perf_counter()
    result = run_subprocess(["--help"], timeout=30)
    elapsed = time.perf_counter() - started
    print(f"smoltrace-eval --help answered in {elapsed:.3f} s")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: smoltrace-eval")
    for flag in ("--provider", "--disable-gpu-metrics", "--enable-gpu-metrics", "--resume", "--task-timeout", "--gpu-exporter"):
        assert flag in result.stdout
    assert "Exit codes:" in result.stdout
    assert elapsed < 2.0, f"--help took {elapsed:.2f} s (goal: under 1 s)"


def test_version() -> None:
    result = run_subprocess(["--version"], timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip().startswith("smoltrace ")
