"""How each process ran its part of a run has one owner, `SegmentInfo.settings` (issue 11; it was
also metadata's `segment_settings` list): folders written with the old list still read, and the
next process moves the old settings into their segments."""

from __future__ import annotations

import json
from pathlib import Path

from smoltrace.records import RunMetadata, SegmentSettings
from smoltrace.run_folder import RunFolder

OLD_SETTINGS = [
    {
        "index": 0,
        "started_at": "2026-12-04T10:00:00Z",
        "resume": False,
        "api_base": "http://127.0.0.1:9/v1",
        "parallel_workers": 4,
        "max_retries": 2,
        "task_timeout": None,
        "shutdown_grace": 20.0,
        "skip_preflight": False,
    }
]
META = {
    "run_id": "run-1",
    "model": "openai/fake",
    "provider": "litellm",
    "agent_type": "tool",
    "dataset_used": "d",
    "started_at": "2026-12-04T10:00:00Z",
    "status": "interrupted",
}


def old_folder(tmp_path: Path) -> RunFolder:
    """What the code before this change wrote: settings in metadata, none in segment.json."""
    folder = RunFolder.create(tmp_path, "run")
    info = folder.begin_segment("first", "2026-12-04T10:00:00Z")
    seg = json.loads((folder.path / "segments" / "000" / "segment.json").read_text("utf-8"))
    seg.pop("settings", None)
    seg["status"] = "interrupted"
    (folder.path / "segments" / "000" / "segment.json").write_text(json.dumps(seg), "utf-8")
    folder.write_json("metadata.json", {**META, "segments": [dict(seg)], "segment_settings": OLD_SETTINGS})
    assert info.index == 0
    return folder


def test_old_metadata_reads_its_settings_into_the_segments(tmp_path: Path) -> None:
    meta = old_folder(tmp_path).read_metadata()
    assert meta.segments[0].settings == SegmentSettings(
        api_base="http://127.0.0.1:9/v1", parallel_workers=4, max_retries=2, task_timeout=None, shutdown_grace=20.0
    )
    assert "segment_settings" not in meta.to_json(), "the old key is not written back"


def test_the_next_process_moves_old_settings_into_segment_files(tmp_path: Path) -> None:
    folder = old_folder(tmp_path)
    mine = SegmentSettings(api_base="http://127.0.0.1:10/v1", parallel_workers=2, max_retries=1, task_timeout=30.0, shutdown_grace=5.0)
    info = folder.begin_segment("resume", "2026-12-04T11:00:00Z", settings=mine)
    assert info.index == 1 and info.settings == mine
    segments = folder.segments()
    assert [s.kind for s in segments] == ["first", "resume"]
    assert segments[0].settings is not None and segments[0].settings.parallel_workers == 4
    assert segments[0].status == "interrupted", "an ended segment keeps its status"
    assert segments[1].settings == mine


def test_metadata_without_old_settings_is_unchanged() -> None:
    meta = RunMetadata.model_validate(META)
    assert meta.segments == [] and "segment_settings" not in meta.to_json()
    before_segments = RunMetadata.model_validate({**META, "segment_settings": OLD_SETTINGS})  # a folder older than segments
    assert before_segments.segments == [] and "segment_settings" not in before_segments.to_json()
