"""`--resume` reads the run folder through RunFolder and validates it with the records (issue 11):
a tampered metadata.json is refused by `RunMetadata`'s validation (exit 2, one line, nothing
written), a metadata.json that contradicts its own stored config is refused, and folders in the
older `segment_settings` form still resume."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

from smoltrace.cli import main
from smoltrace.config import build_parser, config_from_args
from smoltrace.resume import resume_config

API = "http://127.0.0.1:9/v1"
BASE = ["--provider", "litellm", "--model", "openai/fake", "--api-base", API, "--output-format", "json", "--run-id", "run-7"]


def plant(run_dir: Path, **changes: Any) -> Path:
    """A run folder as the runner leaves it after an interrupt, with `changes` to its metadata."""
    first = config_from_args(build_parser().parse_args(BASE))
    stored = {f.name: getattr(first, f.name) for f in dataclasses.fields(first)}
    meta: dict[str, Any] = {
        "schema_version": 2,
        "run_id": "run-7",
        "model": "openai/fake",
        "provider": "litellm",
        "agent_type": first.agent_type,
        "dataset_used": "default",
        "started_at": "2026-12-04T10:00:00Z",
        "status": "interrupted",
        "config": json.loads(json.dumps(stored, default=str)),
    }
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metadata.json").write_text(json.dumps(meta), "utf-8")
    return run_dir


def resume(run_dir: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--resume", str(run_dir), "--api-base", API, "--quiet"])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"model": ["openai/fake"]}, "metadata.json: not a valid RunMetadata (model: Input should be a valid string)"),
        ({"started_at": None}, "metadata.json: not a valid RunMetadata (started_at: Field required)"),
        ({"segments": [{"index": "first"}]}, "metadata.json: not a valid RunMetadata (segments.0.index:"),
        ({"config": "--api-base=http://evil"}, "metadata.json: not a valid RunMetadata (config: Input should be a valid dictionary)"),
        (
            {"model": "openai/other"},
            "metadata.json does not describe a valid run (it contradicts itself: model 'openai/other' vs config.model 'openai/fake')",
        ),
        ({"config": {}}, "metadata.json has no config"),
    ],
)
def test_a_tampered_metadata_is_refused_by_the_records(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    run = plant(tmp_path / "run", **changes)
    before = (run / "metadata.json").read_bytes()
    rc, out, err = resume(run)
    assert rc == 2, out + err
    line = err.strip()
    assert "\n" not in line and "Traceback" not in out + err
    assert line.startswith(f"smoltrace-eval: error: --resume {run}: ")
    assert expected in line, line
    assert (run / "metadata.json").read_bytes() == before and sorted(p.name for p in run.iterdir()) == ["metadata.json"]


def test_a_valid_record_resumes_with_its_stored_identity(tmp_path: Path) -> None:
    run = plant(tmp_path / "run", dataset_revision="a" * 40)
    argv = ["--resume", str(run), "--api-base", API]
    config = resume_config(run, config_from_args(build_parser().parse_args(argv)), argv)
    assert (config.model, config.run_id, config.dataset_revision) == ("openai/fake", "run-7", "a" * 40)


def test_a_folder_in_the_older_segment_settings_form_resumes(tmp_path: Path) -> None:
    old = [{"index": 0, "started_at": "2026-12-04T10:00:00Z", "resume": False, "api_base": API, "parallel_workers": 1}]
    segment = {"index": 0, "kind": "first", "pid": 1, "status": "interrupted", "started_at": "2026-12-04T10:00:00Z"}
    run = plant(tmp_path / "run", segment_settings=old, segments=[segment])
    argv = ["--resume", str(run), "--api-base", API]
    config = resume_config(run, config_from_args(build_parser().parse_args(argv)), argv)
    assert config.run_id == "run-7"
