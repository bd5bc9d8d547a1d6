"""`--shard I/N` and `smoltrace-eval merge`: N shard processes merge into what one unsharded run gives."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from smoltrace.config import ConfigError, parse_shard
from smoltrace.merge import MergeError, merge_runs
from smoltrace.records import GpuSummary, Stats, combine_gpu_summaries
from tests.fakes.chat_servers import FakeOpenAIServer, Script, call, code, final
from tests.fakes.runner_fixtures import cli_command, read_json, runner_env_fixture, subprocess_env  # noqa: F401

SHARDS = 3
RUN_ID = "sharded-run-1"


def script() -> Script:
    s = Script()
    s.add("Paris, France?", call("get_weather", location="Paris, France"), final("It is 20°C and Partly Cloudy in Paris"))
    s.add("What time is it in UTC", call("get_current_time", timezone="UTC"), final("It is 12:00 UTC"))
    s.add("1234 + 4321", call("calculator", expression="1234 + 4321"), final(5555))
    s.add("234 multiplied", code('print(calculator(expression="234*67"))'), code("final_answer(15678)"))
    s.add("square root of 144", code('print(calculator(expression="sqrt(144)"))'), code("final_answer(12)"))
    s.add("from 1 to 100", code("print(sum(range(1, 101)))"), code("final_answer(5050)"))
    return s


def test_parse_shard() -> None:
    assert parse_shard("0/4") == (0, 4)
    assert parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


@pytest.mark.timeout(360)  # five CLI processes; slow on a loaded 2-core machine
def test_shards_merge_into_the_unsharded_run(tmp_path: Path, runner_env: None) -> None:
    server = FakeOpenAIServer(script()).start()
    try:
        common = ["--model", "openai/fake", "--api-base", server.api_base, "--limit", "3", "--max-steps", "3", "--quiet"]
        env = subprocess_env()
        whole = subprocess.run(
            [*cli_command(), *common, "--run-id", RUN_ID, "--output-dir", str(tmp_path / "whole")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert whole.returncode == 0, whole.stderr
        procs = [
            subprocess.Popen(
                [*cli_command(), *common, "--run-id", RUN_ID, "--shard", f"{i}/{SHARDS}", "--output-dir", str(tmp_path / "shards")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(SHARDS)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    finally:
        server.stop()
    # folder names start with each shard's own start time: order them by shard index
    shard_dirs = sorted((tmp_path / "shards").iterdir(), key=lambda d: int(d.name.rsplit("_shard-", 1)[1].split("-of-")[0]))
    assert [d.name.rsplit("_shard-", 1)[1] for d in shard_dirs] == [f"{i}-of-{SHARDS}" for i in range(SHARDS)]
    sizes = [len(read_json(d / "results.json")) for d in shard_dirs]
    assert sizes == [2, 2, 2]  # 6 executions, round robin

    merged = tmp_path / "merged"
    done = subprocess.run(
        [*cli_command(), "merge", str(merged), *map(str, shard_dirs)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    (whole_dir,) = (tmp_path / "whole").iterdir()
    expected, got = read_json(whole_dir / "results.json"), read_json(merged / "results.json")
    keys = ("test_case_uid", "test_index", "success", "tools_used", "steps", "response", "run_id", "correct_tool")
    assert [{k: r[k] for k in keys} for r in got] == [{k: r[k] for k in keys} for r in expected]
    assert all(r["run_id"] == RUN_ID for r in got)
    board_whole, board_merged = read_json(whole_dir / "leaderboard_row.json"), read_json(merged / "leaderboard_row.json")
    for key in ("run_id", "total_tests", "successful_tests", "failed_tests", "success_rate", "avg_steps", "total_tokens", "provider"):
        assert board_merged[key] == board_whole[key], key
    meta = read_json(merged / "metadata.json")
    assert meta["status"] == "completed" and meta["missing_shards"] == [] and len(meta["merged_from"]) == SHARDS
    assert (merged / "report.html").exists()

    # a shard missing is reported; a shard twice or from another run is refused
    partial = subprocess.run(
        [*cli_command(), "merge", str(tmp_path / "partial"), *map(str, shard_dirs[:2])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert partial.returncode == 2 and "shards missing: [2]" in partial.stderr, partial.stdout + partial.stderr
    assert "nothing written" in partial.stderr and not (tmp_path / "partial").exists()
    allowed = subprocess.run(
        [*cli_command(), "merge", str(tmp_path / "partial"), *map(str, shard_dirs[:2]), "--allow-partial"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert allowed.returncode == 0, allowed.stderr
    meta = read_json(tmp_path / "partial" / "metadata.json")
    assert meta["status"] == "partial" and meta["partial"]["missing_shards"] == [2]
    assert read_json(tmp_path / "partial" / "leaderboard_row.json")["status"] == "partial"
    assert "Partial run (merged with --allow-partial)" in (tmp_path / "partial" / "report.html").read_text("utf-8")
    with pytest.raises(MergeError, match="given twice"):
        merge_runs(tmp_path / "twice", [shard_dirs[0], shard_dirs[0]])
    with pytest.raises(MergeError, match="shard count"):  # an unsharded folder of the same run id
        merge_runs(tmp_path / "mixed", [shard_dirs[0], whole_dir])
    other = read_json(shard_dirs[1] / "metadata.json")
    other["run_id"] = "another-run"
    (tmp_path / "other").mkdir()
    for name in ("results.json",):
        (tmp_path / "other" / name).write_text((shard_dirs[1] / name).read_text())
    (tmp_path / "other" / "metadata.json").write_text(json.dumps(other))
    with pytest.raises(MergeError, match="run_id 'another-run' differs"):
        merge_runs(tmp_path / "mixed2", [shard_dirs[0], tmp_path / "other"])


def test_gpu_summaries_add_up() -> None:
    a = {
        "gpu_available": True,
        "energy_joules": 10.0,
        "co2_grams": 1.0,
        "power_cost_usd": 0.1,
        "sample_count": 3,
        "power_watts": {"avg": 100.0, "min": 90.0, "max": 110.0, "count": 3},
    }
    b = {
        "gpu_available": True,
        "energy_joules": 5.0,
        "co2_grams": 0.5,
        "power_cost_usd": 0.05,
        "sample_count": 1,
        "power_watts": {"avg": 200.0, "min": 200.0, "max": 200.0, "count": 1},
    }
    merged = combine_gpu_summaries([GpuSummary.model_validate(a), GpuSummary.model_validate(b), None])
    assert merged is not None
    assert merged.energy_joules == 15.0 and merged.co2_grams == 1.5 and merged.sample_count == 4 and merged.segments == 2
    # no sampled time known: weighted by samples
    assert merged.power_watts == Stats(avg=125.0, min=90.0, max=200.0, count=4)
    # with sampled time: weighted by time (30 s at 100 W, 10 s at 200 W), not by sample count
    timed = combine_gpu_summaries(
        [GpuSummary.model_validate({**a, "duration_seconds": 30.0}), GpuSummary.model_validate({**b, "duration_seconds": 10.0})]
    )
    assert timed is not None and timed.power_watts is not None and timed.power_watts.avg == 125.0
    timed = combine_gpu_summaries(
        [GpuSummary.model_validate({**a, "duration_seconds": 10.0}), GpuSummary.model_validate({**b, "duration_seconds": 30.0})]
    )
    assert timed is not None and timed.power_watts is not None and timed.power_watts.avg == 175.0
    assert combine_gpu_summaries([None, None]) is None
