"""The report reads a run through RunFolder and the typed records (issue 11): a run that did not
finish writing its files shows the union of its segments; old and damaged folders render with a
one-line notice, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from smoltrace.records import RunMetadata, salvage
from smoltrace.report import load_run, render_report
from smoltrace.report.views import build_report_view
from smoltrace.run_folder import RunFolder, SegmentData
from tests.unit.test_report import Doc, demo_rows, make_metadata, write_run
from tests.unit.test_run_record import gpu, row, trace


def text_of(run: Path) -> str:
    return " ".join(Doc(render_report(run)).text)


def test_a_run_with_two_segments_that_did_not_finish_shows_their_union(tmp_path: Path) -> None:
    """The first process was interrupted (its final files hold its own rows, trace and 30 J); a
    --resume ran the second execution and ended its segment (10 J), then died before writing the
    run's files. The report shows both executions, both traces and 40 J — not the stale files."""
    folder = RunFolder.create(tmp_path, "run")
    first = folder.begin_segment("first", "2026-12-04T10:00:00Z")
    a = row("tool:a", 0, 1_000, 2_000, trace_id="1" * 32, task_id="task_a")
    folder.checkpoint.append(a)
    seg0 = SegmentData(
        first.with_(
            status="interrupted",
            executed=["tool:a"],
            traced=True,
            gpu_summary=gpu(30.0, 30.0, 100.0),
            task_energy_j={"tool:a": 30.0},
            co2_per_joule=0.01,
        ),
        [trace("tool:a", "1" * 32)],
    )
    folder.end_segment(seg0)
    stale = RunMetadata(
        run_id="run-1",
        model="m",
        provider="litellm",
        agent_type="tool",
        dataset_used="d",
        started_at="2026-12-04T10:00:00Z",
        status="interrupted",
        num_planned=2,
        gpu_metrics={"enabled": True, "gpu_available": True, "summary": gpu(30.0, 30.0, 100.0).to_json()},
        otel={"enabled": True},
    )
    folder.write_results([a.with_(energy_j=30.0)])
    folder.write_json("traces.json", [trace("tool:a", "1" * 32).to_json()])
    second = folder.begin_segment("resume", "2026-12-04T11:00:00Z")
    folder.write_metadata(stale.with_(status="running", segments=folder.segments()))
    b = row("tool:b", 1, 3_000, 4_000, trace_id="2" * 32, task_id="task_b")
    folder.checkpoint.append(b)
    folder.end_segment(
        SegmentData(
            second.with_(
                status="completed",
                executed=["tool:b"],
                traced=True,
                gpu_summary=gpu(10.0, 10.0, 300.0),
                task_energy_j={"tool:b": 10.0},
                co2_per_joule=0.01,
            ),
            [trace("tool:b", "2" * 32)],
        )
    )

    html = render_report(folder.path)
    text = " ".join(Doc(html).text)
    assert "task_a" in text and "task_b" in text, "rows of both segments (the checkpoint), not the stale results.json"
    assert html.count('<details class="trace"') == 2, "traces of both segments"
    assert "40 J" in text, "energy of both segments summed"
    assert "10 J" in text and "30 J" in text, "each execution's energy as its segment apportioned it"
    assert "2 segment(s)" in text and "did not finish" in text


def test_an_old_folder_without_the_new_fields_renders(tmp_path: Path) -> None:
    """A schema-1 folder: rows without duration_ms/steps/energy, metadata without schema_version,
    status, segments or integrity: the page shows what the files give, unknown as unknown."""
    rows = demo_rows()
    for r in rows:
        for key in ("duration_ms", "steps", "energy_j", "co2_g", "prompt_tokens", "completion_tokens"):
            r.pop(key)
    meta = make_metadata()
    for key in ("status", "num_planned", "passed", "timings"):
        meta.pop(key)
    run = write_run(tmp_path / "run", rows=rows, metadata=meta)
    view = build_report_view(load_run(run), max_spans_total=100, max_spans_per_trace=10)
    task = view.tasks[0]
    assert task.duration == "45.9 ms", "the row's execution_time_ms stands in for duration_ms"
    assert (task.steps, task.energy) == ("—", "n/a"), "unknown, not the record's default 0"
    assert view.status == "unknown"
    assert not any("fields missing" in text for _, text in view.notices)
    assert "tokens" in text_of(run)


def test_a_damaged_metadata_is_one_notice_and_the_rest_renders(tmp_path: Path) -> None:
    meta = make_metadata(model=["not", "text"], num_planned="many", segments=[{"index": "x"}], integrity={"ok": "perhaps"})
    run = write_run(tmp_path / "run", metadata=meta)
    html = render_report(run)
    notices = [line for line in Doc(html).text if "metadata.json: fields missing or invalid" in line]
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "model" in notices[0] and "num_planned" in notices[0]
    assert html.count('<tr class="') == 4 and "openai/fake" in html  # rows (and their model) still there


def test_the_module_entry_point_never_shows_a_traceback(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", metadata={"run_id": 7, "status": {"no": 1}, "gpu_metrics": "x"})
    (run / "results.json").write_text('[{"task_id": 1}, 5, null]', "utf-8")
    (run / "checkpoint.jsonl").write_text("{torn", "utf-8")
    done = subprocess.run([sys.executable, "-m", "smoltrace.report", str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "results.json: 2 item(s) are not JSON objects; left out" in (run / "report.html").read_text("utf-8")


def test_salvage_keeps_what_validates_and_says_what_did_not() -> None:
    found = salvage(
        RunMetadata, {"run_id": "r", "model": 3, "segments": [{"index": 0, "kind": "first", "status": "x", "started_at": "t"}, 5]}
    )
    assert found is not None
    assert found.record.run_id == "r" and found.record.model == ""
    assert len(found.record.segments) == 1
    assert found.repaired == ["model", "provider", "agent_type", "dataset_used", "started_at", "segments"]
    assert found.record.given("num_planned") is None and found.record.given("run_id") == "r"
    assert salvage(RunMetadata, [1, 2]) is None
    assert json.loads(json.dumps(found.record.to_json()))["run_id"] == "r"
