"""The run record and RunFolder without a run: documented records, Hub schemas and cards generated
from them, segments and their union (traces of every segment, energy summed, gauges weighted by
time, per-task energy per segment), integrity findings on planted faults."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from smoltrace import hub
from smoltrace.cards import render_card
from smoltrace.integrity import check_run
from smoltrace.outputs import enrich_rows
from smoltrace.records import (
    GpuSummary,
    LeaderboardRow,
    MetricRow,
    Record,
    ResultRow,
    RunMetadata,
    SegmentInfo,
    Stats,
    TraceDoc,
    arrow_schema,
    field_docs,
)
from smoltrace.run_folder import RunFolder, RunFolderError, SegmentData

RECORDS: list[type[Record]] = [ResultRow, TraceDoc, MetricRow, LeaderboardRow, GpuSummary, RunMetadata, SegmentInfo]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_every_field_is_documented(record: type[Record]) -> None:
    for name, (meaning, _unit, _null) in field_docs(record).items():
        assert meaning, f"{record.__name__}.{name} has no description"
    for name, info in record.model_fields.items():
        optional = info.default is None and not info.is_required()
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if optional and "null" not in extra and record not in (RunMetadata, SegmentInfo):
            pytest.fail(f"{record.__name__}.{name} can be null but does not say when")


def test_hub_schemas_are_the_records() -> None:
    assert hub.RESULTS_SCHEMA.equals(arrow_schema(ResultRow))
    assert hub.METRICS_SCHEMA.equals(arrow_schema(MetricRow))
    assert hub.LEADERBOARD_SCHEMA.equals(arrow_schema(LeaderboardRow))
    assert hub.TRACES_SCHEMA.names == [*[n for n in TraceDoc.model_fields if n != "spans"], "spans"]
    # the published columns are exactly the records' fields, in order
    assert hub.RESULTS_SCHEMA.names == list(ResultRow.model_fields)
    assert hub.LEADERBOARD_SCHEMA.names == list(LeaderboardRow.model_fields)
    # nullable measurements are typed so: cost and energy can be null, not 0.0
    assert ResultRow.model_fields["cost_usd"].is_required() is False and ResultRow(**ROW).cost_usd is None
    assert LeaderboardRow.model_fields["energy_j"].default is None


@pytest.mark.parametrize("kind", ["results", "traces", "metrics", "leaderboard"])
def test_cards_document_each_column_from_the_record(kind: str) -> None:
    schema = {"results": hub.RESULTS_SCHEMA, "traces": hub.TRACES_SCHEMA, "metrics": hub.METRICS_SCHEMA}.get(kind, hub.LEADERBOARD_SCHEMA)
    table = pa.Table.from_pylist([], schema=schema)
    names = hub.dataset_names("tester", "20261126_120005")
    card = render_card(kind, table, {"run_id": "r"}, names)
    lines = {line.split("`")[1]: line for line in card.splitlines() if line.startswith("| `")}
    assert list(lines) == schema.names
    if kind == "results":
        assert "| J |" in lines["energy_j"] and "no GPU energy was measured" in lines["energy_j"]
        assert "| ms |" in lines["duration_ms"]


ROW = {
    "model": "m",
    "evaluation_date": "2026-12-04T10:00:00Z",
    "task_id": "t",
    "test_case_uid": "tool:t",
    "agent_type": "tool",
    "prompt": "p",
    "run_id": "run-1",
}


def row(uid: str, index: int, start: int, end: int, **extra: object) -> ResultRow:
    return ResultRow.model_validate(
        {
            **ROW,
            "task_id": uid.split(":")[1],
            "test_case_uid": uid,
            "test_index": index,
            "start_time_unix_nano": start,
            "end_time_unix_nano": end,
        }
        | extra
    )


def trace(uid: str, trace_id: str, tokens: int = 0, spans: list[dict[str, object]] | None = None) -> TraceDoc:
    spans = spans if spans is not None else [{"span_id": "a" * 16, "parent_span_id": None, "name": "test_evaluation"}]
    return TraceDoc(
        trace_id=trace_id,
        run_id="run-1",
        root_span_id="a" * 16,
        test_case_uids=[uid],
        model_calls=1 if tokens else 0,
        prompt_tokens=tokens,
        total_tokens=tokens,
        spans=spans,
    )


def gpu(energy: float, seconds: float, power: float) -> GpuSummary:
    return GpuSummary(
        gpu_available=True,
        energy_joules=energy,
        co2_grams=energy / 100,
        duration_seconds=seconds,
        sample_count=int(seconds),
        power_watts=Stats(avg=power, min=power, max=power, count=int(seconds)),
        devices=[{"index": 0, "uuid": "GPU-0", "energy_joules": energy, "duration_seconds": seconds}],
    )


def test_segments_union(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    first = folder.begin_segment("first", "2026-12-04T10:00:00Z")
    folder.end_segment(
        SegmentData(
            first.with_(
                status="interrupted",
                executed=["tool:a"],
                gpu_summary=gpu(30.0, 30.0, 100.0),
                task_energy_j={"tool:a": 30.0},
                co2_per_joule=0.01,
            ),
            [trace("tool:a", "1" * 32)],
        )
    )
    second = folder.begin_segment("resume", "2026-12-04T11:00:00Z")
    assert second.index == 1
    folder.end_segment(
        SegmentData(
            second.with_(
                status="completed",
                executed=["tool:b"],
                gpu_summary=gpu(10.0, 10.0, 300.0),
                task_energy_j={"tool:b": 10.0},
                co2_per_joule=0.01,
            ),
            [trace("tool:b", "2" * 32)],
        )
    )
    union = folder.union()
    assert [t.trace_id for t in union.traces] == ["1" * 32, "2" * 32], "traces of every segment"
    assert union.gpu_summary is not None and union.gpu_summary.energy_joules == 40.0, "energy of both segments"
    assert union.gpu_summary.power_watts is not None and union.gpu_summary.power_watts.avg == 150.0, "weighted by time (30 s, 10 s)"
    assert union.gpu_summary.devices[0]["energy_joules"] == 40.0, "one device, counted once per window"
    assert union.task_energy_j == {"tool:a": 30.0, "tool:b": 10.0}
    rows, report = enrich_rows([row("tool:a", 0, 1, 2, trace_id="1" * 32), row("tool:b", 1, 3, 4, trace_id="2" * 32)], union)
    assert report.rows_without_trace == [] and [r.energy_j for r in rows] == [30.0, 10.0]
    assert [r.co2_g for r in rows] == pytest.approx([0.3, 0.1])


def test_the_folder_that_wrote_records_reads_them_back_without_parsing_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smoltrace import run_folder

    folder = RunFolder.create(tmp_path, "run")
    docs = [trace("tool:a", "1" * 32, tokens=5), trace("tool:b", "2" * 32)]
    rows = [row("tool:a", 0, 1, 2, trace_id="1" * 32)]
    folder.write_results(rows)
    folder._write_records(folder.file("traces.json"), docs)
    on_disk = json.loads(folder.file("traces.json").read_text())
    assert on_disk == [d.to_json() for d in docs], "the text form is the dict form"
    assert folder.file("traces.json").read_text().count("\n") == len(docs) + 2, "one trace per line"

    reads: list[Path] = []
    real_read = run_folder._read_json
    monkeypatch.setattr(run_folder, "_read_json", lambda path: reads.append(path) or real_read(path))
    assert folder.read_traces() == docs and folder.read_results() == rows
    problems: list[str] = []
    assert folder.read_list_lenient("traces.json", TraceDoc, problems) == docs and problems == []
    assert reads == [], "what this folder object wrote is not parsed again"
    assert RunFolder(folder.path).read_traces() == docs and reads == [folder.file("traces.json")], "another object reads the file"

    # the file replaced behind the folder's back (another process, an editor): read from disk
    reads.clear()
    changed = [d.to_json() for d in docs[:1]]
    folder.file("traces.json").write_text(json.dumps(changed))
    assert [d.trace_id for d in folder.read_traces()] == ["1" * 32]
    assert reads == [folder.file("traces.json")]
    folder.file("results.json").unlink()
    with pytest.raises(RunFolderError):
        folder.read_results()


def test_non_finite_numbers_survive_the_text_form(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    doc = trace("tool:a", "1" * 32).with_(total_duration_ms=float("inf"), spans=[{"x": float("nan"), "t": (1, 2)}])
    folder._write_records(folder.file("traces.json"), [doc])
    back = RunFolder(folder.path).read_traces()[0]
    assert back.total_duration_ms == float("inf") and back.spans[0]["t"] == [1, 2]
    assert back.spans[0]["x"] != back.spans[0]["x"]  # NaN


def test_a_segment_left_running_was_killed(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    folder.begin_segment("first", "2026-12-04T10:00:00Z")  # never ended: the process was SIGKILLed
    folder.checkpoint.append(row("tool:a", 0, 1, 2, trace_id="1" * 32))
    folder.begin_segment("resume", "2026-12-04T11:00:00Z")
    assert [s.status for s in folder.segments()] == ["killed", "running"]
    union = folder.union()
    rows, report = enrich_rows(folder.checkpoint.load(), union)
    assert report.rows_without_trace == report.lost_with_killed_segment == ["tool:a"]
    assert rows[0].energy_j is None


def test_checkpoint_skips_a_torn_line(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    folder.checkpoint.append(row("tool:b", 1, 1, 2))
    folder.checkpoint.append(row("tool:a", 0, 1, 2))
    with open(folder.checkpoint.path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row("tool:c", 2, 1, 2).to_json())[:40])
    assert [r.test_case_uid for r in folder.checkpoint.load()] == ["tool:a", "tool:b"]


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    with pytest.raises(RunFolderError, match="not a smoltrace run folder"):
        RunFolder.open(folder.path)
    folder.write_json("metadata.json", {"run_id": 3})
    with pytest.raises(RunFolderError, match=r"metadata.json: not a valid RunMetadata \(run_id: "):
        folder.read_metadata()
    (folder.path / "results.json").write_text("[{", "utf-8")
    with pytest.raises(RunFolderError, match=r"results\.json: not valid JSON"):
        folder.read_results()


def meta(planned: int, status: str = "completed") -> RunMetadata:
    return RunMetadata(
        run_id="run-1",
        model="m",
        provider="litellm",
        agent_type="tool",
        dataset_used="d",
        started_at="x",
        num_planned=planned,
        status=status,
    )


def test_integrity_findings() -> None:
    good_rows = [row("tool:a", 0, 1, 2, total_tokens=5, prompt_tokens=5, energy_j=3.0), row("tool:b", 1, 3, 4, energy_j=1.0)]
    traces = [trace("tool:a", "1" * 32, tokens=5), trace("tool:b", "2" * 32)]
    ok = check_run(good_rows, traces, meta(2), gpu(4.0, 4.0, 1.0), traced=True)
    assert ok.ok and ok.findings == []

    def checks(integrity: object) -> set[str]:
        return {f.check for f in integrity.findings if f.severity == "error"}  # type: ignore[attr-defined]

    assert checks(check_run(good_rows, traces[:1], meta(2), None, traced=True)) == {"trace_per_row"}
    assert checks(check_run(good_rows, [*traces, trace("tool:b", "3" * 32)], meta(2), None, traced=True)) == {"trace_per_row"}
    lost = check_run(good_rows, traces[:1], meta(2), None, traced=True, lost_with_killed_segment=["tool:b"])
    assert lost.ok and [f.check for f in lost.findings] == ["trace_per_row"], "a killed segment is a reason, recorded"
    orphan = [{"span_id": "a" * 16, "parent_span_id": None}, {"span_id": "b" * 16, "parent_span_id": "c" * 16}]
    assert checks(check_run(good_rows, [traces[0], trace("tool:b", "2" * 32, spans=orphan)], meta(2), None, traced=True)) == {"orphan_span"}
    two_roots = [{"span_id": "a" * 16, "parent_span_id": None}, {"span_id": "b" * 16, "parent_span_id": None}]
    assert checks(check_run(good_rows, [traces[0], trace("tool:b", "2" * 32, spans=two_roots)], meta(2), None, traced=True)) == {
        "root_span"
    }
    assert checks(check_run([good_rows[0].with_(total_tokens=6), good_rows[1]], traces, meta(2), None, traced=True)) == {"tokens"}
    assert checks(check_run(good_rows, traces, meta(2), gpu(5.0, 4.0, 1.0), traced=True)) == {"energy_sum"}
    assert checks(check_run(good_rows, traces, meta(3), None, traced=True)) == {"row_count"}
    assert check_run(good_rows, traces, meta(3, status="partial"), None, traced=True).ok, "an explicit partial run only warns"
