"""Running task executions: one at a time (`run_task`) and many in parallel (`Executor`).

- One thread per worker (`--parallel-workers`); the model object is shared (for transformers its
  generate() is serialised by a lock), each execution gets a fresh agent.
- Per-task timeout (`--task-timeout`): checked between agent steps and passed to the model client
  as its request timeout, so a reply that never ends is cut off too.
- Model-call retries with backoff live in models.with_retries; the attempts are counted here.
- One execution's failure never stops the run. Every finished execution is handed to `on_result`
  at once (the checkpoint line is written before the next one is reported).
- Stopping early (`shutdown.Shutdown`: Ctrl-C, SIGTERM, SIGHUP, an auth-error burst, a budget):
  pending executions are cancelled, running ones get the grace period, then their agents are
  interrupted at the next step; everything finished is kept.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .agents import AgentSettings, build_agent
from .models import classify_error, reset_call_stats
from .scoring import Observation, Score, score
from .shutdown import Shutdown
from .tasks import Task
from .tools import ToolCallLog

log = logging.getLogger(__name__)

INTERRUPT_WAIT_S = 5.0  # after the grace period: how long interrupted executions get to wind down


class TaskTimeout(TimeoutError):
    pass


class TaskInterrupted(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Execution:
    """One task run by one agent type."""

    task: Task
    agent_type: str
    index: int  # position in the run's plan (stable ordering of outputs)

    @property
    def uid(self) -> str:
        return f"{self.agent_type}:{self.task.id}"


@dataclass(slots=True)
class TaskResult:
    execution: Execution
    score: Score
    tools_used: list[str]
    steps: int
    response: str | None
    error: str | None
    error_type: str | None
    attempts: int
    retries: int
    started_at: str  # UTC ISO-8601
    finished_at: str
    duration_ms: float
    start_unix_ns: int
    end_unix_ns: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    trace_id: str | None = None  # W3C hex of the execution's trace (with --enable-otel)
    span_id: str | None = None  # its root span `test_evaluation`
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


EVALUATION_EVENT = "gen_ai.evaluation.result"  # OTel GenAI semantic conventions (development)
EVALUATION_NAME = "smoltrace.task_success"


def score_attributes(result: TaskResult) -> dict[str, Any]:
    """The outcome on the execution's root span, for any OTel backend that receives the trace."""
    return {"smoltrace.success": result.score.success, "smoltrace.failure_reason": result.score.reason[:500]}


def evaluation_event_attributes(result: TaskResult) -> dict[str, Any]:
    """Attributes of the `gen_ai.evaluation.result` event: name, score value (1 pass, 0 fail),
    label, explanation (why it failed) and `error.type` when the execution errored."""
    attrs: dict[str, Any] = {
        "gen_ai.evaluation.name": EVALUATION_NAME,
        "gen_ai.evaluation.score.value": 1.0 if result.score.success else 0.0,
        "gen_ai.evaluation.score.label": "pass" if result.score.success else "fail",
    }
    if result.score.reason:
        attrs["gen_ai.evaluation.explanation"] = result.score.reason[:500]
    if result.error_type:
        attrs["error.type"] = result.error_type
    return attrs


def _utc_iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def observe(agent: Any, agent_type: str, log_: ToolCallLog) -> tuple[list[str], bool, int, int, int]:
    """(tools_used, final_answer_called, steps, prompt_tokens, completion_tokens) from the agent."""
    from smolagents.memory import ActionStep, PlanningStep

    tools: list[str] = []
    final = False
    steps = prompt_tokens = completion_tokens = 0
    max_steps = getattr(agent, "max_steps", None)
    for step in agent.memory.steps:
        if isinstance(step, ActionStep | PlanningStep):
            # smolagents' forced answer after --max-steps is an extra ActionStep numbered max_steps + 1:
            # a model call (its tokens count), not a step of the budget
            forced = isinstance(step, ActionStep) and isinstance(max_steps, int) and (step.step_number or 0) > max_steps
            steps += 0 if forced else 1
            usage = getattr(step, "token_usage", None)
            if usage is not None:
                prompt_tokens += usage.input_tokens
                completion_tokens += usage.output_tokens
        if isinstance(step, ActionStep):
            if step.is_final_answer:
                final = True
            if agent_type == "tool":
                tools += [tc.name for tc in step.tool_calls or [] if tc.name != "final_answer"]
    if agent_type != "tool":
        tools = log_.calls
    return tools, final, steps, prompt_tokens, completion_tokens


