"""Scores on the trace: each execution's root span carries smoltrace.success and
smoltrace.failure_reason and a `gen_ai.evaluation.result` event (OTel GenAI semantic conventions:
gen_ai.evaluation.name required, score.value / score.label, explanation, error.type), checked on
real OpenTelemetry SDK spans exported in memory."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from smoltrace.executor import EVALUATION_EVENT, Execution, TaskResult, evaluation_event_attributes, score_attributes
from smoltrace.scoring import Score
from smoltrace.tasks import Task


def result(success: bool, reason: str = "", error_type: str | None = None) -> TaskResult:
    task = Task("t1", "What is 2+2?", "easy", "tool", expected_answer=4)
    return TaskResult(
        execution=Execution(task, "tool", 0),
        score=Score(True, True, success, success, success, reason),
        tools_used=[],
        steps=1,
        response="4" if success else None,
        error=None if error_type is None else "RateLimitError: 429",
        error_type=error_type,
        attempts=1,
        retries=0,
        started_at="2026-12-04T10:00:00.000Z",
        finished_at="2026-12-04T10:00:01.000Z",
        duration_ms=1000.0,
        start_unix_ns=0,
        end_unix_ns=10**9,
    )


def export(r: TaskResult) -> object:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("test_evaluation") as span:
        span.set_attributes(score_attributes(r))
        span.add_event(EVALUATION_EVENT, evaluation_event_attributes(r))
    (finished,) = exporter.get_finished_spans()
    return finished


def test_a_pass_on_the_root_span() -> None:
    span = export(result(True))
    assert span.attributes["smoltrace.success"] is True and span.attributes["smoltrace.failure_reason"] == ""
    (event,) = span.events
    assert event.name == "gen_ai.evaluation.result"
    assert dict(event.attributes) == {
        "gen_ai.evaluation.name": "smoltrace.task_success",
        "gen_ai.evaluation.score.value": 1.0,
        "gen_ai.evaluation.score.label": "pass",
    }


def test_a_failure_says_why() -> None:
    reason = "no final answer within the step budget; " + "x" * 1000
    span = export(result(False, reason, "rate_limit"))
    assert span.attributes["smoltrace.success"] is False
    assert span.attributes["smoltrace.failure_reason"] == reason[:500]
    attrs = dict(span.events[0].attributes)
    assert attrs["gen_ai.evaluation.score.value"] == 0.0 and attrs["gen_ai.evaluation.score.label"] == "fail"
    assert attrs["gen_ai.evaluation.explanation"] == reason[:500]
    assert attrs["error.type"] == "rate_limit"
