"""--resume keeps how the run is measured: a run started with --enable-gpu-metrics (an API model
served by a local GPU) or --disable-gpu-metrics resumes the same way without the flag given again
(before, the resumed segment sampled no GPU and the run's energy silently covered part of it)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from smoltrace.config import build_parser, config_from_args
from smoltrace.resume import resume_config

BASE = ["--provider", "litellm", "--model", "openai/fake", "--api-base", "http://127.0.0.1:9/v1", "--output-format", "json"]


@pytest.mark.parametrize("flag", ["--enable-gpu-metrics", "--disable-gpu-metrics"])
def test_resume_keeps_the_gpu_metrics_choice(tmp_path: Path, flag: str) -> None:
    first = config_from_args(build_parser().parse_args([*BASE, flag]))
    stored = {f.name: getattr(first, f.name) for f in dataclasses.fields(first)}
    meta = {"run_id": first.run_id, "model": first.model, "provider": first.provider, "agent_type": first.agent_type}
    meta |= {"dataset_used": "default", "started_at": "2026-12-04T10:00:00Z", "status": "interrupted", "config": stored}
    (tmp_path / "metadata.json").write_text(json.dumps(meta, default=str))
    argv = ["--resume", str(tmp_path), "--api-base", "http://127.0.0.1:9/v1"]
    cli = config_from_args(build_parser().parse_args(argv))
    resumed = resume_config(tmp_path, cli, argv)
    dest = flag.lstrip("-").replace("-", "_")
    assert getattr(resumed, dest) is True