def run_task(
    execution: Execution,
    model: Any,
    settings: AgentSettings,
    timeout_s: float | None = None,
    cancel: threading.Event | None = None,
    extra_tools_factory: Callable[[ToolCallLog], Sequence[Any]] | None = None,
    register_agent: Callable[[Any | None], None] | None = None,
) -> TaskResult:
    """Run one execution to its end; never raises for the task's own failures."""
    from smolagents.memory import FinalAnswerStep

    tool_log = ToolCallLog()
    stats = reset_call_stats()
    start_ns = time.time_ns()
    t0 = time.perf_counter()
    response: str | None = None
    error: str | None = None
    error_type: str | None = None
    agent = None
    try:
        extra = extra_tools_factory(tool_log) if extra_tools_factory else ()
        agent = build_agent(execution.agent_type, model, settings, tool_log, extra)
        if register_agent:
            register_agent(agent)
        deadline = t0 + timeout_s if timeout_s else None
        stats.deadline = deadline
        # Stopping early: interrupt the agent and let its stream end by itself. Leaving the loop
        # with an exception would close the generator mid-step, and smolagents yields in a
        # `finally`, which Python reports on stderr as "generator ignored GeneratorExit".
        stop: Exception | None = None
        try:
            for event in agent.run(execution.task.prompt, stream=True, reset=True):
                if isinstance(event, FinalAnswerStep) and stop is None:
                    response = None if event.output is None else str(event.output)
                if stop is None and cancel is not None and cancel.is_set():
                    stop = TaskInterrupted("run interrupted (Ctrl-C)")
                    agent.interrupt()
                elif stop is None and deadline is not None and time.perf_counter() > deadline:
                    stop = TaskTimeout(f"task exceeded --task-timeout {timeout_s:g} s")
                    agent.interrupt()
        except Exception:
            if stop is None:
                raise
        if stop is not None:
            raise stop
    except Exception as err:  # noqa: BLE001 - a task's failure is its result
        error = f"{type(err).__name__}: {err}"
        error_type = classify_error(err)
    finally:
        if register_agent:
            register_agent(None)
    duration_ms = (time.perf_counter() - t0) * 1000.0
    end_ns = time.time_ns()
    tools, final, steps, prompt_tokens, completion_tokens = (
        observe(agent, execution.agent_type, tool_log) if agent else ([], False, 0, 0, 0)
    )
    if error is None and not final:
        error_type = "max_steps"
    obs = Observation(tuple(tools), final, response, error)
    return TaskResult(
        execution=execution,
        score=score(execution.task, obs),
        tools_used=tools,
        steps=steps,
        response=response,
        error=error,
        error_type=error_type,
        attempts=stats.attempts,
        retries=stats.retries,
        started_at=_utc_iso(start_ns),
        finished_at=_utc_iso(end_ns),
        duration_ms=duration_ms,
        start_unix_ns=start_ns,
        end_unix_ns=end_ns,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


class Executor:
    """Runs executions on `workers` threads; reports each result through `on_result` as it lands."""

    def __init__(
        self,
        model: Any,
        settings: AgentSettings,
        workers: int = 1,
        timeout_s: float | None = None,
        extra_tools_factory: Callable[[ToolCallLog], Sequence[Any]] | None = None,
        tracing: Any | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self.extra_tools_factory = extra_tools_factory
        self.tracing = tracing  # telemetry.RunTracing, or None
        self.cancel = threading.Event()
        self._agents: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.interrupted = False

    def _register(self, agent: Any | None) -> None:
        with self._lock:
            if agent is None:
                self._agents.pop(threading.get_ident(), None)
            else:
                self._agents[threading.get_ident()] = agent

    def _one(self, execution: Execution) -> TaskResult:
        if self.tracing is None:
            return run_task(execution, self.model, self.settings, self.timeout_s, self.cancel, self.extra_tools_factory, self._register)
        return self.tracing.context().run(self._traced, execution)

    def _traced(self, execution: Execution) -> TaskResult:
        """The execution under its own trace: root span `test_evaluation`, outcome on it."""
        from .telemetry import hex_ids

        assert self.tracing is not None  # _one calls this only when traced
        task = execution.task
        attributes = {
            "test.id": task.id,
            "test.case_uid": execution.uid,
            "agent.type": execution.agent_type,
            "test.difficulty": task.difficulty,
            "prompt": task.prompt[:100],
        }
        with self.tracing.task_span(attributes) as span:
            result = run_task(execution, self.model, self.settings, self.timeout_s, self.cancel, self.extra_tools_factory, self._register)
            span.set_attributes(
                {
                    "test.success": result.score.success,
                    "tests.steps": result.steps,
                    "tests.tool_calls": len(result.tools_used),
                    "test.tools_used": list(result.tools_used),
                    "test.error_type": result.error_type or "",
                }
            )
            span.set_attributes(score_attributes(result))
            span.add_event(EVALUATION_EVENT, evaluation_event_attributes(result))
            if result.error:
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR, result.error[:200]))
        result.trace_id, result.span_id = hex_ids(span)
        return result

    def run(
        self, executions: Sequence[Execution], on_result: Callable[[TaskResult], None], shutdown: Shutdown | None = None
    ) -> list[TaskResult]:
        """Run the executions; when `shutdown` is requested (a signal, an auth-error burst, a
        budget) stop dispatching, give the running ones its grace period, then interrupt them.
        Interrupted executions are not reported (they run again on --resume)."""
        shutdown = shutdown or Shutdown(grace_s=0.0)
        results: list[TaskResult] = []
        if shutdown.requested.is_set():
            self.interrupted = True
            return results
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="smoltrace-task")
        queue = iter(executions)
        pending: set[Future[TaskResult]] = set()

        def dispatch() -> None:
            # Only as many as there are workers: the next execution starts from here, after the
            # results before it were reported, so a stop requested in on_result starts nothing new.
            while len(pending) < self.workers and not shutdown.requested.is_set():
                execution = next(queue, None)
                if execution is None:
                    return
                pending.add(pool.submit(self._one, execution))

        dispatch()
        grace_until: float | None = None
        give_up_at: float | None = None
        try:
            while pending:
                now = time.monotonic()
                if shutdown.requested.is_set() and grace_until is None:
                    self.interrupted = True
                    for future in pending:
                        future.cancel()  # not started yet (a worker is about to take it): never will be
                    pending = {f for f in pending if not f.cancelled()}
                    wait_all = shutdown.reason is not None and shutdown.reason.wait_for_running
                    grace_until = math.inf if wait_all else now + shutdown.grace_s
                if grace_until is not None and give_up_at is None and (now >= grace_until or shutdown.hurry.is_set()):
                    self._interrupt_running()
                    give_up_at = now + INTERRUPT_WAIT_S
                if give_up_at is not None and now >= give_up_at:
                    log.warning("%d execution(s) did not stop within %.0f s; their results are dropped", len(pending), INTERRUPT_WAIT_S)
                    break
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.cancelled():
                        continue
                    result = future.result()
                    if self.cancel.is_set() and result.error_type == "interrupted":
                        continue  # cut short: it runs again on --resume
                    results.append(result)
                    on_result(result)
                dispatch()
            if shutdown.requested.is_set() and next(queue, None) is not None:
                self.interrupted = True  # stopped between two executions: the rest never started
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return results

    def _interrupt_running(self) -> None:
        self.cancel.set()
        with self._lock:
            for agent in self._agents.values():
                agent.interrupt()
