"""The HTML report (smoltrace.report): every combination of run-folder contents renders, untrusted
strings stay inert, numbers are formatted, nothing external is referenced, the GPU charts hold one
polyline per series per GPU, and the size stays bounded.

The run folders are synthetic but shaped like real ones (see `write_run`); the browser test in
tests/integration/test_report_browser.py reuses these builders."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from smoltrace import report
from smoltrace.report import (
    fmt_co2,
    fmt_energy,
    fmt_int,
    fmt_ms,
    fmt_pct,
    fmt_sig,
    fmt_usd,
    render_report,
    write_report,
)

RUN_ID = "4be06847-75e4-4270-9c77-8040bd980d88"
T0 = 1_795_700_246_000_000_000  # ns
XSS = "<script>alert(1)</script>"
ATTR_XSS = '" onmouseover="alert(1)" x="'


# -- builders ---------------------------------------------------------------------------------
def make_row(index: int, task_id: str, agent: str = "tool", success: bool = True, **fields: Any) -> dict[str, Any]:
    start = T0 + index * 50_000_000
    row = {
        "model": "openai/fake",
        "evaluation_date": "2026-11-26T13:37:26.477Z",
        "task_id": task_id,
        "test_case_uid": f"{agent}:{task_id}",
        "agent_type": agent,
        "difficulty": "easy" if index % 2 == 0 else "hard",
        "prompt": f"Prompt of {task_id}?",
        "success": success,
        "tools_used": ["get_weather"] if success else [],
        "steps": 2 if success else 7,
        "response": "It is 20°C and Partly Cloudy in Paris" if success else "I don't know.",
        "error": None,
        "trace_id": f"{index + 1:032x}",
        "span_id": f"{index + 1:016x}",
        "run_id": RUN_ID,
        "execution_time_ms": 45.9,
        "total_tokens": 1265 + index,
        "cost_usd": 0.0,
        "provider": "litellm",
        "test_index": index,
        "failure_reason": "" if success else "no final answer within the step budget; expected get_current_time x1, ran []",
        "error_type": None if success else "max_steps",
        "duration_ms": 45.833 + index,
        "prompt_tokens": 1253 + index,
        "completion_tokens": 12,
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + 45_833_000,
        "energy_j": 21.400196,
        "co2_g": 0.002823637,
    }
    row.update(fields)
    return row


def make_span(trace_id: str, span_id: str, parent: str | None, name: str, start_ms: float, dur_ms: float, **kw: Any) -> dict[str, Any]:
    start = T0 + int(start_ms * 1e6)
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": kw.pop("kind", "INTERNAL"),
        "start_time": start,
        "end_time": start + int(dur_ms * 1e6),
        "duration_ms": dur_ms,
        "attributes": kw.pop("attributes", {}),
        "events": [],
        "status": kw.pop("status", {"code": "OK", "description": ""}),
    }


def make_trace(row: dict[str, Any], error: bool = False, extra_spans: int = 0) -> dict[str, Any]:
    tid = row["trace_id"]
    root = row["span_id"]
    base = (row["start_time_unix_nano"] - T0) / 1e6
    agent_cls = "ToolCallingAgent" if row["agent_type"] == "tool" else "CodeAgent"
    spans = [
        make_span(tid, root, None, "test_evaluation", base, 46.0, attributes={"test.id": row["task_id"], "prompt": row["prompt"]}),
        make_span(tid, "a" * 16, root, f"{agent_cls}.run", base + 2, 40.0, attributes={"openinference.span.kind": "AGENT"}),
        make_span(
            tid,
            "b" * 16,
            "a" * 16,
            "Step 1",
            base + 3,
            30.0,
            attributes={"openinference.span.kind": "CHAIN"},
            status={"code": "ERROR", "description": "AgentParsingError: no JSON blob"} if error else {"code": "OK", "description": ""},
        ),
        make_span(
            tid,
            "c" * 16,
            "b" * 16,
            "completion",
            base + 4,
            20.0,
            attributes={"openinference.span.kind": "LLM", "llm.model_name": "fake", "llm.token_count.prompt": 1253},
        ),
        make_span(
            tid,
            "d" * 16,
            "b" * 16,
            "WeatherTool",
            base + 25,
            0.06,
            attributes={"openinference.span.kind": "TOOL", "tool.name": "get_weather"},
        ),
    ]
    for i in range(extra_spans):
        spans.append(
            make_span(
                tid, f"{i + 1:016x}e", "b" * 16, f"extra {i}", base + 5 + i * 0.01, 0.01, attributes={"openinference.span.kind": "TOOL"}
            )
        )
    return {
        "trace_id": tid,
        "run_id": RUN_ID,
        "root_span_id": root,
        "test_ids": [row["task_id"]],
        "test_case_uids": [row["test_case_uid"]],
        "agent_type": row["agent_type"],
        "span_count": len(spans),
        "model_calls": 1,
        "total_tokens": row["total_tokens"],
        "total_duration_ms": 46.0,
        "total_cost_usd": 0.0,
        "start_time": spans[0]["start_time"],
        "end_time": spans[0]["end_time"],
        "incomplete": False,
        "spans": spans,
    }


def make_metric_rows(n_gpus: int = 2, n_samples: int = 5, interval_ms: float = 1000.0) -> list[dict[str, Any]]:
    rows = []
    for k in range(n_samples):
        ns = T0 + int(k * interval_ms * 1e6)
        for g in range(n_gpus):
            rows.append(
                {
                    "run_id": RUN_ID,
                    "service_name": "smoltrace-gpu-exporter",
                    "timestamp": "2026-11-26T13:37:26.430288Z",
                    "timestamp_unix_nano": str(ns),
                    "gpu_id": str(g),
                    "gpu_name": "Simulated GPU 80GB",
                    "gpu_uuid": f"GPU-0000-{g}",
                    "gpu_utilization_percent": 50.0 + g * 30 + (k % 3),
                    "gpu_memory_used_mib": 28000.0 + k * 100,
                    "gpu_memory_total_mib": 81559.0,
                    "gpu_temperature_celsius": 55.0 + k * 0.5,
                    "gpu_power_watts": 350.0 + g * 190 + k,
                    "co2_emissions_gco2e": 0.001 * k,
                    "power_cost_usd": 1e-7 * k,
                    "gpu_energy_joules": 10.0 * k,
                }
            )
    return rows


def make_metadata(n_gpus: int = 2, **overrides: Any) -> dict[str, Any]:
    devices = [
        {
            "index": g,
            "uuid": f"GPU-0000-{g}",
            "name": "Simulated GPU 80GB",
            "memory_total_bytes": 85520809984,
            "energy_joules": 47.0 + g * 25,
            "co2_grams": 0.0062 + g * 0.0033,
        }
        for g in range(n_gpus)
    ]
    meta: dict[str, Any] = {
        "run_id": RUN_ID,
        "model": "openai/fake",
        "provider": "litellm",
        "agent_type": "both",
        "dataset_used": "smoltrace/default-tasks",
        "split": "train",
        "started_at": "2026-11-26T13:37:22Z",
        "finished_at": "2026-11-26T13:37:26Z",
        "config": {"max_steps": 6, "parallel_workers": 2, "limit": 2},
        "versions": {"python": "3.11.7", "smoltrace": "0.1.0", "smolagents": "1.26.0"},
        "git": {"sha": "6326ce233d8f6ff4995e22fe25a00bbca29ab774", "dirty": True},
        "gpu_metrics": {
            "enabled": n_gpus > 0,
            "reason": "forced on by --enable-gpu-metrics for API provider litellm",
            "gpu_available": n_gpus > 0,
            "devices": [{k: d[k] for k in ("index", "uuid", "name", "memory_total_bytes")} for d in devices],
            "summary": {
                "energy_joules": 119.26621789799538,
                "co2_grams": 0.015736514861541057,
                "power_cost_usd": 3.975540596599846e-06,
                "energy_method": "counter",
                "carbon_intensity_g_per_kwh": 475.0,
                "pue": 1.0,
                "simulated": True,
                "devices": devices,
            }
            if n_gpus
            else None,
            "warning": None,
        },
        "otel": {"enabled": True, "console": "[OK] genai_otel_instrument enabled (GPU metrics: True)"},
        "status": "completed",
        "num_results": 4,
        "num_planned": 4,
        "passed": 2,
        "telemetry": {"tracing": True, "warnings": []},
        "timings": {"startup_s": 3.995, "active_s": 0.131},
    }
    meta.update(overrides)
    return meta


def demo_rows() -> list[dict[str, Any]]:
    return [
        make_row(0, "tool_weather_single", "tool", True),
        make_row(1, "tool_time_single", "tool", False),
        make_row(2, "code_calculator_single", "code", True, tools_used=["calculator"], response="15678"),
        make_row(3, "code_square_root", "code", False),
    ]


_UNSET: Any = object()


def write_run(
    directory: Path,
    rows: Any = _UNSET,
    traces: Any = _UNSET,
    metric_rows: Any = _UNSET,
    metadata: Any = _UNSET,
    leaderboard: Any = _UNSET,
) -> Path:
    """A run folder like evaluate.py writes (defaults: the 4-task demo with traces and 2 GPUs);
    pass None for a file to leave it out."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = demo_rows() if rows is _UNSET else rows
    files = {
        "results.json": rows,
        "traces.json": ([make_trace(r, error=not r["success"]) for r in rows] if rows else []) if traces is _UNSET else traces,
        "metrics_rows.json": make_metric_rows() if metric_rows is _UNSET else metric_rows,
        "metadata.json": make_metadata() if metadata is _UNSET else metadata,
        "leaderboard_row.json": {"run_id": RUN_ID, "model": "openai/fake", "total_tests": len(rows or [])}
        if leaderboard is _UNSET
        else leaderboard,
        "metrics.json": {"run_id": RUN_ID, "resourceMetrics": []},
    }
    for name, value in files.items():
        if value is not None:
            (directory / name).write_text(json.dumps(value, ensure_ascii=False), "utf-8")
    return directory


