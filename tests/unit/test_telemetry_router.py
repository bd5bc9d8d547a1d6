"""The process-wide router (smoltrace.telemetry): library tracers bound once per process hand each
span to the provider of the run it belongs to, so two runs in one process never mix; RunTracing
gives each task a `test_evaluation` root linked to the run span, exported (redacted) over OTLP."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace

from smoltrace import telemetry
from smoltrace.collector import Collector
from smoltrace.telemetry import REDACTED, RoutingTracerProvider, RunTracing, hex_ids


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector("127.0.0.1:0").start()
    yield c
    c.stop(grace=0.2)


@pytest.fixture(autouse=True)
def no_run_active(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_fallback", None)


def fresh(fn, *args):
    """Run fn in a copy of an empty-run context (no leak of the run context into other tests)."""
    ctx = contextvars.copy_context()
    ctx.run(telemetry._current.set, None)
    return ctx.run(fn, *args)


def test_no_active_run_means_no_recording() -> None:
    def body() -> None:
        tracer = RoutingTracerProvider().get_tracer("lib")
        span = tracer.start_span("x")
        assert not span.is_recording()
        with tracer.start_as_current_span("y") as current:
            assert not current.is_recording()

    fresh(body)


def test_two_runs_in_one_process_never_mix(collector: Collector) -> None:
    library = RoutingTracerProvider().get_tracer("some.instrumented.library")  # bound once, like an instrumentor
    ids: dict[str, list[tuple[str, str]]] = {"run-a": [], "run-b": []}
    barrier = threading.Barrier(2, timeout=10)

    def task(tracing: RunTracing, n: int) -> None:
        with tracing.task_span({"test.id": f"t{n}", "test.case_uid": f"tool:t{n}", "agent.type": "tool"}) as root:
            barrier.wait()  # both runs' tasks are open at the same time
            with library.start_as_current_span("agent.run"):
                library.start_span("model.call").end()
        ids[tracing.run_id].append(hex_ids(root))

    def body() -> tuple[RunTracing, RunTracing]:
        a = RunTracing("run-a", collector.endpoint)
        a.activate({"run.id": "run-a"})
        b = RunTracing("run-b", collector.endpoint)
        b.activate({"run.id": "run-b"})
        threads = [
            threading.Thread(target=a.context().run, args=(task, a, 1)),
            threading.Thread(target=b.context().run, args=(task, b, 2)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert a.close(5) and b.close(5)
        return a, b

    fresh(body)
    docs = {run: collector.run_telemetry(run).traces for run in ("run-a", "run-b")}
    for run, run_docs in docs.items():
        assert len(run_docs) == 1, run_docs
        (doc,) = run_docs
        assert [(doc["trace_id"], doc["root_span_id"])] == ids[run]
        assert [s["name"] for s in doc["spans"]] == ["test_evaluation", "agent.run", "model.call"]
        assert {s["resource"]["attributes"]["run.id"] for s in doc["spans"]} == {run}
        assert doc["spans"][0]["links"], "the task root links to the run span"
    assert not {d["trace_id"] for d in docs["run-a"]} & {d["trace_id"] for d in docs["run-b"]}
    # the run spans arrived too (one per run) but make no task document
    for run in ("run-a", "run-b"):
        assert collector.run_telemetry(run).spans == 4


def test_threads_the_run_did_not_start_go_to_the_run_started_last(collector: Collector) -> None:
    library = RoutingTracerProvider().get_tracer("lib")

    def body() -> None:
        a = RunTracing("run-a", collector.endpoint)
        a.activate()
        b = RunTracing("run-b", collector.endpoint)
        b.activate()
        stray = threading.Thread(target=lambda: library.start_span("stray").end())  # a fresh, empty context
        stray.start()
        stray.join()
        a.close(5)
        b.close(5)
        assert telemetry._fallback is None, "closing the last run clears the fallback"

    fresh(body)
    names_b = [s["name"] for s in _spans(collector, "run-b")]
    assert "stray" in names_b and "stray" not in [s["name"] for s in _spans(collector, "run-a")]


def test_a_second_run_after_the_first_closed_gets_its_own_provider(collector: Collector) -> None:
    library = RoutingTracerProvider().get_tracer("lib")

    def one(run_id: str) -> None:
        tracing = RunTracing(run_id, collector.endpoint)
        tracing.activate()

        def work() -> None:
            with tracing.task_span({"test.id": run_id}):
                library.start_span("inner").end()

        tracing.context().run(work)
        tracing.close(5)

    fresh(one, "first")
    fresh(one, "second")
    for run in ("first", "second"):
        (doc,) = collector.run_telemetry(run).traces
        assert doc["test_ids"] == [run]
        assert [s["name"] for s in doc["spans"]] == ["test_evaluation", "inner"]
        assert {s["resource"]["attributes"]["run.id"] for s in doc["spans"]} == {run}


def test_spans_are_redacted_before_they_reach_the_collector(collector: Collector) -> None:
    secret = "zqUNITsecret31337"

    def body() -> None:
        tracing = RunTracing("run-r", collector.endpoint, secrets=[secret])
        tracing.activate()
        with tracing.task_span({"test.id": "t", "prompt": f"use {secret} please", "x": "z" * 20_000}):
            pass
        tracing.close(5)

    fresh(body)
    raw = collector.store.payloads("run-r", "traces")
    assert raw and not any(secret.encode() in p for p in raw)
    (doc,) = collector.run_telemetry("run-r").traces
    attrs = doc["spans"][0]["attributes"]
    assert attrs["prompt"] == f"use {REDACTED} please"
    assert attrs["x"].endswith("...[TRUNCATED]") and len(attrs["x"]) < 8300


def test_resource_has_the_run_id_and_the_given_attributes(collector: Collector) -> None:
    def body() -> None:
        tracing = RunTracing("run-res", collector.endpoint, {"smoltrace.model": "m", "run.id": "not-this"})
        tracing.activate()
        with tracing.task_span({"test.id": "t"}) as span:
            assert span.get_span_context().trace_flags.sampled
            assert trace.get_current_span() is span
        tracing.close(5)

    fresh(body)
    resource = _spans(collector, "run-res")[0]["resource"]["attributes"]
    assert resource["run.id"] == "run-res" and resource["smoltrace.model"] == "m" and resource["service.name"] == "smoltrace-eval"


def test_close_does_not_hang_on_an_unreachable_collector() -> None:
    import time

    from tests.fakes.runner_fixtures import closed_port

    def body() -> bool:
        tracing = RunTracing("run-dead", f"127.0.0.1:{closed_port()}", export_timeout_s=0.5)
        tracing.activate()
        with tracing.task_span({"test.id": "t"}):
            pass
        started = time.monotonic()
        tracing.close(2)
        return time.monotonic() - started < 4

    assert fresh(body), "closing must not hang on a dead collector"


def _spans(collector: Collector, run_id: str) -> list[dict]:
    from smoltrace.collector.documents import spans_from_requests

    return spans_from_requests(collector.store.payloads(run_id, "traces"))
