"""`--otlp-forward`: everything the runner's collector receives is teed to another OpenTelemetry
collector: a second OTLP receiver, and rotel (a real collector, PyPI `rotel`) that forwards it on
to a test receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chat_servers import FakeOpenAIServer
from tests.fakes.otlp_receiver import OtlpReceiver, attributes_dict
from tests.fakes.runner_fixtures import read_json, run_main, runner_env_fixture, standard_script  # noqa: F401 - fixture
from tests.fakes.telemetry_procs import RotelProcess, wait_until


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def traced_run(tmp_path: Path, forward_url: str, extra: list[str]) -> tuple[Any, list[dict[str, Any]]]:
    with FakeOpenAIServer(standard_script()) as server:
        run = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,
                "--limit",
                "1",
                "--enable-otel",
                "--quiet",
                "--otlp-forward",
                forward_url,
                *extra,
            ],  # type: ignore[attr-defined]
            tmp_path / "out",
        )
    assert run.rc == 0, run.stdout + run.stderr
    return run, read_json(run.run_dir / "traces.json")


def span_ids(traces: list[dict[str, Any]]) -> set[str]:
    return {s["span_id"] for d in traces for s in d["spans"]}


def received_spans(receiver: OtlpReceiver, run_id: str) -> dict[str, str]:
    """span id -> name, of the spans whose resource has run.id == run_id."""
    out = {}
    for request in receiver.trace_requests():
        for rs in request.resource_spans:
            if attributes_dict(rs.resource.attributes).get("run.id") != run_id:
                continue
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out[span.span_id.hex()] = span.name
    return out


def test_forward_to_a_second_receiver_gets_the_same_spans_and_metrics(
    tmp_path: Path, runner_env: None, monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver
) -> None:
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_BACKEND", "simulated:2")
    run, traces = traced_run(tmp_path, receiver.url, ["--enable-gpu-metrics"])
    run_id = run.metadata["run_id"]
    expected = span_ids(traces)
    assert len(traces) == 2 and expected
    forwarded = wait_until(lambda: (got := received_spans(receiver, run_id)) and set(got) >= expected and got, 10, what="spans")
    assert set(forwarded) - expected == {s for s, name in forwarded.items() if name == "smoltrace.run"}, "the same spans, plus the run span"
    assert sorted(forwarded.values()).count("smoltrace.run") == 1
    report = run.metadata["telemetry"]
    assert report["collector"]["forward"] == receiver.url
    assert report["forwarded"]["failed"] == 0 and report["forwarded"]["dropped"] == 0
    assert report["forwarded"]["sent"] == len(receiver.trace_requests()) + len(receiver.metrics_requests())
    # the exporter's GPU metrics went through the same tee
    names = receiver.metric_names()
    assert {"gen_ai.gpu.utilization", "gen_ai.gpu.energy", "gen_ai.co2.emissions"} <= names
    assert {a.get("run.id") for a in receiver.resource_attributes()} == {run_id}
    local_points = sum(
        len(m.get("gauge", m.get("sum", {})).get("dataPoints", []))
        for rm in read_json(run.run_dir / "metrics.json")["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    )
    assert len(receiver.points()) == local_points


def test_forward_through_rotel(tmp_path: Path, runner_env: None, receiver: OtlpReceiver) -> None:
    rotel = RotelProcess(receiver.endpoint, tmp_path)
    try:
        run, traces = traced_run(tmp_path, rotel.grpc_url, [])
        run_id = run.metadata["run_id"]
        expected = span_ids(traces)
        forwarded = wait_until(
            lambda: (got := received_spans(receiver, run_id)) and set(got) >= expected and got, 20, what="spans through rotel"
        )
        assert set(forwarded) - expected == {s for s, name in forwarded.items() if name == "smoltrace.run"}
        assert run.metadata["telemetry"]["forwarded"]["failed"] == 0
        # rotel re-encodes, the span content survives
        names = {span.name for span in receiver.spans()}
        assert {"test_evaluation", "ToolCallingAgent.run", "CodeAgent.run"} <= names
        assert rotel.terminate() == 0, rotel.output()
    finally:
        rotel.close()