# -- HTML inspection --------------------------------------------------------------------------
class Doc(HTMLParser):
    """Every start tag with its attributes, script bodies, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())]

    def with_class(self, cls: str) -> list[tuple[str, dict[str, str | None]]]:
        return [(t, a) for t, a in self.tags if cls in (a.get("class") or "").split()]


def chart_svgs(text: str) -> list[str]:
    return re.findall(r'<svg class="chart".*?</svg>', text, flags=re.S)


LOADING_ATTRS = ("src", "href", "srcset", "poster", "action", "formaction", "data", "background", "xlink:href", "manifest", "ping", "cite")


def external_refs(text: str) -> list[str]:
    """Attribute values and CSS that would make a browser fetch something."""
    refs = []
    for tag, attrs in Doc(text).tags:
        for name in LOADING_ATTRS:
            value = (attrs.get(name) or "").strip()
            if name in attrs and not (value.startswith("#") or value.startswith("data:")):
                refs.append(f"<{tag} {name}={value!r}>")
    refs += re.findall(r"url\s*\(", text) + re.findall(r"@import", text)
    return refs


# -- the demo run ------------------------------------------------------------------------------
def test_full_run_has_every_section(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    html_text = render_report(run)
    doc = Doc(html_text)
    text = " ".join(doc.text)
    for expected in ("openai/fake", "litellm", RUN_ID, "smoltrace/default-tasks (train)", "completed", "Simulated GPU 80GB"):
        assert expected in text, expected
    assert "50%" in text  # overall pass rate
    assert "ToolCallingAgent" in text and "CodeAgent" in text  # per agent type
    assert "tool 50% · code 50%" in text
    assert "5,066" in text  # tokens: 1265+1266+1267+1268
    assert "119.3 J" in text and "0.0157 g" in text  # energy and CO2 totals from the exporter summary
    assert "$0.00" in text
    assert f"2 {report.TIMES} Simulated GPU 80GB" in text
    # per-task table: one row per execution, with pass/fail and why
    body_rows = doc.with_class("ok") + doc.with_class("ko")
    assert len([t for t, _ in body_rows if t == "tr"]) == 4
    assert text.count("no final answer within the step budget") == 2
    assert "max_steps" in text and "get_weather" in text
    # one collapsible trace per task, the first one open; links from the table
    traces = doc.find("details", class_="trace")
    assert len(traces) == 4 and "open" in traces[0] and all("open" not in t for t in traces[1:])
    assert [a["href"] for a in doc.find("a", class_="task-id")] == [f"#trace-{i}" for i in range(1, 5)]
    assert len(doc.with_class("wf-row")) == 4 * 5
    # GPU charts: 2 GPUs x 4 metrics
    assert len(chart_svgs(html_text)) == 8


def test_waterfall_indents_colours_and_marks_errors(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", rows=[make_row(0, "t0", success=False)])
    doc = Doc(render_report(run))
    rows = [a for t, a in doc.with_class("wf-row")]
    classes = [a["class"] for a in rows]
    assert classes == ["wf-row k-eval", "wf-row k-agent", "wf-row k-step err", "wf-row k-llm", "wf-row k-tool"]
    pads = [int(re.search(r"padding-left:(\d+)px", a["style"] or "").group(1)) for t, a in doc.with_class("wf-name") if a.get("style")]
    assert pads == sorted(pads) and pads[0] < pads[2] < pads[3]
    assert any("AgentParsingError: no JSON blob" in (a.get("title") or "") for a in rows)
    bars = [a["style"] for t, a in doc.with_class("bar")]
    assert bars[0].startswith("left:0.00%;width:100.00%")
    assert "1 span(s) with errors" in " ".join(doc.text)


@pytest.mark.parametrize("gpus", [0, 1, 3])
def test_one_polyline_per_series_per_gpu(tmp_path: Path, gpus: int) -> None:
    run = write_run(tmp_path / "run", metric_rows=make_metric_rows(gpus, 7) if gpus else [], metadata=make_metadata(gpus))
    html_text = render_report(run)
    svgs = chart_svgs(html_text)
    assert len(svgs) == 4 * gpus
    seen = set()
    for svg in svgs:
        gpu = re.search(r'data-gpu="([^"]+)"', svg).group(1)
        metric = re.search(r'data-metric="([^"]+)"', svg).group(1)
        seen.add((gpu, metric))
        polylines = re.findall(r'<polyline[^>]*points="([^"]*)"', svg)
        assert len(polylines) == 1, svg
        assert len(polylines[0].split()) == 7
        assert "time since start (s)" in svg  # x axis label with unit
        assert re.search(r"<text[^>]*>(%|GiB|°C|W)</text>", svg)  # y axis unit
        assert 'viewBox="0 0 300 172"' in svg
    assert seen == {(str(g), m) for g in range(gpus) for m in ("util", "mem", "temp", "power")}
    if gpus:
        assert "total 79.6 GiB" in html_text  # the memory chart's reference line


def test_long_gpu_series_are_thinned_but_keep_peaks(tmp_path: Path) -> None:
    rows = make_metric_rows(1, 5000, interval_ms=100)
    for k, row in enumerate(rows):
        row["gpu_power_watts"] = 350.0 + k % 7
    rows[2501]["gpu_power_watts"] = 999.0  # a one-sample spike
    run = write_run(tmp_path / "run", metric_rows=rows, metadata=make_metadata(1))
    html_text = render_report(run)
    power = next(s for s in chart_svgs(html_text) if 'data-metric="power"' in s)
    points = re.search(r'<polyline[^>]*points="([^"]*)"', power).group(1).split()
    assert 2 <= len(points) <= report.MAX_CHART_POINTS
    ys = [float(p.split(",")[1]) for p in points]
    top, second = sorted(ys)[:2]
    assert second - top > 40  # the one-sample spike survived thinning, far above the rest
    assert "<circle" not in power  # no per-point markers on long series
    assert "time since start (min)" in power  # 500 s of samples


def test_mig_instances_of_one_gpu_get_their_own_charts(tmp_path: Path) -> None:
    """Two MIG instances of GPU 0 share gpu_id "0" (the parent's index); each keeps its own series."""
    rows = make_metric_rows(2, 7)
    for row in rows:
        if row["gpu_id"] == "1":
            row["gpu_id"] = "0"
            row["gpu_uuid"] = "MIG-0000-1"
            row["gpu_memory_used_mib"] = 1234.0
    run = write_run(tmp_path / "run", metric_rows=rows, metadata=make_metadata(2))
    svgs = chart_svgs(render_report(run))
    assert len(svgs) == 4 * 2
    for svg in (s for s in svgs if 'data-metric="mem"' in s):
        points = re.search(r'<polyline[^>]*points="([^"]*)"', svg).group(1).split()
        assert len(points) == 7  # one instance's samples, not both interleaved


# -- combinations of what a run folder holds ---------------------------------------------------
def test_no_traces_and_no_gpu(tmp_path: Path) -> None:
    meta = make_metadata(0, otel={"enabled": False, "console": None})
    meta["gpu_metrics"] = {"enabled": False, "reason": "API models don't use the local GPU"}
    run = write_run(tmp_path / "run", traces=[], metric_rows=[], metadata=meta)
    html_text = render_report(run)
    text = " ".join(Doc(html_text).text)
    assert "Tracing was off for this run" in text
    assert "GPU metrics were off for this run (API models don't use the local GPU)." in text
    assert "<svg" not in html_text and 'class="trace"' not in html_text
    assert "4" in text and "50%" in text


def test_traces_without_gpu(tmp_path: Path) -> None:
    meta = make_metadata(0)
    meta["gpu_metrics"] = {"enabled": True, "reason": "local provider", "gpu_available": False}
    run = write_run(tmp_path / "run", metric_rows=[], metadata=meta)
    html_text = render_report(run)
    assert "GPU metrics were on, but the exporter saw no GPU." in html_text
    assert "metrics on, but no GPU was visible" in html_text
    assert html_text.count('<details class="trace"') == 4
    assert not chart_svgs(html_text)


def test_energy_nothing_measured_reads_n_a_not_zero(tmp_path: Path) -> None:
    """A local run on a machine without a GPU: the exporter's summary says 0 J, which is no
    measurement; an API run has energy_j null everywhere. Both read "n/a", never "0 J"/"0 g"."""
    meta = make_metadata(0)
    meta["gpu_metrics"] = {
        "enabled": True,
        "reason": "local provider",
        "gpu_available": False,
        "summary": {"gpu_available": False, "energy_joules": 0.0, "co2_grams": 0.0, "power_cost_usd": 0.0},
    }
    rows = [dict(r, energy_j=None, co2_g=None) for r in demo_rows()]
    board = {"run_id": RUN_ID, "model": "openai/fake", "total_tests": 4, "energy_j": None, "co2_emissions_g": None}
    text = " ".join(Doc(render_report(write_run(tmp_path / "run", rows=rows, metric_rows=[], metadata=meta, leaderboard=board))).text)
    assert "Energy n/a" in text and "CO₂ n/a" in text, text[:2000]
    assert "0 J" not in text and " 0 g" not in text


def test_gpu_without_traces(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", traces=[])
    html_text = render_report(run)
    assert "No spans were received for this run." in html_text
    assert len(chart_svgs(html_text)) == 8
    assert 'href="#trace-' not in html_text  # no links to traces that are not there


def test_interrupted_run(tmp_path: Path) -> None:
    rows = demo_rows()[:3]
    run = write_run(tmp_path / "run", rows=rows, metadata=make_metadata(status="interrupted", num_planned=10, num_results=3))
    text = " ".join(Doc(render_report(run)).text)
    assert "interrupted" in text
    assert "3 of 10 planned task executions finished" in text
    assert "10 planned" in text


def test_crashed_run_reads_the_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    meta = make_metadata(status="running")
    for key in ("finished_at", "num_results", "passed", "timings"):
        meta.pop(key)
    write_run(run, rows=None, traces=None, metric_rows=None, metadata=meta, leaderboard=None)
    lines = [json.dumps(r) for r in demo_rows()[:2]] + [json.dumps(demo_rows()[0] | {"success": False}), '{"task_id": "torn']
    (run / "checkpoint.jsonl").write_text("\n".join(lines), "utf-8")
    html_text = render_report(run)
    text = " ".join(Doc(html_text).text)
    assert "did not finish" in text and "checkpoint.jsonl" in text
    assert "tool_weather_single" in text and "tool_time_single" in text
    assert "0 of 2 passed" in text or "0%" in text  # the last line for a uid wins (a retry that failed)
    assert "Tracing" not in text or "No spans" in text


def test_failed_tasks_show_errors(tmp_path: Path) -> None:
    rows = [
        make_row(0, "ok", success=True),
        make_row(
            1,
            "boom",
            success=False,
            error="RateLimitError: 429 Too Many Requests",
            error_type="rate_limit",
            failure_reason="",
            response=None,
        ),
        make_row(2, "silent", success=False, failure_reason="", error_type=None, response=""),
    ]
    run = write_run(tmp_path / "run", rows=rows)
    doc = Doc(render_report(run))
    text = " ".join(doc.text)
    assert "RateLimitError: 429 Too Many Requests" in text
    assert "rate_limit" in text
    assert "failed (no reason recorded)" in text
    assert "Failures by type" in text and "wrong answer" in text


def test_zero_tasks(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", rows=[], traces=[], metric_rows=[], metadata=make_metadata(num_results=0, num_planned=0, passed=0))
    html_text = render_report(run)
    text = " ".join(Doc(html_text).text)
    assert "No task executions were recorded for this run." in text
    assert "—" in text  # pass rate has no value
    assert "By agent type" not in text


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    text = " ".join(Doc(render_report(tmp_path / "run")).text)
    assert "No run data found in this folder" in text
    assert "unknown model" in text


def test_corrupt_and_odd_files(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    (run / "traces.json").write_text('[{"trace_id": "x", "spans": [', "utf-8")
    (run / "metrics_rows.json").write_text('{"not": "a list"}', "utf-8")
    html_text = render_report(run)
    text = " ".join(Doc(html_text).text)
    assert "traces.json could not be read (JSONDecodeError)" in text
    assert "metrics_rows.json does not hold a JSON list; ignored" in text
    assert html_text.count('<tr class="') == 4  # the results still render


def test_sparse_rows_and_unmatched_traces(tmp_path: Path) -> None:
    """Rows with only a task id, spans without parents or times, and a trace with no row."""
    sparse = [{"task_id": "bare"}]
    orphan = {
        "trace_id": "f" * 32,
        "test_ids": ["lost"],
        "spans": [
            {"span_id": "1", "parent_span_id": "2", "name": "loop-a", "start_time": T0, "end_time": T0 + 10**6},
            {"span_id": "2", "parent_span_id": "1", "name": "loop-b", "start_time": T0, "end_time": T0 + 2 * 10**6},
            {"span_id": "3", "name": "no-times"},
            "not a span",
        ],
    }
    run = write_run(tmp_path / "run", rows=sparse, traces=[orphan], metric_rows=[{"gpu_id": "0"}], metadata={})
    html_text = render_report(run)
    text = " ".join(Doc(html_text).text)
    assert "bare" in text and "lost" in text
    assert "loop-a" in text and "loop-b" in text and "no-times" in text
    assert "metadata.json is missing or empty" in text
    assert not chart_svgs(html_text)  # a metric row without a timestamp is no sample


def test_span_cap_per_trace_and_per_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = demo_rows()[:2]
    traces = [make_trace(rows[0], extra_spans=495), make_trace(rows[1])]
    run = write_run(tmp_path / "run", rows=rows, traces=traces)
    html_text = render_report(run)
    assert html_text.count('class="wf-row') == report.MAX_SPANS_PER_TRACE + 5
    assert "Showing the first 200 of 500 spans" in html_text
    monkeypatch.setattr(report, "MAX_SPANS_TOTAL", 150)
    html_text = render_report(run)
    assert html_text.count('class="wf-row') == 150
    assert "Waterfall left out to keep the report small (5 spans; see traces.json)." in html_text


def test_size_scales_with_tasks(tmp_path: Path) -> None:
    rows = [make_row(i, f"task_{i}", "tool" if i % 2 else "code", i % 3 != 0, response="x" * 5000, prompt="p" * 5000) for i in range(600)]
    traces = [make_trace(r, extra_spans=60) for r in rows]
    run = write_run(tmp_path / "run", rows=rows, traces=traces, metric_rows=make_metric_rows(2, 3000))
    html_text = render_report(run)
    assert html_text.count('class="wf-row') == report.MAX_SPANS_TOTAL
    assert len(html_text.encode()) < 6_000_000, len(html_text)
    assert "x" * (report.TEXT_CAP + 1) not in html_text and "p" * 1001 not in html_text


# -- safety ------------------------------------------------------------------------------------
def test_untrusted_strings_are_inert(tmp_path: Path) -> None:
    row = make_row(
        0, XSS, success=False, prompt=XSS + ATTR_XSS, response=XSS, error=XSS, failure_reason=XSS, tools_used=[XSS], error_type=ATTR_XSS
    )
    row2 = make_row(1, ATTR_XSS, success=True, response="<img src=x onerror=alert(1)>", agent_type=XSS, difficulty=XSS)
    trace = make_trace(row, error=True)
    for span in trace["spans"]:
        span["name"] = XSS + ATTR_XSS
        span["attributes"]["input.value"] = XSS
        span["status"] = {"code": "ERROR", "description": XSS}
    metrics = make_metric_rows(1, 3)
    for m in metrics:
        m["gpu_name"] = XSS
        m["gpu_id"] = ATTR_XSS
    meta = make_metadata(1, model=XSS, provider=ATTR_XSS, dataset_used=XSS, run_id=ATTR_XSS)
    meta["gpu_metrics"]["warning"] = XSS
    meta["telemetry"]["warnings"] = [XSS]
    meta["versions"] = {XSS: ATTR_XSS}
    run = write_run(tmp_path / "run", rows=[row, row2], traces=[trace, make_trace(row2)], metric_rows=metrics, metadata=meta)
    html_text = render_report(run)
    assert XSS not in html_text and "<img" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    doc = Doc(html_text)
    assert len(doc.scripts) == 1 and doc.scripts[0] == report.JS
    for tag, attrs in doc.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert attrs.get("x") != "", (tag, attrs)  # the planted x="" never became an attribute
    assert "alert(1)" in " ".join(doc.text)  # shown as text


def test_no_external_references(tmp_path: Path) -> None:
    row = make_row(0, "links", response="see https://example.com/a.png and http://evil.test/x.js")
    run = write_run(tmp_path / "run", rows=[row])
    html_text = render_report(run)
    assert external_refs(html_text) == []
    assert "https://example.com/a.png" in " ".join(Doc(html_text).text)  # only as text
    csp = Doc(html_text).find("meta", http_equiv="Content-Security-Policy")
    assert csp and "default-src 'none'" in (csp[0]["content"] or "")
    demo = render_report(write_run(tmp_path / "demo"))
    assert not re.search(r"https?://", demo), re.search(r".{40}https?://.{40}", demo)
    assert "<link rel=stylesheet" not in demo and "<svg xmlns" not in demo


def test_lone_surrogates_and_control_characters(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run)
    rows = json.loads((run / "results.json").read_text("utf-8"))
    rows[0]["response"] = "\ud800 broken \x00 nul"
    (run / "results.json").write_text(json.dumps(rows), "utf-8")
    path = write_report(run)
    assert "broken" in path.read_text("utf-8")


# -- numbers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [
        (fmt_int, 18647, "18,647"),
        (fmt_int, None, "—"),
        (fmt_int, "nan", "—"),
        (fmt_sig, 0.015736514861541057, "0.0157"),
        (fmt_sig, 1234567.8, "1,234,568"),
        (fmt_sig, 2.0, "2"),
        (fmt_ms, 45.833, "45.8 ms"),
        (fmt_ms, 0.0495, "0.0495 ms"),
        (fmt_ms, 1234, "1.23 s"),
        (fmt_ms, 59_600, "59.6 s"),
        (fmt_ms, 125_000, "2 min 05 s"),
        (fmt_ms, 3_599_800, "1 h 00 min"),
        (fmt_ms, 7_530_000, "2 h 06 min"),
        (fmt_energy, 119.26621789799538, "119.3 J"),
        (fmt_energy, 12_345.0, "12.35 kJ"),
        (fmt_energy, 3.6e9, "3,600 MJ"),
        (fmt_co2, 0.015736514861541057, "0.0157 g"),
        (fmt_co2, 2500.0, "2.5 kg"),
        (fmt_usd, 0.0, "$0.00"),
        (fmt_usd, 1.234, "$1.23"),
        (fmt_usd, 3.975540596599846e-06, "$0.000004"),
        (fmt_pct, 50.0, "50%"),
        (fmt_pct, 200 / 3, "66.7%"),
        (fmt_pct, None, "—"),
    ],
)
def test_number_formats(fn: Any, value: Any, expected: str) -> None:
    assert fn(value) == expected


def test_numbers_in_the_table(tmp_path: Path) -> None:
    text = " ".join(Doc(render_report(write_run(tmp_path / "run"))).text)
    for expected in ("45.8 ms", "1,265", "21.4 J", "4 s", "active 131 ms", "start-up 4 s", "0.0331 Wh", "475 gCO₂e/kWh"):
        assert expected in text, expected


def test_nice_ticks() -> None:
    assert report.nice_ticks(0, 100, 4) == [0, 25, 50, 75, 100]
    assert report.nice_ticks(52.2, 58.5, 4) == [54, 56, 58]
    assert report._tick_label(67.5, 2.5) == "67.5" and report._tick_label(70, 2.5) == "70.0"
    assert report._tick_label(0.05, 0.05) == "0.05"


# -- writing -----------------------------------------------------------------------------------
def test_write_report_is_atomic_and_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_run(tmp_path / "run")
    path = write_report(run)
    assert path == run / "report.html"
    first = path.read_text("utf-8")
    assert first == render_report(run)
    assert write_report(run).read_text("utf-8") == first  # same input, same bytes
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []

    def boom(run_dir: Path, folder: object = None) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(report, "render_report", boom)
    with pytest.raises(RuntimeError):
        report.write_report(run)
    assert path.read_text("utf-8") == first
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run")
    assert report.main([str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert report.main([]) == 2
    assert report.main([str(tmp_path / "missing")]) == 2
