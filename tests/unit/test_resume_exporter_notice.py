"""Found running a resume as a user would: the first process sampled a remote GPU exporter
(`--gpu-exporter HOST:PORT`), the resume was not given it (a folder never supplies an address),
measured nothing, and the run's GPU energy silently covered only the first segment. The resume
now says so, once, in the console and the run's notices."""

from __future__ import annotations

import io

from rich.console import Console

from smoltrace.config import build_parser, config_from_args
from smoltrace.evaluate import Evaluation
from smoltrace.records import SegmentInfo, SegmentSettings

BASE = ["--provider", "litellm", "--model", "openai/fake", "--api-base", "http://127.0.0.1:9/v1", "--output-format", "json"]


def evaluation(*flags: str) -> Evaluation:
    return Evaluation(config_from_args(build_parser().parse_args([*BASE, *flags])), None, Console(file=io.StringIO()), 0.0)


def segment(exporter: str | None) -> SegmentInfo:
    return SegmentInfo.model_validate(
        {"index": 0, "kind": "first", "pid": 1, "status": "interrupted", "started_at": "2026-12-04T10:00:00Z",
         "settings": SegmentSettings(gpu_exporter=exporter).to_json()}
    )  # fmt: skip


def test_a_resume_without_the_exporter_an_earlier_segment_sampled_says_its_energy_is_partial() -> None:
    run = evaluation()
    run._warn_exporter_changed([segment("127.0.0.1:50071")])
    (message,) = run.notices.messages
    assert "127.0.0.1:50071" in message and "covers only the segments that measured" in message


def test_no_notice_when_the_exporter_is_given_again_or_none_was_used() -> None:
    given = evaluation("--gpu-exporter", "127.0.0.1:50072")
    given._warn_exporter_changed([segment("127.0.0.1:50071")])
    local = evaluation()
    local._warn_exporter_changed([segment(None)])
    assert given.notices.messages == [] and local.notices.messages == []
